"""A throw-away Postgres database for one benchmark run, dropped afterwards whatever happens."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, text


@contextmanager
def scratch_database(admin_url: str, prefix: str) -> Iterator[str]:
    """Create `<prefix>_<epoch seconds>` on the server of `admin_url`; yield its URL; drop it (FORCE)."""
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"{prefix}_{int(time.time())}"  # a name made here, never user input
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin_url.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
