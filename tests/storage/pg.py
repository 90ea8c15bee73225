"""A throwaway PostgreSQL schema per test, for any suite that needs the real server.

Usage::

    from tests.storage.pg import temporary_pg_url

    with temporary_pg_url() as url:   # postgresql://...?options=-csearch_path%3Dtest_<random>
        ...

The server defaults to postgres@127.0.0.1:5432/test (trust auth); EDGEPROXY_TEST_PG_URL overrides it.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql

__all__ = ["PG_BASE_URL", "temporary_pg_url"]

PG_BASE_URL = os.environ.get("EDGEPROXY_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


@contextmanager
def temporary_pg_url(base_url: str = PG_BASE_URL) -> Iterator[str]:
    """Create a fresh schema, yield a URL whose search_path points at it, then drop it with everything in it.

    Close every connection to the URL (Storage.close / Engine.dispose) before leaving the block, or the
    DROP waits for their locks (bounded by a lock timeout, then it fails loudly).
    """
    schema = f"test_{secrets.token_hex(6)}"
    with psycopg.connect(base_url, autocommit=True, connect_timeout=5) as connection:
        connection.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    separator = "&" if "?" in base_url else "?"
    try:
        yield f"{base_url}{separator}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(base_url, autocommit=True, connect_timeout=5) as connection:
            connection.execute("SET lock_timeout = '30s'")
            connection.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
