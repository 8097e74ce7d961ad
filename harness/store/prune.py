"""`harness db prune --before DATE`: remove the raw rows of old runs, keep runs and rollups.

Removed: `test_results` of runs started before the cutoff, and the `device_measurements` samples of
their benchmarks. Kept: `runs`, every rollup (harness/store/rollups.py: panels over old ranges still
answer), `benchmarks` + `model_measurements` (the metric series perf alerts need), culprits, flaky
records and perf alerts. Rows go in batches, one short transaction each, so concurrent writers are
never locked out for long. The cutoff is recorded first (`rollup_meta`), so a late write to an old
run does not recompute its rollups from the rows that are gone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import Connection

from harness.errors import HarnessError
from harness.store import pending, rollups
from harness.store.db import Store


@dataclass
class PruneReport:
    """What one prune removed (or, with `dry_run`, would remove)."""

    before: datetime
    runs: int = 0
    test_results: int = 0
    device_measurements: int = 0
    dry_run: bool = False


def parse_cutoff(text: str, now: datetime | None = None) -> datetime:
    """`YYYY-MM-DD` or an ISO timestamp (an offset is converted to UTC) as naive UTC; never in the future."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise HarnessError(f"--before {text!r} is not a date: use YYYY-MM-DD or an ISO timestamp") from None
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    now = now or datetime.now(timezone.utc).replace(tzinfo=None)
    if value > now:
        raise HarnessError(f"--before {text} is in the future: it would prune runs still being written")
    return value


def _count(db: rollups.Sql, sql: str, params: tuple) -> int:
    return int(db.rows(sql, params)[0][0] or 0)


def prune(store: Store, before: datetime, *, batch_size: int = 20000, dry_run: bool = False) -> PruneReport:
    """Delete raw rows of runs started before `before`, `batch_size` rows per transaction."""
    report = PruneReport(before=before, dry_run=dry_run)
    with store.engine.connect() as conn:
        db = rollups.Sql(conn)
        run_ids = [r[0] for r in db.rows("SELECT id FROM runs WHERE started_at < ? ORDER BY started_at, id",
                                         (before,))]
        conn.commit()
        if dry_run:
            for run_id in run_ids:
                results = _count(db, "SELECT count(*) FROM test_results WHERE run_id = ?", (run_id,))
                samples = _count(db, "SELECT count(*) FROM device_measurements d JOIN benchmarks b "
                                     "ON b.benchmark_id = d.benchmark_id WHERE b.run_id = ?", (run_id,))
                report.test_results += results
                report.device_measurements += samples
                report.runs += 1 if results or samples else 0
            conn.rollback()
            return report
        missing = [rid for rid, source in ((rid, db.rows("SELECT source FROM rollup_runs WHERE run_id = ?", (rid,)))
                                           for rid in run_ids) if not source or pending.is_marked(source[0][0])]
        rollups.refresh(conn, missing)  # every run keeps its rollups before its rows go
        previous = rollups.pruned_before(conn)
        if previous is None or before > previous:
            db.run("DELETE FROM rollup_meta WHERE key = ?", (rollups.PRUNED_KEY,))
            db.run("INSERT INTO rollup_meta (key, value) VALUES (?, ?)", (rollups.PRUNED_KEY, before.isoformat()))
        conn.commit()
        for run_id in run_ids:
            removed = _batches(conn, db, "DELETE FROM test_results WHERE id IN (SELECT id FROM test_results "
                                         "WHERE run_id = ? LIMIT ?)", run_id, batch_size)
            report.test_results += removed
            samples = _batches(conn, db, "DELETE FROM device_measurements WHERE measurement_id IN ("
                                         "SELECT d.measurement_id FROM device_measurements d JOIN benchmarks b "
                                         "ON b.benchmark_id = d.benchmark_id WHERE b.run_id = ? LIMIT ?)",
                               run_id, batch_size)
            report.device_measurements += samples
            report.runs += 1 if removed or samples else 0
    return report


def _batches(conn: Connection, db: rollups.Sql, sql: str, run_id: int, batch_size: int) -> int:
    """Repeat a bounded DELETE, committing each batch, until it removes fewer rows than a batch."""
    total = 0
    while True:
        n = db.run(sql, (run_id, batch_size))
        conn.commit()
        total += n
        if n < batch_size:
            return total


def summary(report: PruneReport) -> str:
    """One line saying what was (or would be) removed and what was kept."""
    verb = "would remove" if report.dry_run else "removed"
    return (f"prune before {report.before.isoformat(sep=' ')}: {verb} {report.test_results:,} test results and "
            f"{report.device_measurements:,} device samples of {report.runs:,} runs; "
            "kept runs, rollups, benchmarks and their metrics")
