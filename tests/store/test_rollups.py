"""Rollups kept at write time (harness/store/rollups.py), on Postgres and SQLite: counts per run x model x
suite and per day, per-test latest state, new failures, variable values; idempotent re-writes; the same
results through the SQLAlchemy writer, the DBAPI fast writer (`harness ingest`) and the migration backfill."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from harness.store import Store
from harness.store.db import alembic_config
from harness.store.writer import write_records

from .rollup_data import run_records, table, write_bundle, write_run

DAY1 = {"t::a": "passed", "t::b": "passed", "t::c": "failed", "t::d": "skipped", "t::e": "passed"}
DAY2 = {"t::a": "failed", "t::b": ["failed", "passed"], "t::c": "failed", "t::d": "error", "t::f": "xfail"}


def _snapshot(store: Store) -> dict[str, list[tuple]]:
    return {
        "counts": table(store, "SELECT r.uuid, c.model, c.suite, c.n_pass, c.n_fail, c.n_skip, c.n_total FROM "
                               "rollup_run_counts c JOIN runs r ON r.id = c.run_id ORDER BY 1, 2, 3"),
        "daily": table(store, "SELECT substr(CAST(day AS TEXT), 1, 10), branch, runner_group, model, n_pass, "
                              "n_fail, n_skip, n_total FROM rollup_daily ORDER BY 1, 2, 3, 4"),
        "new": table(store, "SELECT r.uuid, n.nodeid, n.outcome, n.baseline_outcome FROM rollup_new_failures n "
                            "JOIN runs r ON r.id = n.run_id ORDER BY 1, 2"),
        "tests": table(store, "SELECT t.branch, t.nodeid, t.last_outcome, t.runs, t.duration_sum, t.duration_max, "
                              "c.uuid, p.uuid FROM rollup_tests t LEFT JOIN runs c ON c.id = t.changed_run_id "
                              "LEFT JOIN runs p ON p.id = t.last_pass_run_id ORDER BY 1, 2"),
        "daily_models": table(store, "SELECT substr(CAST(day AS TEXT), 1, 10), model, n_pass, n_fail, n_skip, n_total "
                                     "FROM rollup_daily_models ORDER BY 1, 2"),
        "dims": table(store, "SELECT kind, value FROM rollup_dims ORDER BY 1, 2"),
        "names": table(store, "SELECT nodeid FROM rollup_test_names ORDER BY 1"),
        "suites": table(store, "SELECT r.uuid, s.suite, s.n_skip, s.n_skip_explicit, s.n_total FROM rollup_run_suites s "
                               "JOIN runs r ON r.id = s.run_id ORDER BY 1, 2"),
    }


def test_counts_state_and_new_failures(store: Store) -> None:
    write_run(store, "d1", 1, DAY1)
    write_run(store, "d2", 2, DAY2)
    write_run(store, "dev", 2, {"t::a": "failed"}, branch="dev", model="gemma")
    snap = _snapshot(store)
    assert snap["counts"] == [("d1", "llama", "slow", 3, 1, 1, 5), ("d2", "llama", "slow", 2, 3, 0, 5),
                              ("dev", "gemma", "slow", 0, 1, 0, 1)]
    assert snap["daily"] == [("2026-11-01", "main", "cpu", "llama", 3, 1, 1, 5),
                             ("2026-11-02", "dev", "cpu", "gemma", 0, 1, 0, 1),
                             ("2026-11-02", "main", "cpu", "llama", 2, 3, 0, 5)]
    assert snap["daily_models"] == [("2026-11-01", "llama", 3, 1, 1, 5), ("2026-11-02", "gemma", 0, 1, 0, 1),
                                    ("2026-11-02", "llama", 2, 3, 0, 5)]
    # t::a passed -> failed is new; t::d skipped -> error is new; t::c failed in both is not; t::b passed on retry
    assert snap["new"] == [("d2", "t::a", "failed", "passed"), ("d2", "t::d", "error", "skipped")]
    tests = {row[1]: row for row in snap["tests"] if row[0] == "main"}
    assert tests["t::a"][2:] == ("failed", 2, 2.0, 1.0, "d2", "d1")  # changed in d2, last passed in d1
    assert tests["t::b"][2:] == ("passed", 2, 3.0, 2.0, "d1", "d2")  # attempt 2 (2 s) is the final one
    assert tests["t::c"][2:5] == ("failed", 2, 2.0) and tests["t::c"][7] is None
    assert tests["t::e"][2:4] == ("passed", 1)  # absent from d2: state stays at d1
    assert ("model", "gemma") in snap["dims"] and ("branch", "dev") in snap["dims"]
    assert ("runner_group", "cpu") in snap["dims"]
    assert snap["names"] == [(n,) for n in sorted({*DAY1, *DAY2})]


def test_rewrite_is_a_no_op_and_late_runs_reclassify(store: Store) -> None:
    write_run(store, "d1", 1, DAY1)
    write_run(store, "d3", 3, DAY2)
    before = _snapshot(store)
    write_run(store, "d1", 1, DAY1)  # the same records again
    write_run(store, "d3", 3, DAY2)
    assert _snapshot(store) == before
    # A run that arrives late, between d1 and d3, becomes d3's baseline: d3's new failures follow it.
    write_run(store, "d2", 2, {k: "failed" for k in DAY2})
    new = _snapshot(store)["new"]
    assert [r for r in new if r[0] == "d3"] == []  # everything already failed in d2
    assert [r[1] for r in new if r[0] == "d2"] == ["t::a", "t::b", "t::d", "t::f"]


def test_running_and_cancelled_runs(store: Store) -> None:
    write_run(store, "d1", 1, DAY1)
    write_run(store, "live", 2, DAY2, status="running")
    write_run(store, "gone", 3, DAY2, status="cancelled")
    snap = _snapshot(store)
    assert {r[0] for r in snap["counts"]} == {"d1", "live", "gone"}  # counted while running
    # a running run has none yet; a cancelled one is compared with its baseline (never one itself)
    assert {r[0] for r in snap["new"]} == {"gone"}
    assert table(store, "SELECT r.uuid, b.uuid FROM rollup_runs x JOIN runs r ON r.id = x.run_id "
                        "JOIN runs b ON b.id = x.baseline_id") == [("gone", "d1")]


def test_results_before_the_run_header_move_to_the_right_day(store: Store) -> None:
    """A result can arrive before its run header (bare run row dated now): the day totals move with it."""
    records = run_records("late-header", 1, DAY1)
    write_records(store, records[1:-1])  # results only
    write_records(store, [records[0], records[-1]])  # then the header and the end
    daily = _snapshot(store)["daily"]
    assert daily == [("2026-11-01", "main", "cpu", "llama", 3, 1, 1, 5)]


def test_fast_path_ingest_and_backfill_agree(db_url: str, tmp_path: Path) -> None:
    """`harness ingest` (the DBAPI fast writer), the SQLAlchemy writer, and the migration's backfill of a
    store written before the rollups existed all give the same tables."""
    history = [*run_records("d1", 1, DAY1), *run_records("d2", 2, DAY2), *run_records("d3", 3, DAY1),
               *run_records("d4", 4, DAY2), *run_records("x4", 4, DAY1, branch="dev", hour=5)]
    bundle = write_bundle(tmp_path / "b.jsonl", history)
    res = subprocess.run([sys.executable, "-m", "harness.cli", "ingest", str(bundle), "--db", db_url],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    ingested = Store.open(db_url)
    via_ingest = _snapshot(ingested)
    assert via_ingest["new"] and via_ingest["daily"]
    # Backfill: back to 0002 (rollup tables dropped), then upgrade again: the migration recomputes them.
    from alembic import command

    with ingested.engine.begin() as conn:
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0002")
    assert ingested.current_revision() == "0002"
    ingested.upgrade()
    assert _snapshot(ingested) == via_ingest
    ingested.dispose()
    other = Store.open(f"sqlite:///{tmp_path / 'other.db'}")
    write_records(other, history)
    assert _snapshot(other) == via_ingest
    other.dispose()
