"""Shared fixtures: real databases (a fresh Postgres database per test run and xdist worker, and
SQLite files), temporary git repositories, and the CLI runner."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from harness.store import Store

PG_ADMIN_URL = os.environ.get("HARNESS_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")


def _pg_admin():
    return create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")


@pytest.fixture(scope="session")
def pg_database(worker_id: str) -> Iterator[str]:
    """A Postgres database of this test run and xdist worker alone, dropped at the end."""
    name = f"harness_test_{uuid.uuid4().hex[:8]}_{worker_id}"
    admin = _pg_admin()
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))  # identifier made here, not user input
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"PostgreSQL at {PG_ADMIN_URL} is required for the tests: {exc}")
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _reset_pg(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture(params=["postgresql", "sqlite"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database URL, once for Postgres and once for SQLite (same codebase, both backends)."""
    if request.param == "postgresql":
        url = request.getfixturevalue("pg_database")
        _reset_pg(url)
        yield url
    else:
        yield f"sqlite:///{tmp_path / 'results.db'}"


@pytest.fixture
def pg_url(pg_database: str) -> str:
    """An empty Postgres database URL (for Postgres-only behaviour such as jsonb)."""
    _reset_pg(pg_database)
    return pg_database


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    """A migrated store on each backend."""
    s = Store.open(db_url)
    yield s
    s.dispose()
