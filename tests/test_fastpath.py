"""The DBAPI fast writer agrees with the entities and with the SQLAlchemy writer, on both backends."""

from __future__ import annotations

from sqlalchemy import select

from harness.bundle import ResultRecord, RunEnd, RunRecord
from harness.store import Store
from harness.store.fastpath import RESULT_COLUMNS, RUN_COLUMNS, FastWriter, connect
from harness.store.schema import Run, TestResult
from harness.store.writer import write_records


def test_column_lists_match_the_entities() -> None:
    # heartbeat_at is written by the live `harness run` only (harness/store/lifecycle.py), never from a bundle
    assert set(RUN_COLUMNS) == {c.name for c in Run.__table__.columns} - {"id", "heartbeat_at"}
    assert set(RESULT_COLUMNS) == {c.name for c in TestResult.__table__.columns} - {"id"}


def _records(uuid: str) -> list:
    return [
        ResultRecord(run=uuid, nodeid="t.py::test_a[it's; DROP TABLE runs]", outcome="passed", duration_s=0.25),
        ResultRecord(run=uuid, nodeid="t.py::test_ünï", outcome="failed", message="boom", worker="gw0"),
        RunRecord(uuid=uuid, repo="/r", branch="main", commit_sha="b" * 40, gpu_count=2,
                  started_at="2026-11-26T01:00:00+00:00"),
        RunEnd(run=uuid, status="completed", finished_at="2026-11-26T01:01:00+00:00"),
    ]


def _snapshot(store: Store, uuid: str) -> tuple:
    with store.session() as s:
        run = s.scalars(select(Run).where(Run.uuid == uuid)).one()
        results = sorted((r.nodeid, r.nodeid_hash, r.outcome, r.duration_s, r.message, r.worker)
                         for r in s.scalars(select(TestResult).where(TestResult.run_id == run.id)))
        return (run.repo, run.branch, run.commit_sha, run.gpu_count, run.status, run.started_at,
                run.finished_at), results


def test_fast_and_full_writers_store_the_same_rows(store: Store, db_url: str) -> None:
    writer = FastWriter(*connect(db_url))
    assert writer.at_head()
    for _ in range(2):  # idempotent
        assert writer.write(_records("fast")) == []
    writer.close()
    write_records(store, _records("full"))
    fast, full = _snapshot(store, "fast"), _snapshot(store, "full")
    assert fast == full
    assert fast[0][4] == "completed" and len(fast[1]) == 2


def test_fast_writer_declines_an_unmigrated_database(tmp_path) -> None:
    writer = FastWriter(*connect(f"sqlite:///{tmp_path / 'empty.db'}"))
    assert not writer.at_head()
    writer.close()


def test_batches_prepared_apart_and_joined_equal_one_batch(store: Store, db_url: str) -> None:
    """The sidecar prepares lines as they come and writes them together (harness/store/follow.py):
    joined batches hold the same rows, in test-key order per run, as one batch of all the records, and
    write the same rows."""
    writer = FastWriter(*connect(db_url))
    records = [ResultRecord(run=f"join{i % 2}", nodeid=f"t.py::test_{i}", outcome="passed", duration_s=i / 10,
                            attempt=1 + i % 3) for i in range(60)] + [RunEnd(run="join0", status="completed", finished_at="2026-11-26T01:01:00+00:00")]
    whole = writer.prepare(records)
    joined = writer.prepare(records[:7])
    for start in range(7, len(records), 11):
        joined.extend(writer.prepare(records[start:start + 11]))
    assert (joined.rows, list(joined.uuids), joined.count, joined.ends) == \
           (whole.rows, list(whole.uuids), whole.count, whole.ends)
    assert not joined.empty() and writer.prepare([]).empty()
    assert writer.write_prepared(joined) == []
    writer.close()
    with store.session() as s:
        stored = s.scalars(select(TestResult.nodeid).join(Run).where(Run.uuid.in_(["join0", "join1"]))).all()
    assert sorted(stored) == sorted(r.nodeid for r in records[:60])


def test_a_repeated_line_in_a_later_batch_is_stored_once_without_sqlalchemy(store: Store, db_url: str) -> None:
    """The sidecar's process never imports SQLAlchemy: a row it already wrote, met again in a later batch
    of its own run (a bundle line repeated), falls back from the direct COPY to insert-or-ignore there too."""
    import subprocess
    import sys

    script = (
        "import sys\nfrom harness.bundle import ResultRecord\nfrom harness.store.fastpath import FastWriter, connect\n"
        "w = FastWriter(*connect(sys.argv[1]))\nr = ResultRecord(run='dup', nodeid='t.py::test_a', outcome='passed')\n"
        "w.write([r]); w.write([r, ResultRecord(run='dup', nodeid='t.py::test_b', outcome='passed')])\n"
        "assert 'sqlalchemy' not in sys.modules\nprint(w.results_added)\n")
    proc = subprocess.run([sys.executable, "-c", script, db_url], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["2"]
    with store.session() as s:
        assert sorted(s.scalars(select(TestResult.nodeid).join(Run).where(Run.uuid == "dup")).all()) == \
            ["t.py::test_a", "t.py::test_b"]
