"""`harness run`'s outcome paths, walked through the CLI in a subprocess the way users and workflows call
it: one table row per path, each asserting the exit code, the one stderr line and the stored state
(real Postgres; the target is a real git repository in a temporary folder)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
from sqlalchemy import create_engine, text

from tests.run.test_run_cli import make_repo

OK_TESTS = "def test_a():\n    pass\n\ndef test_b():\n    pass\n"
FAILING_TESTS = OK_TESTS + "\ndef test_c():\n    assert 1 == 2, 'one is not two'\n"
SLEEPY_TESTS = "import time\n\ndef test_a():\n    pass\n\ndef test_sleep():\n    time.sleep(120)\n"
RECORD_TESTS = '''
class Version(str):  # like torch.__version__ (torch.torch_version.TorchVersion): execnet cannot send it
    pass

class Count(int):
    pass

import pytest

@pytest.mark.parametrize("model_name", ["llama"])
def test_bench(record_property, model_name):
    record_property("harness_benchmark", {
        "model": "llama", "config": "tiny", "dtype": "float32", "batch_size": Count(1), "prompt_length": 16,
        "torch_version": Version("2.13.0"), "measurements": {"time_to_first_token_secs": 0.5,
                                                            "shape": (1, 16)}})

def test_unrecordable(record_property):
    record_property("harness_benchmark", {"model": "llama", "measurements": {"weights": object()}})
'''
INTERNAL_ERROR_CONFTEST = '''
import os

def pytest_runtest_logreport(report):
    if os.environ.get("PYTEST_XDIST_WORKER") and report.when == "call" and report.nodeid.endswith("test_a"):
        raise RuntimeError("worker hook exploded")
'''


def env_for(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HARNESS_", "PYTEST_"))}
    env.update(HARNESS_PROGRESS_S="0", **extra)
    return env


def harness_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "harness.cli", "run", *args]


def query(url: str, sql: str, **params: object) -> list:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(text(sql), params).all()
    finally:
        engine.dispose()


def harness_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("harness: ")]


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def wait_for(predicate: Callable[[], object], timeout: float = 60.0, what: str = "condition") -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@dataclass
class Ctx:
    """One scenario's world: the target repo, the Postgres URL, the finished process."""

    repo: Path
    cwd: Path
    db: str
    proc: subprocess.CompletedProcess[str] | None = None
    extra: dict[str, object] = field(default_factory=dict)


@dataclass
class Scenario:
    files: dict[str, str]
    args: list[str]
    code: int
    line: str | None  # regex the one `harness:` stderr line must match (None: no such line)
    check: Callable[[Ctx], None]
    db: str = "pg"  # "pg" | a URL template ({nodb}: a database that does not exist)
    drive: str = "wait"  # "wait" | "sigint" | "sigterm" | "kill9"
    env: dict[str, str] = field(default_factory=dict)


def runs(ctx: Ctx) -> list:
    return query(ctx.db, "SELECT uuid, status, heartbeat_at FROM runs ORDER BY id")


def results(ctx: Ctx) -> dict[str, tuple]:
    return {r.nodeid: (r.outcome, r.model, r.message) for r in
            query(ctx.db, "SELECT nodeid, outcome, model, message FROM test_results")}


def check_success(ctx: Ctx) -> None:
    assert [r.status for r in runs(ctx)] == ["completed"]
    assert {k: v[0] for k, v in results(ctx).items()} == {"tests/test_t.py::test_a": "passed",
                                                           "tests/test_t.py::test_b": "passed"}


def check_failures(ctx: Ctx) -> None:
    assert [r.status for r in runs(ctx)] == ["completed"]
    assert results(ctx)["tests/test_t.py::test_c"][0] == "failed"
    assert json.loads(ctx.proc.stdout)["counts"]["failed"] == 1


def check_nothing_written(ctx: Ctx) -> None:
    assert not (ctx.cwd / ".harness").exists()
    if ctx.db.startswith("postgresql") and "harness_no_such" not in ctx.db:
        assert query(ctx.db, "SELECT count(*) FROM information_schema.tables WHERE table_name = 'runs'")[0][0] == 0


def check_pytest_failed(ctx: Ctx) -> None:
    out = json.loads(ctx.proc.stdout)
    assert out["status"] == "failed" and out["complete"] is False
    assert [r.status for r in runs(ctx)] == ["failed"]
    assert results(ctx) == {}


def check_internal_error(ctx: Ctx) -> None:
    assert [r.status for r in runs(ctx)] == ["failed"]
    got = results(ctx)
    assert got["tests/test_t.py::test_a"][0] == "error"
    assert "no final report: pytest INTERNALERROR: RuntimeError: worker hook exploded" in got["tests/test_t.py::test_a"][2]
    assert all(outcome != "passed" for outcome, _, _ in got.values()), got


def check_outage(ctx: Ctx) -> None:
    out = json.loads(ctx.proc.stdout)
    assert out["stored"] is False and out["counts"]["passed"] == 2
    ingest = subprocess.run([sys.executable, "-m", "harness.cli", "ingest", out["bundle"], "--db", ctx.extra["pg"]],
                            cwd=ctx.cwd, capture_output=True, text=True, env=env_for(), timeout=120)
    assert ingest.returncode == 0, ingest.stderr
    assert query(str(ctx.extra["pg"]), "SELECT count(*) FROM test_results")[0][0] == 2


def check_cancelled(ctx: Ctx) -> None:
    assert [r.status for r in runs(ctx)] == ["cancelled"]
    got = results(ctx)
    assert got["tests/test_t.py::test_a"][0] == "passed"
    if "tests/test_t.py::test_sleep" in got:  # cut short: never a pass
        assert got["tests/test_t.py::test_sleep"][::2] == ("error", "no final report: the session was interrupted")
    assert not [p.pid for p in ctx.extra["children"] if _alive(p)]


def check_killed(ctx: Ctx) -> None:
    assert ctx.extra["survivors"] == []
    assert [r.status for r in runs(ctx)] == ["running"]  # nobody was left to say otherwise...
    time.sleep(1.5)
    nxt = subprocess.run(harness_cmd("--repo", str(ctx.repo), "--db", ctx.db, "-n", "1", "--json"),
                         cwd=ctx.cwd, capture_output=True, text=True, timeout=300,
                         env=env_for(HARNESS_HEARTBEAT_LIMIT_S="1", SKIP_SLEEP="1"))
    assert nxt.returncode == 0, nxt.stderr
    killed = ctx.extra["uuid"]
    assert any(re.fullmatch(rf"harness: marked 1 run\(s\) abandoned \(no heartbeat for 1s\): {killed}", ln)
               for ln in harness_lines(nxt.stderr)), nxt.stderr
    assert [r.status for r in runs(ctx)] == ["abandoned", "completed"]  # ...until the next writer came


def check_records(ctx: Ctx) -> None:
    got = results(ctx)
    assert got["tests/test_t.py::test_bench[llama]"][:2] == ("passed", "llama")
    outcome, _, message = got["tests/test_t.py::test_unrecordable"]
    assert outcome == "error" and "harness_benchmark.measurements.weights is object" in message
    bench = query(ctx.db, "SELECT b.model, b.batch_size, m.measurements FROM benchmarks b "
                          "JOIN model_measurements m USING (benchmark_id)")
    assert [(b.model, b.batch_size, b.measurements["shape"]) for b in bench] == [("llama", 1, [1, 16])]
    assert [r.status for r in runs(ctx)] == ["completed"]


def _check_empty_completed(ctx: Ctx) -> None:
    assert [r.status for r in runs(ctx)] == ["completed"] and results(ctx) == {}
    assert json.loads(ctx.proc.stdout)["counts"]["passed"] == 0


SLEEPY_GUARD = """import os, subprocess, sys, time

def test_a():
    pass

def test_sleep():  # with a process of its own, which must not outlive the run either
    if not os.environ.get('SKIP_SLEEP'):
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        time.sleep(120)
"""

SCENARIOS: dict[str, Scenario] = {
    "success": Scenario({"tests/test_t.py": OK_TESTS}, [], 0, None, check_success),
    "failures-found": Scenario({"tests/test_t.py": FAILING_TESTS}, [], 1, None, check_failures),
    "nothing-selected": Scenario({"tests/test_t.py": "HELPER = 1\n"}, [], 0, r"harness: suite all: no test selected",
                                 lambda ctx: _check_empty_completed(ctx)),
    "bad-input-unknown-model": Scenario({"tests/test_t.py": OK_TESTS}, ["--models", "lama"], 2,
                                        r"harness: unknown model 'lama'.*", check_nothing_written),
    "bad-input-flag": Scenario({"tests/test_t.py": OK_TESTS}, ["--modles", "llama"], 2,
                               r"harness: No such option: --modles.*", check_nothing_written),
    "pytest-usage-error": Scenario(
        {"tests/test_t.py": OK_TESTS, "pytest.ini": "[pytest]\naddopts = --no-such-flag\n"}, [], 2,
        r"harness: suite all: pytest could not run \(usage error, exit 4\): .*error: unrecognized arguments: "
        r"--no-such-flag \(log: .*\)", check_pytest_failed),
    "pytest-internal-error": Scenario(
        {"tests/test_t.py": OK_TESTS, "tests/conftest.py": INTERNAL_ERROR_CONFTEST}, [], 2,
        r"harness: suite all: pytest could not run \(internal error, exit 3\): pytest INTERNALERROR: "
        r"RuntimeError: worker hook exploded \(log: .*\)", check_internal_error),
    "db-config-error": Scenario({"tests/test_t.py": OK_TESTS}, [], 2,
                                r"harness: database postgresql://postgres@127\.0\.0\.1:5432/harness_no_such_\w+ "
                                r"refused the connection \(database \"harness_no_such_\w+\" does not exist, "
                                r"SQLSTATE 3D000\): fix --db / HARNESS_DB_URL", check_nothing_written,
                                db="postgresql://postgres@127.0.0.1:5432/{nodb}"),
    "db-outage": Scenario({"tests/test_t.py": OK_TESTS}, [], 0,
                          r"harness: results NOT stored in postgresql://postgres@127\.0\.0\.1:1/nowhere "
                          r"\(cannot connect to .*Connection refused.*\); every result is in .*", check_outage,
                          db="postgresql://postgres@127.0.0.1:1/nowhere"),
    "interrupted": Scenario({"tests/test_t.py": SLEEPY_TESTS}, [], 130,
                            r"harness: interrupted: run [0-9a-f-]{36} cancelled after \d result\(s\); they are in .*",
                            check_cancelled, drive="sigint"),
    "terminated": Scenario({"tests/test_t.py": SLEEPY_TESTS}, [], 130,
                           r"harness: interrupted: run [0-9a-f-]{36} cancelled after \d result\(s\); they are in .*",
                           check_cancelled, drive="sigterm"),
    "kill-9": Scenario({"tests/test_t.py": SLEEPY_GUARD}, [], -9, None, check_killed, drive="kill9"),
    "benchmark-record": Scenario({"tests/test_t.py": RECORD_TESTS}, [], 1, None, check_records),
}


def _drive_live(ctx: Ctx, scenario: Scenario, cmd: list[str]) -> None:
    """Start the run, wait until `test_a` is stored and `test_sleep` is running, then signal it."""
    # As from a terminal: SIGINT handled (a shell's background job would start with it ignored).
    proc = subprocess.Popen(cmd, cwd=ctx.cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env_for(HARNESS_HEARTBEAT_LIMIT_S="600", **scenario.env),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        wait_for(lambda: query(ctx.db, "SELECT 1 FROM test_results") if _has_runs(ctx.db) else None,
                 what="the first result in the store")
        ctx.extra["uuid"] = runs(ctx)[0].uuid
        marker = "time.sleep(120)" if scenario.drive == "kill9" else "sys.stdin.readline"  # test's own / worker
        children = wait_for(lambda: [p for p in descendants(proc.pid) if marker in " ".join(_cmdline(p))]
                            and descendants(proc.pid), what="pytest, its worker and what the test started")
        ctx.extra["children"] = children
        if scenario.drive in ("sigint", "sigterm"):
            proc.send_signal(signal.SIGINT if scenario.drive == "sigint" else signal.SIGTERM)
        else:
            proc.kill()
        out, err = proc.communicate(timeout=60)
        if scenario.drive == "kill9":
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and any(_alive(p) for p in children):
                time.sleep(0.2)
            ctx.extra["survivors"] = [p.pid for p in children if _alive(p)]
        ctx.proc = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
    finally:
        if proc.poll() is None:
            proc.kill()
        for p in ctx.extra.get("children", []):
            if _alive(p):
                p.kill()


def _has_runs(url: str) -> bool:
    return bool(query(url, "SELECT count(*) FROM information_schema.tables WHERE table_name = 'test_results'")[0][0])


def _cmdline(p: psutil.Process) -> list[str]:
    try:
        return p.cmdline()
    except psutil.Error:
        return []


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_run_outcome(name: str, tmp_path: Path, pg_url: str) -> None:
    scenario = SCENARIOS[name]
    repo = tmp_path / "target"
    make_repo(repo, scenario.files)
    cwd = tmp_path / "work"
    cwd.mkdir()
    db = pg_url if scenario.db == "pg" else scenario.db.format(nodb=f"harness_no_such_{uuid.uuid4().hex[:8]}")
    ctx = Ctx(repo=repo, cwd=cwd, db=db, extra={"pg": pg_url})
    cmd = harness_cmd("--repo", str(repo), "--db", db, "-n", "1", "--json", *scenario.args)
    if scenario.drive == "wait":
        ctx.proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300,
                                  env=env_for(**scenario.env))
    else:
        _drive_live(ctx, scenario, cmd)
    proc = ctx.proc
    assert proc.returncode == scenario.code, proc.stderr
    lines = harness_lines(proc.stderr)
    if scenario.line is None:
        assert lines == [], proc.stderr
    else:
        assert len(lines) == 1 and re.fullmatch(scenario.line, lines[0]), proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    scenario.check(ctx)


BENCH_PANELS = ("Eager forward pass", "Time to first / second / third token", "Next token (mean)",
                "Compiled generate, calls 1-4", "Roofline efficiency", "Device usage per benchmark",
                "Benchmarks by commit")


def test_benchmark_suite_through_the_cli_lands_in_postgres_and_the_panels(tmp_path: Path, pg_url: str) -> None:
    """`harness run --suite benchmark` as a user runs it (xdist worker, tiny shapes on the CPU): the record
    crosses the worker boundary, every table the benchmark dashboard reads has rows, and each panel's
    SQL (macros expanded as Grafana does) returns this run's benchmark."""
    from harness.report.dashboards import boards
    from tests.report.grafana_sql import expand

    root = Path(__file__).resolve().parents[2]
    env = env_for(HARNESS_BENCH_SHAPES="tiny", HARNESS_BENCH_DEVICE="cpu", HARNESS_BENCH_NEW_TOKENS="8",
                  HARNESS_BENCH_REPEATS="2", HARNESS_SAMPLE_INTERVAL_S="0.05")
    proc = subprocess.run(harness_cmd("--repo", str(root), "--models", "llama", "--suite", "benchmark",
                                      "--runner-group", "single-gpu", "-n", "1", "--db", pg_url, "--json"),
                          cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["status"] == "completed" and out["stored"] is True, out
    [result] = out["results"]
    assert (result["model"], result["suite"], result["outcome"]) == ("llama", "benchmark", "passed")
    assert query(pg_url, "SELECT status FROM runs")[0][0] == "completed"
    bench = query(pg_url, "SELECT benchmark_id, model, config, dtype, run_id FROM benchmarks")
    assert [(b.model, b.config, b.dtype) for b in bench] == [("llama", "tiny", "float32")]
    measured = query(pg_url, "SELECT measurements FROM model_measurements")[0][0]
    assert measured["time_to_first_token_secs"] > 0 and "decode_efficiency" in measured["roofline"]
    assert query(pg_url, "SELECT count(*) FROM device_measurements WHERE cpu_util IS NOT NULL")[0][0] >= 1
    board = next(b for b in boards() if b.uid == "harness-benchmarks")
    panels = {q.where: q for q in board.queries}
    engine = create_engine(pg_url)
    with engine.connect() as conn:
        variables: dict[str, list[str]] = {}
        for var in board.variables:
            if var["type"] == "custom":
                variables[var["name"]] = [var["current"]["value"]]
            else:
                variables[var["name"]] = [r["__value"] for r in
                                          conn.execute(text(expand(var["query"], variables))).mappings()]
        assert variables["model"] == ["llama"]
        empty = [t for t in BENCH_PANELS if not conn.execute(text(expand(panels[t].sql, variables))).all()]
    engine.dispose()
    assert empty == [], f"benchmark panels without rows for this run: {empty}"
