"""`harness pipeline daily` end to end: the test that shows the product works.

A temporary git repository carries a real regression three commits back (tests/e2e/target_repo.py).
The pipeline runs the baseline commit, runs HEAD, finds the new failures, confirms them by rerunning
(the flaky test drops out), bisects the confirmed one to its commit, and posts the report to Slack.
Slack is a local HTTP server standing in for Slack's Web API (SLACK_API_URL points the real slack-sdk
client at it); the database is the real Postgres server; every step runs as a real subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import git
import pytest
from sqlalchemy import create_engine, inspect, text

from tests.e2e.target_repo import FLAKY_TEST, OPS_GOOD, REGRESSING_TEST, make_target
from tests.report.fake_http import FakeServer, Reply, Request

TOKEN = "xoxb-e2e-secret-token"


class SlackStandIn:
    """Answers chat.postMessage like Slack does (ok + ts)."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self, req: Request) -> Reply:
        self.n += 1
        return 200, {}, {"ok": True, "channel": "C0CI", "ts": f"1700000000.{self.n:06d}"}


@pytest.fixture
def slack() -> Iterator[FakeServer]:
    server = FakeServer(SlackStandIn())
    yield server
    server.close()


@pytest.fixture
def target(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    root = tmp_path / "target"
    return root, make_target(root)


def harness(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=300)


def rows(url: str, sql: str, **params: object) -> list:
    engine = create_engine(url)
    with engine.connect() as conn:
        out = conn.execute(text(sql), params).all()
    engine.dispose()
    return out


def run_count(url: str) -> int:
    """Rows in `runs`, 0 when the schema was never created."""
    engine = create_engine(url)
    try:
        if not inspect(engine).has_table("runs"):
            return 0
        with engine.connect() as conn:
            return conn.execute(text("SELECT count(*) FROM runs")).scalar_one()
    finally:
        engine.dispose()


def env_for(tmp_path: Path, slack: FakeServer) -> dict[str, str]:
    return {"SLACK_BOT_TOKEN": TOKEN, "SLACK_API_URL": slack.url + "/api/", "SLACK_RETRY_BACKOFF_S": "0.01",
            "FLAKY_MARKER": str(tmp_path / "flaky"), "HARNESS_CACHE_DIR": str(tmp_path / "cache"),
            "HARNESS_DB_URL": "", "SLACK_CHANNEL": "", "SLACK_WEBHOOK_URL": ""}


def test_daily_pipeline_finds_confirms_bisects_reports_and_stores(
        target: tuple[Path, dict[str, str]], pg_url: str, slack: FakeServer, tmp_path: Path) -> None:
    root, shas = target
    env = env_for(tmp_path, slack)
    out = tmp_path / "slack-report.json"
    proc = harness("pipeline", "daily", "--repo", str(root), "--baseline", shas["good"], "--runner-group", "cpu",
                   "-n", "1", "--attempts", "2", "-j", "2", "--retries", "2", "--channel", "#model-ci",
                   "--out", str(out), "--db", pg_url, "--json", env=env, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr  # 1: the work ran and found (confirmed) new failures
    result = json.loads(proc.stdout)  # --json: stdout is the object alone; one readable line per step on stderr
    steps = [line.split(":")[0] for line in proc.stderr.splitlines()]
    assert steps == ["baseline", "run", "new failures", "confirm", "bisect", "notify"], proc.stderr
    assert "confirm: 1 of 2 confirmed new, 1 flaky (2 rerun(s) each)" in proc.stderr
    assert "bisect: 1 culprit(s) for 1 test(s)" in proc.stderr and shas["culprit"][:12] in proc.stderr
    assert "notify: posted" in proc.stderr

    # runs: baseline at the old commit, the new run at HEAD
    assert result["commit"] == shas["bad"] and result["baseline_commit"] == shas["good"]
    assert result["counts"]["failed"] == 2  # the regression and the flake, on first attempt
    # new failures, confirmed: the flake failed once and passed its reruns, so it is not "new"
    nf = result["new_failures"]
    assert nf["confirmed"] is True
    assert [d["nodeid"] for d in nf["new"]] == [REGRESSING_TEST]
    assert [f["nodeid"] for f in nf["flaky"]] == [FLAKY_TEST]
    # bisect: the culprit is the commit three back, with its author and PR number
    bis = result["bisect"]
    assert bis["commits_in_range"] == 4 and bis["probes"] >= 1
    assert [(c["commit"], c["author"], c["email"], c["pr"], c["tests"]) for c in bis["culprits"]] == [
        (shas["culprit"], "Eve Fast", "eve@example.com", 123, [REGRESSING_TEST])]

    # Slack (the local stand-in) got the report through chat.postMessage with the bot token
    posts = [r for r in slack.requests if r.path == "/api/chat.postMessage"]
    assert posts and result["slack"]["delivered"] is True and result["slack"]["posted"] == len(posts)
    assert all(r.headers["Authorization"] == f"Bearer {TOKEN}" for r in posts)
    main = posts[0].body
    assert main["channel"] == "#model-ci"
    report = json.dumps(main)
    assert "test_large_logits_are_finite" in report and shas["culprit"][:7] in report
    saved = out.read_text()
    assert json.loads(saved)["channel"] == "#model-ci"
    assert TOKEN not in proc.stdout + proc.stderr + saved

    # Postgres holds it all
    runs = rows(pg_url, "SELECT id, commit_sha, status, runner_group FROM runs ORDER BY id")
    assert [(r.commit_sha, r.status, r.runner_group) for r in runs] == [
        (shas["good"], "completed", "cpu"), (shas["bad"], "completed", "cpu")]
    run_id = runs[1].id
    assert result["run_id"] == run_id and result["baseline_id"] == runs[0].id
    failed = rows(pg_url, "SELECT nodeid, attempt FROM test_results WHERE run_id = :r AND outcome = 'failed' "
                          "ORDER BY nodeid, attempt", r=run_id)
    assert [tuple(f) for f in failed] == [(REGRESSING_TEST, 1), (FLAKY_TEST, 1)], failed
    culprits = rows(pg_url, "SELECT nodeid, commit_sha, run_id, method, good_sha, bad_sha FROM culprits")
    assert [tuple(c) for c in culprits] == [(REGRESSING_TEST, shas["culprit"], run_id, "bisect",
                                             shas["good"], shas["bad"])]
    flaky = rows(pg_url, "SELECT nodeid, last_run_id FROM flaky_tests")
    assert [tuple(f) for f in flaky] == [(FLAKY_TEST, run_id)]

    # the user's checkout is untouched: same HEAD, clean tree, no leftover worktrees
    repo = git.Repo(root)
    assert repo.head.commit.hexsha == shas["bad"] and not repo.is_dirty(untracked_files=True)
    assert len(repo.git.worktree("list").splitlines()) == 1

    # next day: the regression is fixed; without --baseline the store's previous run is the baseline
    (root / "models" / "ops.py").write_text(OPS_GOOD)
    repo.index.add(["models/ops.py"])
    repo.index.commit("ops: restore the max shift (#124)")
    again = harness("pipeline", "daily", "--repo", str(root), "--runner-group", "cpu", "-n", "1",
                    "--dry-run", "--out", str(tmp_path / "day2.json"), "--db", pg_url, "--json", env=env, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    day2 = json.loads(again.stdout)
    assert "bisect: skipped (no confirmed new failure)" in again.stderr
    assert "notify: dry run, nothing posted; payload kept in" in again.stderr
    assert day2["baseline_id"] == run_id and day2["bisect"] is None
    # both failed in yesterday's run (the flake on its first attempt); both pass today
    assert [d["nodeid"] for d in day2["new_failures"]["fixed"]] == [REGRESSING_TEST, FLAKY_TEST]
    assert day2["new_failures"]["new"] == [] and day2["counts"]["failed"] == 0
    assert len(slack.requests) == len(posts)  # --dry-run posted nothing
    assert (tmp_path / "day2.json").is_file()


BAD_INPUT = ["no-baseline", "empty-sqlite-store", "no-slack-credentials", "bad-revision", "unknown-model",
             "unknown-suite", "bad-db-url"]


@pytest.mark.parametrize("case", BAD_INPUT)
def test_bad_input_fails_before_anything_runs(target: tuple[Path, dict[str, str]], pg_url: str,
                                              slack: FakeServer, tmp_path: Path, case: str) -> None:
    """Each is exit 2 with one stderr line, and nothing written: no run, no table, no SQLite file."""
    root, shas = target
    env = env_for(tmp_path, slack)
    sqlite_file = tmp_path / "store" / "results.db"
    db = f"sqlite:///{sqlite_file}" if case == "empty-sqlite-store" else pg_url
    args = ["pipeline", "daily", "--repo", str(root), "--runner-group", "cpu", "--db", db]
    if case in ("no-baseline", "empty-sqlite-store"):
        args += ["--dry-run"]
        expected = "no completed run to compare with"
    elif case == "unknown-model":
        args[-2:] = ["--db", "sqlite:///" + str(sqlite_file), "--baseline", shas["good"], "--dry-run",
                     "--models", "nosuchmodel"]
        expected = "nosuchmodel"
    elif case == "unknown-suite":
        args += ["--baseline", shas["good"], "--dry-run", "--suite", "nosuchsuite"]
        expected = "nosuchsuite"
    elif case == "bad-db-url":
        args[-1] = "mysql://nobody@127.0.0.1/x"
        args += ["--baseline", shas["good"], "--dry-run"]
        expected = "unsupported database"
    elif case == "no-slack-credentials":
        args += ["--baseline", shas["good"]]
        env["SLACK_BOT_TOKEN"] = ""
        expected = "no Slack credentials"
    else:
        args += ["--baseline", "v9.9-missing", "--dry-run"]
        expected = "--baseline v9.9-missing: no such revision"
    proc = harness(*args, env=env, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and expected in proc.stderr, proc.stderr
    assert run_count(pg_url) == 0 and not inspect(create_engine(pg_url)).has_table("runs")
    assert not sqlite_file.exists() and not sqlite_file.parent.exists()
    assert not slack.requests and not (root / ".harness").exists()
