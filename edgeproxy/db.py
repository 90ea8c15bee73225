"""The one async door to `storage`: each call runs in a worker thread under a dedicated limiter.

The limiter is sized to the connection pool (DESIGN.md: trio's default limiter is shared with DNS lookups,
and a slow database on it stalled new upstream connects). Storage errors become ProxyErrors here, so
handlers render them like any other error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

import trio

from edgeproxy.errors import ConflictError, InvalidRequestError, NotFoundError, ServiceUnavailableError
from storage import Conflict, NotFound, Storage, StorageError, StorageUnavailable

T = TypeVar("T")
log = logging.getLogger("edgeproxy.db")


def proxy_error_for(error: StorageError) -> Exception:
    if isinstance(error, StorageUnavailable):
        return ServiceUnavailableError(f"the database is unavailable; try again shortly ({error})")
    if isinstance(error, NotFound):
        return NotFoundError(str(error))
    if isinstance(error, Conflict):
        return ConflictError(str(error), param=error.field)
    return ServiceUnavailableError(f"database error: {error}")


class Db:
    def __init__(self, storage: Storage, pool_size: int) -> None:
        self.storage = storage
        self.limiter = trio.CapacityLimiter(pool_size)

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a sync storage call in a thread; storage errors are raised as ProxyErrors."""
        try:
            return await trio.to_thread.run_sync(partial(fn, *args, **kwargs), limiter=self.limiter)
        except StorageError as error:
            raise proxy_error_for(error) from error
        except ValueError as error:  # storage's own validation of field values
            raise InvalidRequestError(str(error)) from error
