"""edgeproxy: a self-hosted, LiteLLM-compatible LLM gateway in one executable."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("edgeproxy")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
