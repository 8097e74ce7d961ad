"""Many processes opening a brand-new database at once: every one succeeds, the schema is made once.

Real Postgres (a new database per round) and real SQLite (a new file per round); the processes are
forked and released together by a barrier, so their migrations really overlap.
"""

from __future__ import annotations

import multiprocessing
import traceback
import uuid
from pathlib import Path

import alembic.command  # noqa: F401 - imported before the fork: children start migrating at once
import pytest
from sqlalchemy import create_engine, text

from harness.store import Store
from harness.store.revision import SCHEMA_HEAD
from tests.conftest import PG_ADMIN_URL

PROCESSES = 8
ROUNDS = 3


def _open(url: str, barrier, results) -> None:  # noqa: ANN001 - multiprocessing proxies
    try:
        barrier.wait(timeout=60)
        store = Store.open(url)
        results.put(("ok", store.current_revision()))
        store.dispose()
    except BaseException:  # noqa: BLE001 - reported to the parent, which fails the test
        results.put(("error", traceback.format_exc()))


def _race(url: str) -> list[tuple[str, str]]:
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(PROCESSES), ctx.Queue()
    procs = [ctx.Process(target=_open, args=(url, barrier, results)) for _ in range(PROCESSES)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    return outcomes


def _check(url: str) -> None:
    outcomes = _race(url)
    errors = [detail for status, detail in outcomes if status != "ok"]
    assert not errors, errors[0]
    assert [detail for _, detail in outcomes] == [SCHEMA_HEAD] * PROCESSES
    engine = create_engine(url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
        assert conn.execute(text("SELECT count(*) FROM runs")).scalar() == 0
    engine.dispose()


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_eight_processes_open_a_new_postgres_database_at_once(round_: int) -> None:
    name = f"harness_race_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))  # identifier made here, not user input
    try:
        _check(PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}")
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_eight_processes_open_a_new_sqlite_file_at_once(round_: int, tmp_path: Path) -> None:
    _check(f"sqlite:///{tmp_path / 'new' / 'results.db'}")
