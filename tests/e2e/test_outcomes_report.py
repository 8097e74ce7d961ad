"""Outcome paths of the reporting verbs, walked through the CLI the way users and workflows call it.

One table, one row per (verb, outcome): `harness perf-alerts`, `harness notify slack` and `harness
pipeline daily`, each on success, findings, bad input and outage. Every row runs
`python -m harness.cli ...` in a subprocess and asserts the exit code, the stderr line (or an empty
stderr) and the state left behind: rows in the store, the payload file, what Slack received.

Slack is a LOCAL RECORDING HTTP SERVER STANDING IN FOR SLACK's Web API (tests/report/fake_http.py;
SLACK_API_URL points the real slack-sdk client at it). "Slack down" is that server closed (connection
refused). The database is a real SQLite file (the embedded default); "database down" is a Postgres
URL on a port where nothing listens. The pipeline rows run real pytest in a temporary git repository
(tests/e2e/target_repo.py), whose HEAD carries a regression three commits back.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from harness.store.db import Store
from tests.e2e.target_repo import REGRESSING_TEST, make_target
from tests.report.factory import benchmark_series, cpu_regression
from tests.report.fake_http import FakeServer, Reply, Request

TOKEN = "xoxb-outcomes-secret"
DOWN_PG = "postgresql://postgres@127.0.0.1:1/harness"  # nothing listens on port 1: connection refused


class SlackStandIn:
    """Answers chat.postMessage as Slack does (ok + ts) and keeps every request."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self, req: Request) -> Reply:
        self.n += 1
        return 200, {}, {"ok": True, "channel": "C0CI", "ts": f"1700000000.{self.n:06d}"}


@dataclass
class Ctx:
    """One row's world: its folder, SQLite store, Slack stand-in and (for the pipeline) target repo."""

    tmp: Path
    slack: FakeServer
    db: str = ""
    env: dict[str, str] = field(default_factory=dict)
    facts: dict[str, object] = field(default_factory=dict)

    @property
    def out(self) -> Path:
        return self.tmp / "reports" / "slack.json"

    def rows(self, sql: str) -> list:
        """Rows of `sql`; none when the store (SQLite file or `runs` table) was never created."""
        if self.db.startswith("sqlite:///") and not Path(self.db[len("sqlite:///"):]).exists():
            return []
        engine = create_engine(self.db)
        try:
            if not inspect(engine).has_table("runs"):
                return []
            with engine.connect() as conn:
                return list(conn.execute(text(sql)).all())
        finally:
            engine.dispose()

    def target(self) -> Path:
        root = self.tmp / "target repo"  # a space in the path on purpose
        self.facts.update(make_target(root))
        return root


@dataclass(frozen=True)
class Case:
    """A row: `setup` seeds the world and returns argv; `check` asserts the state left behind."""

    name: str
    setup: Callable[[Ctx], list[str]]
    exit: int
    stderr: str | None  # regex the one stderr line must match; None: stderr is empty
    check: Callable[[Ctx, subprocess.CompletedProcess[str]], None]


# ---- perf-alerts ---------------------------------------------------------------------------------


def seed_series(step: float) -> Callable[[Ctx], list[str]]:
    def setup(ctx: Ctx) -> list[str]:
        store = Store.open(ctx.db)
        ctx.facts["commits"] = benchmark_series(store, n=40, step_at=30, step=step)
        store.dispose()
        return ["perf-alerts", "--db", ctx.db, "--repo", str(ctx.tmp / "my repo")]
    return setup


def seed_undeclared(ctx: Ctx) -> list[str]:
    """Two models' series of one metric recorded without a declaration: one stderr line, not two."""
    store = Store.open(ctx.db)
    for model in ("llama", "mistral"):
        benchmark_series(store, n=40, step_at=30, model=model, salt=model, metrics=False, declared=False,
                         extra={"mystery_score": (2.0, -0.2)})
    store.dispose()
    return ["perf-alerts", "--db", ctx.db]


def alerts_stored(n: int) -> Callable[[Ctx, subprocess.CompletedProcess[str]], None]:
    def check(ctx: Ctx, proc: subprocess.CompletedProcess[str]) -> None:
        stored = ctx.rows("SELECT metric, direction FROM perf_alerts ORDER BY metric")
        assert len(stored) == n, stored
        assert f"{n} new regression(s)" in proc.stdout.splitlines()[0]
        if n:
            assert {tuple(r) for r in stored} == {("roofline.decode_efficiency", "regression"),
                                                  ("time_to_first_token_secs", "regression")}
            bisect = [ln.strip() for ln in proc.stdout.splitlines() if ln.strip().startswith("harness bisect")]
            assert len(bisect) == 2 and all(f"--repo '{ctx.tmp / 'my repo'}'" in b for b in bisect)
    return check


def perf_bad_input(ctx: Ctx) -> list[str]:
    return ["perf-alerts", "--db", ctx.db, "--max-pvalue", "2"]


def perf_empty_store(ctx: Ctx) -> list[str]:
    Store.open(ctx.db).dispose()  # migrated, no benchmark recorded (a benchmark job that stored nothing)
    return ["perf-alerts", "--db", ctx.db]


def perf_nothing_selected(ctx: Ctx) -> list[str]:
    return [*seed_series(0.10)(ctx), "--model", "no-such-model"]


def no_alert_stored(ctx: Ctx, proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.stdout == ""
    assert ctx.rows("SELECT count(*) FROM perf_alerts")[0][0] == 0


def perf_db_down(ctx: Ctx) -> list[str]:
    return ["perf-alerts", "--db", DOWN_PG]


def nothing_stored(ctx: Ctx, proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.stdout == ""
    assert not (ctx.tmp / "store").exists()  # validated before the store was opened: nothing created


# ---- notify slack --------------------------------------------------------------------------------


def seeded_run(extra: list[str], env: dict[str, str] | None = None, slack_down: bool = False
               ) -> Callable[[Ctx], list[str]]:
    def setup(ctx: Ctx) -> list[str]:
        store = Store.open(ctx.db)
        ctx.facts["run"] = cpu_regression(store).run_id
        store.dispose()
        if slack_down:
            ctx.slack.close()
        ctx.env.update({"SLACK_BOT_TOKEN": TOKEN, "SLACK_CHANNEL": "#ci", "SLACK_API_URL": ctx.slack.url + "/api/",
                        "SLACK_RETRY_BACKOFF_S": "0.01", "SLACK_MAX_RETRIES": "1", **(env or {})})
        return ["notify", "slack", "--db", ctx.db, "--run", str(ctx.facts["run"]), "--out", str(ctx.out), *extra]
    return setup


def posted(ctx: Ctx, proc: subprocess.CompletedProcess[str]) -> None:
    posts = [r for r in ctx.slack.requests if r.path == "/api/chat.postMessage"]
    assert len(posts) == 1 + 3  # the report and one thread reply per model (gpt2, llama, mistral)
    assert proc.stdout.strip() == (f"posted the report of run {ctx.facts['run']} to Slack (4 message(s)); "
                                   f"report kept in {ctx.out}")
    saved = json.loads(ctx.out.read_text())
    assert saved["text"].startswith("🔴 Nightly CI on main: 15 failing, 13 new")
    assert TOKEN not in proc.stdout + proc.stderr + ctx.out.read_text()


def dry_run_posted_nothing(ctx: Ctx, proc: subprocess.CompletedProcess[str]) -> None:
    assert not ctx.slack.requests
    assert json.loads(proc.stdout) == json.loads(ctx.out.read_text())


def spooled_not_sent(ctx: Ctx, proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.stdout == "" and not ctx.slack.requests
    assert json.loads(ctx.out.read_text())["blocks"][0]["type"] == "header"  # the report is the file


def nothing_written(ctx: Ctx, proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.stdout == "" and not ctx.out.exists() and not ctx.slack.requests


# ---- pipeline daily ------------------------------------------------------------------------------


def pipeline(baseline: str | None, db: str | None = None, extra: tuple[str, ...] = ()) -> Callable[[Ctx], list[str]]:
    def setup(ctx: Ctx) -> list[str]:
        root = ctx.target()
        ctx.facts["root"] = root
        ctx.env.update({"SLACK_BOT_TOKEN": TOKEN, "SLACK_API_URL": ctx.slack.url + "/api/",
                        "SLACK_RETRY_BACKOFF_S": "0.01", "HARNESS_CACHE_DIR": str(ctx.tmp / "cache")})
        if db is not None:
            ctx.db = db
        args = ["pipeline", "daily", "--repo", str(root), "--runner-group", "cpu", "-n", "1", "--db", ctx.db,
                "--channel", "#model-ci", "--out", str(ctx.out), "--attempts", "1", "--retries", "1", *extra]
        if baseline:
            args += ["--baseline", str(ctx.facts[baseline])]
        return args
    return setup


STEPS = ["baseline", "run", "new failures", "confirm", "bisect", "notify", "daily"]


def step_lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    lines = proc.stdout.splitlines()
    assert [ln.split(":")[0] for ln in lines] == STEPS, proc.stdout  # readable lines, no JSON
    return lines


def daily_clean(ctx: Ctx, proc: subprocess.CompletedProcess[str]) -> None:
    lines = step_lines(proc)
    assert lines[2].startswith("new failures: 0 candidate(s)") and "1 still failing" in lines[2]
    assert lines[4] == "bisect: skipped (no confirmed new failure)"
    assert lines[5].startswith("notify: dry run, nothing posted; payload kept in")
    assert [tuple(r) for r in ctx.rows("SELECT commit_sha, status FROM runs ORDER BY id")] == [
        (ctx.facts["bad"], "completed")] * 2
    assert not ctx.slack.requests and ctx.out.is_file()


def daily_found(ctx: Ctx, proc: subprocess.CompletedProcess[str]) -> None:
    lines = step_lines(proc)
    assert lines[2].startswith("new failures: 1 candidate(s)")
    assert lines[3] == "confirm: 1 of 1 confirmed new, 0 flaky (1 rerun(s) each)"
    assert lines[4].startswith("bisect: 1 culprit(s) for 1 test(s)") and str(ctx.facts["culprit"])[:12] in lines[4]
    assert lines[5].startswith("notify: posted") and lines[6].endswith("(exit 1)")
    culprits = ctx.rows("SELECT nodeid, commit_sha FROM culprits")
    assert [tuple(c) for c in culprits] == [(REGRESSING_TEST, ctx.facts["culprit"])]
    assert any(r.path == "/api/chat.postMessage" for r in ctx.slack.requests)


def daily_wrote_nothing(ctx: Ctx, proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.stdout == "" and not ctx.slack.requests
    assert not (ctx.tmp / "store").exists()  # the SQLite file, and its folder, were never created
    assert not (Path(str(ctx.facts["root"])) / ".harness").exists()  # no bundle, no run


CASES = [
    Case("perf-alerts:success", seed_series(0.0), 0, None, alerts_stored(0)),
    Case("perf-alerts:findings", seed_series(0.10), 1, None, alerts_stored(2)),
    Case("perf-alerts:undeclared", seed_undeclared, 0,
         r"^harness: not alerting on mystery_score: it declares no direction \(higher or lower is better\)",
         alerts_stored(0)),
    Case("perf-alerts:empty-store", perf_empty_store, 2,
         r"^harness: the store has no benchmark results: nothing analysed", no_alert_stored),
    Case("perf-alerts:nothing-selected", perf_nothing_selected, 2,
         r"^harness: no benchmark series match --model no-such-model: nothing analysed$", no_alert_stored),
    Case("perf-alerts:bad-input", perf_bad_input, 2,
         r"^harness: --max-pvalue 2.0 must be between 0 and 1 \(default 0.001\)$", nothing_stored),
    Case("perf-alerts:db-down", perf_db_down, 2, r"^harness: cannot connect to postgresql://postgres@127.0.0.1:1/",
         lambda ctx, proc: None),
    Case("notify:success", seeded_run([]), 0, None, posted),
    Case("notify:dry-run", seeded_run(["--dry-run"], env={"SLACK_BOT_TOKEN": ""}), 0, None, dry_run_posted_nothing),
    Case("notify:bad-input", seeded_run([], env={"SLACK_BOT_TOKEN": ""}), 2,
         r"^harness: no Slack credentials: set SLACK_BOT_TOKEN", nothing_written),
    Case("notify:unknown-run", lambda ctx: [*seeded_run([])(ctx)[:-4], "--run", "999999", "--out", str(ctx.out)], 2,
         r"^harness: no run 999999 in the store$", nothing_written),
    Case("notify:slack-down", seeded_run([], slack_down=True), 0,
         r"^harness: report of run \d+ NOT sent to Slack \(.+\); payload kept in .+slack\.json$", spooled_not_sent),
    Case("pipeline:success", pipeline("bad", extra=("--dry-run",)), 0, None, daily_clean),
    Case("pipeline:findings", pipeline("good"), 1, None, daily_found),
    Case("pipeline:empty-store", pipeline(None, extra=("--dry-run",)), 2,
         r"^harness: the store has no completed run to compare with: pass --baseline REV", daily_wrote_nothing),
    Case("pipeline:db-down", pipeline("good", db=DOWN_PG, extra=("--dry-run",)), 2,
         r"^harness: cannot connect to postgresql://postgres@127.0.0.1:1/", daily_wrote_nothing),
]


@pytest.fixture
def slack() -> Iterator[FakeServer]:
    server = FakeServer(SlackStandIn())
    yield server
    try:
        server.close()
    except OSError:  # already closed by a "Slack down" row
        pass


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_outcome(case: Case, tmp_path: Path, slack: FakeServer) -> None:
    ctx = Ctx(tmp_path, slack, db=f"sqlite:///{tmp_path / 'store' / 'results.db'}")
    ctx.env.update({"HARNESS_DB_URL": "", "SLACK_BOT_TOKEN": "", "SLACK_WEBHOOK_URL": "", "SLACK_CHANNEL": "",
                    "FLAKY_MARKER": ""})
    argv = case.setup(ctx)
    env = {**os.environ, **ctx.env}
    env.pop("PYTEST_XDIST_WORKER", None)
    proc = subprocess.run([sys.executable, "-m", "harness.cli", *argv], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == case.exit, proc.stdout + proc.stderr
    if case.stderr is None:
        assert proc.stderr == "", proc.stderr
    else:
        assert proc.stderr.count("\n") == 1 and re.search(case.stderr, proc.stderr), proc.stderr
    case.check(ctx, proc)
