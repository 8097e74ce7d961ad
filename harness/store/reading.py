"""A read connection that starts fast: DBAPI on a current store, no SQLAlchemy import.

Commands a maintainer runs by hand or on every CI job (`harness new-failures`, `notify slack`) spend
most of their wall time importing SQLAlchemy and mapping the entities, not reading. When the store is
already at `SCHEMA_HEAD` they read through a plain DBAPI connection (psycopg2 / sqlite3) with
`rollups.Sql` (positional, bound parameters). Anything else (a URL the fast path does not take, an empty
or older store, a database that refuses) goes through `Store.open`: the store is migrated, and a refusal
becomes its one-line `StoreError`, as on every other path.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from harness.store import fastpath


@contextmanager
def read_connection(url: str) -> Iterator[Any]:
    """A DBAPI connection to the store at `url` (closed on exit), migrated to the head first if needed."""
    conn = None
    try:
        got = fastpath.connect(url)
        conn = got[0] if got else None
    except Exception:  # noqa: BLE001 - Store.open below says what is wrong with the URL or server, in one line
        conn = None
    if conn is not None and fastpath.at_head(conn):
        try:
            yield conn
        finally:
            conn.close()
        return
    if conn is not None:
        conn.close()
    from harness.store.db import Store

    store = Store.open(url)
    raw = store.engine.raw_connection()
    try:
        yield raw.driver_connection
    finally:
        raw.close()
        store.dispose()
