"""Seeding helpers for the rollup tests: runs written through the product's writers (SQLAlchemy writer,
the DBAPI fast writer, or `harness ingest` of a bundle), never rows inserted by hand."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select, text

from harness.bundle import BundleWriter, Record, ResultRecord, RunEnd, RunRecord
from harness.store import Store
from harness.store.schema import Run
from harness.store.writer import write_records


def run_records(uuid: str, day: int, results: dict[str, str | list[str]], *, status: str = "completed",
                branch: str = "main", group: str = "cpu", model: str = "llama", hour: int = 3,
                models: str | None = None) -> list[Record]:
    """A run started on 2026-11-<day> at `hour`; a list of outcomes means attempts 1, 2, ..."""
    records: list[Record] = [RunRecord(uuid=uuid, repo="/r", branch=branch, commit_sha=f"{day:02d}{hour:02d}" * 10,
                                       runner_group=group, suites="slow", models=models,
                                       started_at=f"2026-11-{day:02d}T{hour:02d}:00:00+00:00")]
    for nodeid, outcome in results.items():
        outcomes = [outcome] if isinstance(outcome, str) else outcome
        for attempt, o in enumerate(outcomes, start=1):
            records.append(ResultRecord(run=uuid, nodeid=nodeid, outcome=o, attempt=attempt, model=model,
                                        suite="slow", duration_s=float(attempt), device="cpu",
                                        message=None if o == "passed" else f"{o} here"))
    records.append(RunEnd(run=uuid, status=status, finished_at=f"2026-11-{day:02d}T{hour:02d}:30:00+00:00"))
    return records


def write_run(store: Store, *args: object, **kwargs: object) -> int:
    records = run_records(*args, **kwargs)  # type: ignore[arg-type]
    write_records(store, records)
    with store.session() as s:
        return s.scalars(select(Run.id).where(Run.uuid == records[0].uuid)).one()


def write_bundle(path: Path, records: list[Record]) -> Path:
    with BundleWriter(path) as w:
        for r in records:
            w.write(r)
    return path


def table(store: Store, sql: str, **params: object) -> list[tuple]:
    with store.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql), params)]


def rollups_settled(url: str, timeout_s: float = 30.0) -> None:
    """Wait until no run's rollups are owed (harness/store/pending.py): a plain pytest session's sidecar
    refreshes them in a detached child right after the session says "stored"."""
    import time

    from sqlalchemy import create_engine

    from harness.store import pending

    engine = create_engine(url)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            with engine.connect() as conn:
                owed = pending.owed(conn)
            if not owed:
                return
            assert time.monotonic() < deadline, f"rollups still owed after {timeout_s}s: {owed}"
            time.sleep(0.05)
    finally:
        engine.dispose()
