"""`harness pipeline triage-matrix`: which ingested runs go to bisect.yml, on which runner group.
Real bundles, ingested into both real backends (Postgres and SQLite)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.bundle import BundleWriter, ResultRecord, RunEnd, RunRecord
from harness.errors import HarnessError
from harness.ingest import ingest
from harness.pipeline import TRIAGE_KEYS, triage_matrix
from harness.run.runner_groups import default_runner, load_runner_groups

T4 = next(s for s in load_runner_groups() if s.group == "single-gpu" and s.gpu_count == 1)
MULTI = next(s for s in load_runner_groups() if s.group == "multi-gpu")


def bundle(path: Path, commit: str, started: str, outcomes: dict[str, str], machine_type: str | None,
           group: str) -> str:
    run = RunRecord(branch="main", commit_sha=commit, runner_group=group, machine_type=machine_type,
                    suites="slow", models="llama", started_at=started, status="running", repo="/ci/checkout")
    with BundleWriter(path) as w:
        w.write(run)
        for nodeid, outcome in outcomes.items():
            w.write(ResultRecord(run=run.uuid, nodeid=nodeid, outcome=outcome, model="llama", suite="slow"))
        w.write(RunEnd(run=run.uuid, status="completed", finished_at=started))
    return str(path)


def test_runs_with_candidates_are_placed_on_the_runner_that_ran_them(db_url: str, tmp_path: Path) -> None:
    a, b = "suites/slow/test_llama.py::test_a", "suites/slow/test_llama.py::test_b"
    day1 = [bundle(tmp_path / "t4-1.jsonl", "c1" * 20, "2025-01-01T02:00:00", {a: "passed", b: "passed"},
                   T4.machine_type, T4.group),
            bundle(tmp_path / "m-1.jsonl", "c1" * 20, "2025-01-01T02:00:00", {a: "passed"}, None, MULTI.group)]
    day2 = [bundle(tmp_path / "t4-2.jsonl", "c2" * 20, "2025-01-02T02:00:00", {a: "failed", b: "passed"},
                   T4.machine_type, T4.group),
            bundle(tmp_path / "m-2.jsonl", "c2" * 20, "2025-01-02T02:00:00", {a: "passed"}, None, MULTI.group)]
    ingest(day1 + day2, db_url)

    first = triage_matrix(day1, db_url)  # nothing to compare with yet
    assert first["empty"] is True and first["matrix"]["include"] == [] and len(first["notes"]) == 2

    result = triage_matrix(day2, db_url)
    assert result["runs"] == 2 and result["to_triage"] == 1 and result["empty"] is False
    [entry] = result["matrix"]["include"]
    assert set(entry) == set(TRIAGE_KEYS)
    assert (entry["runner"], entry["machine_type"], entry["container_options"]) == (
        T4.name, T4.machine_type, T4.container_options)
    assert (entry["commit"], entry["baseline_commit"], entry["candidates"]) == ("c2" * 20, "c1" * 20, 1)


def test_multi_gpu_run_without_machine_type_uses_its_groups_default(db_url: str, tmp_path: Path) -> None:
    a = "suites/slow/test_llama.py::test_a"
    old = bundle(tmp_path / "1.jsonl", "c1" * 20, "2025-01-01T02:00:00", {a: "passed"}, None, MULTI.group)
    new = bundle(tmp_path / "2.jsonl", "c2" * 20, "2025-01-02T02:00:00", {a: "crashed"}, None, MULTI.group)
    ingest([old, new], db_url)
    out = tmp_path / "github_output"
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "pipeline", "triage-matrix", new, "--db", db_url,
                           "--github-output", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    outputs = dict(line.split("=", 1) for line in out.read_text().splitlines())
    assert outputs["empty"] == "false"
    [entry] = json.loads(outputs["matrix"])["include"]
    assert (entry["runner_group"], entry["runner"]) == ("multi-gpu", default_runner("multi-gpu").name)
    assert json.loads(proc.stdout)["matrix"] == json.loads(outputs["matrix"])


def test_bundle_not_ingested_is_bad_input(db_url: str, tmp_path: Path) -> None:
    path = bundle(tmp_path / "x.jsonl", "c1" * 20, "2025-01-01T02:00:00", {"t::x": "failed"}, None, "cpu")
    with pytest.raises(HarnessError, match="not in the store: run `harness ingest` first"):
        triage_matrix([path], db_url)
    with pytest.raises(HarnessError, match="no results bundles given"):
        triage_matrix([], db_url)
