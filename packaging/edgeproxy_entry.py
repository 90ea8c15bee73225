"""PyInstaller's entry script for the one-file `edgeproxy` executable (see edgeproxy.spec).

Named so that it shadows nothing: PyInstaller puts this folder on sys.path while it analyses the
program, so a file called `edgeproxy.py` here would hide the real package.
"""

import sys


def _main() -> None:
    if sys.argv[1:] == ["--version"]:
        # Fast path: importing edgeproxy.cli loads the whole application (Quart, SQLAlchemy, the API
        # modules: about 1 s of CPU), which `--version`, the usual "is the upgrade in place" check
        # of install scripts, does not need. Same text as click's version_option in edgeproxy.cli.
        from edgeproxy import __version__

        print(f"edgeproxy {__version__}")
        return
    # main() calls multiprocessing.freeze_support() first, which `run --workers N` needs when frozen.
    from edgeproxy.cli import main

    main()


if __name__ == "__main__":
    _main()
