"""Managing keys, users and teams: sync functions shared by the HTTP API and the CLI.

Both doors call the same functions so a field is validated, defaulted and stored one way only. The API runs
them in a worker thread (`Gateway.db.run`), the CLI calls them directly on a `Storage` it opened itself.
They raise `edgeproxy.errors.ProxyError`s for bad input and let `storage` errors through; each door maps
those to its own output (an HTTP status, an exit code).
"""
