"""`harness db prune --before DATE` on Postgres and SQLite: raw rows of old runs go in batches, runs,
rollups and benchmark metrics stay, panels' tables are unchanged, bad dates are refused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from harness.bundle import BenchmarkRecord
from harness.store import Store
from harness.store.writer import write_records

from .rollup_data import run_records, table, write_run
from .test_rollups import _snapshot

DAYS = [{"t::a": "passed", "t::b": "passed", "t::c": ["failed", "passed"]},
        {"t::a": "failed", "t::b": "passed", "t::c": "passed"},
        {"t::a": "failed", "t::b": "error", "t::c": "passed"},
        {"t::a": "passed", "t::b": "error", "t::c": "failed"}]


def _harness(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness.cli", *argv], capture_output=True, text=True)


def _seed(store: Store) -> list[int]:
    ids = [write_run(store, f"d{day}", day, results) for day, results in enumerate(DAYS, start=1)]
    for day in (1, 4):
        write_records(store, [BenchmarkRecord(
            run=f"d{day}", nodeid="t::bench", model="llama", config="c", dtype="bf16", batch_size=1,
            prompt_length=8, measurements={"time_to_first_token_secs": 0.5},
            device_samples=[{"cpu_util": 1.0, "time": f"2026-11-0{day}T03:0{i}:00"} for i in range(3)],
            created_at=f"2026-11-0{day}T03:00:00+00:00")])
    return ids


def test_prune_keeps_runs_and_rollups(store: Store) -> None:
    ids = _seed(store)
    before = _snapshot(store)
    dry = _harness("db", "prune", "--before", "2026-11-03", "--dry-run", "--db", store.config.url)
    assert dry.returncode == 0, dry.stderr
    assert "would remove 7 test results and 3 device samples of 2 runs" in dry.stdout
    assert table(store, "SELECT count(*) FROM test_results") == [(13,)]

    res = _harness("db", "prune", "--before", "2026-11-03", "--batch", "2", "--db", store.config.url)
    assert res.returncode == 0, res.stderr
    assert "removed 7 test results and 3 device samples of 2 runs" in res.stdout
    assert table(store, "SELECT run_id, count(*) FROM test_results GROUP BY run_id ORDER BY 1") == [
        (ids[2], 3), (ids[3], 3)]
    assert table(store, "SELECT count(*) FROM runs") == [(4,)]
    assert table(store, "SELECT count(*) FROM benchmarks") == [(2,)]
    assert table(store, "SELECT count(*) FROM model_measurements") == [(2,)]
    assert table(store, "SELECT count(*) FROM device_measurements") == [(3,)]
    assert _snapshot(store) == before  # every rollup (panels over old ranges) is kept

    # A late re-write of a pruned run does not recompute its rollups from the rows that are gone.
    write_run(store, "d2", 2, {"t::a": "passed"})
    assert _snapshot(store) == before
    # Recent runs still triage against their baseline.
    found = _harness("new-failures", "--run", str(ids[3]), "--json", "--db", store.config.url)
    assert found.returncode == 1 and '"t::c"' in found.stdout


def test_bad_dates_exit_2_and_remove_nothing(store: Store) -> None:
    _seed(store)
    for bad, why in (("yesterday", "is not a date"), ("2999-01-01", "in the future")):
        res = _harness("db", "prune", "--before", bad, "--db", store.config.url)
        assert res.returncode == 2 and res.stdout == ""
        assert why in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert table(store, "SELECT count(*) FROM test_results") == [(13,)]


def test_prune_pays_owed_rollups_before_it_removes_their_rows(store: Store, tmp_path: Path) -> None:
    """Runs whose writer died between committing their rows and refreshing their rollups (owed:
    harness/store/pending.py) get their rollups from those rows before prune removes them."""
    from harness.store import pending
    from harness.store.fastpath import FastWriter, connect

    records = [r for day, results in enumerate(DAYS, start=1) for r in run_records(f"d{day}", day, results)]
    reference = Store.open(f"sqlite:///{tmp_path / 'reference.db'}")
    write_records(reference, records)  # a writer that refreshed in every transaction
    got = connect(store.config.url)
    assert got is not None
    dead = FastWriter(*got)
    dead.write(records, refresh=False)
    dead.close()  # died before its refresh
    with store.engine.connect() as conn:
        assert [uuid for _, uuid in pending.owed(conn.connection.dbapi_connection)] == ["d1", "d2", "d3", "d4"]
    res = _harness("db", "prune", "--before", "2026-11-03", "--db", store.config.url)
    assert res.returncode == 0, res.stderr
    assert "removed 7 test results" in res.stdout
    with store.engine.connect() as conn:
        assert [uuid for _, uuid in pending.owed(conn.connection.dbapi_connection)] == ["d3", "d4"]  # not pruned
    pruned = _snapshot(store)
    expected = _snapshot(reference)
    reference.dispose()
    for name in ("counts", "suites"):  # per run: the pruned runs' rollups were computed from their rows
        mine = [r for r in pruned[name] if r[0] in ("d1", "d2")]
        assert mine and mine == [r for r in expected[name] if r[0] in ("d1", "d2")]
