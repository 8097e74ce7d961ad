"""New failures against the baseline run, on Postgres and SQLite: baseline choice, per-test rules, CLI."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from harness.bundle import ResultRecord, RunEnd, RunRecord
from harness.cli import main
from harness.store import Store
from harness.store.schema import Run
from harness.store.writer import write_records
from harness.triage import NoBaselineError, TriageError, find_new_failures


def _run(store: Store, uuid: str, hour: int, results: dict[str, str | list[str]], status: str = "completed",
         branch: str = "main", group: str = "cpu", suites: str | None = "slow") -> int:
    """Store a run started at `hour` o'clock; a list of outcomes means attempts 1, 2, ..."""
    records: list = [RunRecord(uuid=uuid, repo="/r", branch=branch, commit_sha=f"{hour:040d}", runner_group=group,
                               suites=suites, started_at=f"2026-11-26T{hour:02d}:00:00+00:00")]
    for nodeid, outcome in results.items():
        for attempt, o in enumerate([outcome] if isinstance(outcome, str) else outcome, start=1):
            records.append(ResultRecord(run=uuid, nodeid=nodeid, outcome=o, attempt=attempt, model="llama",
                                        suite="slow", message=f"{o} message" if o != "passed" else None,
                                        device="cuda:0"))
    records.append(RunEnd(run=uuid, status=status, finished_at=f"2026-11-26T{hour:02d}:30:00+00:00"))
    write_records(store, records)
    with store.session() as s:
        return s.scalars(select(Run.id).where(Run.uuid == uuid)).one()


BASELINE = {
    "t::pass_then_fail": "passed", "t::fail_both": "failed", "t::fixed": "failed", "t::missing_pass": "passed",
    "t::missing_fail": "error", "t::skipped_then_fail": "skipped", "t::retried": "passed", "t::steady": "passed",
}
CURRENT = {
    "t::pass_then_fail": "failed", "t::fail_both": "crashed", "t::fixed": "passed", "t::new_fail": "timeout",
    "t::new_pass": "passed", "t::skipped_then_fail": "error", "t::retried": ["failed", "passed"], "t::steady": "passed",
}


@pytest.fixture
def history(store: Store) -> dict[str, int]:
    """A good baseline, then runs that must never be chosen as baseline, then the run under test."""
    ids = {"older": _run(store, "older", 1, {"t::pass_then_fail": "failed"})}
    ids["baseline"] = _run(store, "baseline", 2, BASELINE)
    ids["cancelled"] = _run(store, "cancelled", 3, {k: "failed" for k in BASELINE}, status="cancelled")
    ids["partial"] = _run(store, "partial", 4, {k: "failed" for k in BASELINE}, status="partial")
    ids["other_branch"] = _run(store, "other-branch", 5, {k: "failed" for k in BASELINE}, branch="dev")
    ids["other_group"] = _run(store, "other-group", 6, {k: "failed" for k in BASELINE}, group="single-gpu")
    ids["other_suites"] = _run(store, "other-suites", 7, {k: "failed" for k in BASELINE}, suites="fa2")
    ids["run"] = _run(store, "run", 8, CURRENT)
    ids["later"] = _run(store, "later", 9, CURRENT, status="running")
    return ids


def _names(deltas: list) -> list[str]:
    return [d.nodeid for d in deltas]


def test_baseline_is_previous_completed_run_of_same_branch_group_and_suites(store: Store, history: dict) -> None:
    found = find_new_failures(store, history["run"])
    assert (found.run_id, found.baseline_id) == (history["run"], history["baseline"])
    assert _names(found.new) == ["t::new_fail", "t::pass_then_fail", "t::skipped_then_fail"]
    assert _names(found.still_failing) == ["t::fail_both"]
    assert _names(found.fixed) == ["t::fixed"]
    assert _names(found.missing) == ["t::missing_fail", "t::missing_pass"]  # missing is never a pass
    new = {d.nodeid: d for d in found.new}
    assert (new["t::pass_then_fail"].outcome, new["t::pass_then_fail"].baseline_outcome) == ("failed", "passed")
    assert (new["t::new_fail"].baseline_outcome, new["t::new_fail"].message) == (None, "timeout message")
    assert (new["t::new_fail"].model, new["t::new_fail"].suite, new["t::new_fail"].device) == ("llama", "slow", "cuda:0")
    assert found.missing[0].outcome is None and found.missing[0].baseline_outcome == "error"


def test_latest_completed_run_is_the_default_and_baseline_can_be_overridden(store: Store, history: dict) -> None:
    assert find_new_failures(store).run_id == history["run"]  # "later" is still running
    forced = find_new_failures(store, history["run"], baseline_id=history["cancelled"])
    assert forced.baseline_id == history["cancelled"]
    assert _names(forced.new) == ["t::new_fail"]  # everything else failed in that cancelled run
    assert _names(forced.fixed) == ["t::fixed", "t::retried", "t::steady"]


def test_no_baseline_and_unknown_runs(store: Store, history: dict) -> None:
    with pytest.raises(NoBaselineError, match="no baseline"):
        find_new_failures(store, history["older"])
    with pytest.raises(TriageError, match="no run 999"):
        find_new_failures(store, 999)
    with pytest.raises(TriageError, match="own baseline"):
        find_new_failures(store, history["run"], baseline_id=history["run"])


def test_cli_json_and_exit_codes(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    store = Store.open(db_url)
    base = _run(store, "b", 1, {"t::a": "passed", "t::b": "passed"})
    bad = _run(store, "r", 2, {"t::a": "failed", "t::b": "passed"})
    good = _run(store, "g", 3, {"t::a": "passed", "t::b": "passed"})
    assert main(["new-failures", "--run", str(bad), "--db", db_url, "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert (out["run_id"], out["baseline_id"], out["confirmed"]) == (bad, base, False)
    assert [d["nodeid"] for d in out["new"]] == ["t::a"] and out["counts"]["new"] == 1
    assert set(out["new"][0]) >= {"nodeid", "model", "suite", "outcome", "message", "baseline_outcome"}
    assert main(["new-failures", "--db", db_url]) == 0  # latest run: nothing new, t::a fixed
    assert "0 new" in capsys.readouterr().out
    assert main(["new-failures", "--run", str(good), "--baseline", str(base), "--db", db_url]) == 0
    capsys.readouterr()
    assert main(["new-failures", "--run", str(base), "--db", db_url]) == 2
    err = capsys.readouterr().err
    assert err.startswith("harness: run") and "no baseline" in err and err.count("\n") == 1
    store.dispose()


def test_baseline_is_the_same_models_previous_run(store: Store) -> None:
    """Per-model matrix jobs: llama's run compares with llama's previous run, not gemma's at the same commit."""
    def run(uuid: str, hour: int, models: str, outcome: str) -> int:
        write_records(store, [
            RunRecord(uuid=uuid, repo="/r", branch="main", commit_sha=f"{hour:040d}", runner_group="cpu",
                      suites="slow", models=models, started_at=f"2026-11-26T{hour:02d}:00:00+00:00"),
            ResultRecord(run=uuid, nodeid=f"t::{models}", outcome=outcome, model=models),
            RunEnd(run=uuid, status="completed", finished_at=f"2026-11-26T{hour:02d}:30:00+00:00")])
        with store.session() as s:
            return s.scalars(select(Run.id).where(Run.uuid == uuid)).one()

    llama_1 = run("llama-1", 1, "llama", "passed")
    run("gemma-1", 2, "gemma", "passed")
    llama_2 = run("llama-2", 3, "llama", "failed")
    report = find_new_failures(store, llama_2)
    assert report.baseline_id == llama_1
    assert [d.nodeid for d in report.new] == ["t::llama"]


def test_cli_reads_a_current_store_without_sqlalchemy_and_agrees_with_the_library(store: Store, db_url: str,
                                                                                  history: dict) -> None:
    """`harness new-failures` as users call it (a subprocess): on a store at the schema head it reads
    through a DBAPI connection (harness/store/reading.py) and never imports SQLAlchemy; same verdicts."""
    import subprocess
    import sys

    probe = ("import runpy, sys; sys.argv = ['harness'] + sys.argv[1:]\n"
             "try:\n    runpy.run_module('harness.cli', run_name='__main__')\n"
             "finally:\n    sys.stderr.write('SQLALCHEMY=%s' % ('sqlalchemy' in sys.modules))\n")
    res = subprocess.run([sys.executable, "-c", probe, "new-failures", "--run", str(history["run"]), "--db", db_url,
                          "--json"], capture_output=True, text=True)
    assert res.returncode == 1, res.stderr  # new failures found
    assert res.stderr.endswith("SQLALCHEMY=False"), res.stderr
    assert json.loads(res.stdout) == find_new_failures(store, history["run"]).to_json()


def test_cli_on_an_older_store_migrates_it_first_and_answers_the_same(store: Store, db_url: str,
                                                                      history: dict) -> None:
    """The fast read connection only serves a store at the schema head; an older one (here: back at
    0006) goes through Store.open, which migrates it, and the verdicts are the same."""
    import subprocess
    import sys

    from alembic import command

    from harness.store.db import alembic_config
    from harness.store.revision import SCHEMA_HEAD

    expected = find_new_failures(store, history["run"]).to_json()
    with store.engine.begin() as conn:
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0006")
    assert store.current_revision() == "0006" != SCHEMA_HEAD
    res = subprocess.run([sys.executable, "-m", "harness.cli", "new-failures", "--run", str(history["run"]),
                          "--db", db_url, "--json"], capture_output=True, text=True)
    assert res.returncode == 1, res.stderr
    assert json.loads(res.stdout) == expected
    assert store.current_revision() == SCHEMA_HEAD
