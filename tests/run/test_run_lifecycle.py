"""What `harness run` relies on for honest verdicts: JSON-plain records across xdist, lost reports as
errors, heartbeats and `abandoned`, refused database URLs, progress and its ETA."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from harness.bundle import NotJSONError, ResultRecord, RunRecord, plain_json
from harness.errors import HarnessError
from harness.run.summary import SuiteProgress, format_eta
from harness.store import Store, lifecycle
from harness.store.refusal import refusal
from harness.store.schema import nodeid_hash, utcnow
from harness.store.writer import write_records

from .test_run_cli import make_repo

pytest_plugins = ["pytester"]


class Version(str):
    """Like torch.torch_version.TorchVersion: a str subclass execnet refuses to send."""


class Scalar:
    """Like a numpy scalar or a 0-d tensor: `.item()` gives the Python value."""

    ndim = 0

    def __init__(self, value: float) -> None:
        self.value = value

    def item(self) -> float:
        return self.value


def test_plain_json_coerces_subclasses_and_scalars() -> None:
    got = plain_json({"v": Version("2.13.0"), "t": (1, Scalar(0.5)), 3: True, "n": None}, "rec")
    assert got == {"v": "2.13.0", "t": [1, 0.5], "3": True, "n": None}
    assert type(got["v"]) is str and json.loads(json.dumps(got)) == got


@pytest.mark.parametrize(("value", "path"), [
    ({"measurements": {"weights": object()}}, "rec.measurements.weights is object"),
    ({"m": [1.0, math.nan]}, "rec.m[1] is float (nan)"),
    ({"m": {(1, 2): 1}}, "rec.m key (1, 2)"),
    ({"b": b"bytes"}, "rec.b is bytes"),
])
def test_plain_json_names_the_field_it_cannot_convert(value: object, path: str) -> None:
    with pytest.raises(NotJSONError) as err:
        plain_json(value, "rec")
    assert str(err.value).startswith(path)


RECORDING = '''
import pytest

class Version(str):
    pass

@pytest.mark.parametrize("model_name", ["llama"])
def test_record(record_property, model_name):
    record_property("harness_benchmark", {"config": "tiny", "torch_version": Version("2.13"),
                                          "measurements": {"ttft": 0.5}})
    record_property("other_plugin", object())

def test_unrecordable(record_property):
    record_property("harness_benchmark", {"measurements": {"weights": object()}})
'''


@pytest.mark.parametrize("xdist", [False, True], ids=["single-process", "xdist-2"])
def test_records_cross_xdist_as_json_and_a_bad_one_is_an_error(pytester: pytest.Pytester, xdist: bool) -> None:
    pytester.makepyfile(test_rec=RECORDING)
    bundle = pytester.path / "b.jsonl"
    result = pytester.runpytest_subprocess(f"--harness-bundle={bundle}", "--harness-models=llama",
                                           *(["-n", "2"] if xdist else []))
    assert result.ret == 0 and "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    records = [json.loads(line) for line in bundle.read_text().splitlines()]
    results = {r["nodeid"]: r for r in records if r["kind"] == "result"}
    assert (results["test_rec.py::test_record[llama]"]["outcome"], results["test_rec.py::test_record[llama]"]["model"]) \
        == ("passed", "llama")
    bad = results["test_rec.py::test_unrecordable"]
    assert bad["outcome"] == "error"
    assert bad["message"] == "record not stored: harness_benchmark.measurements.weights is object, not a JSON value"
    [bench] = [r for r in records if r["kind"] == "benchmark"]
    assert bench["model"] == "llama" and bench["measurements"] == {"ttft": 0.5}


WORKER_INTERNAL_ERROR = '''
import os

def pytest_runtest_logreport(report):
    if os.environ.get("PYTEST_XDIST_WORKER") and report.when == "call" and report.nodeid.endswith("test_a"):
        raise RuntimeError("worker hook exploded")
'''


def test_worker_internal_error_is_exit_3_and_no_test_passes(pytester: pytest.Pytester) -> None:
    """xdist alone exits 0 ("no tests ran") after a worker's INTERNALERROR; with the plugin it is exit 3
    and every test without a final report is an error saying why."""
    pytester.makeconftest(WORKER_INTERNAL_ERROR)
    pytester.makepyfile(test_x="def test_a():\n    pass\n\ndef test_b():\n    pass\n")
    bundle = pytester.path / "b.jsonl"
    result = pytester.runpytest_subprocess(f"--harness-bundle={bundle}", "-n", "1")
    assert result.ret == 3
    assert "harness: pytest INTERNALERROR: RuntimeError: worker hook exploded" in result.stderr.str()
    results = {r["nodeid"]: r for r in map(json.loads, bundle.read_text().splitlines()) if r["kind"] == "result"}
    assert results["test_x.py::test_a"]["outcome"] == "error"
    assert results["test_x.py::test_a"]["message"] == \
        "no final report: pytest INTERNALERROR: RuntimeError: worker hook exploded"
    assert results["test_x.py::test_b"] == {**results["test_x.py::test_b"], "outcome": "error",
                                            "message": "not run: pytest INTERNALERROR: RuntimeError: worker hook "
                                                       "exploded"}


def _run(store: Store, uuid: str, minutes_ago: float, heartbeat_minutes_ago: float | None = None) -> None:
    started = (utcnow() - timedelta(minutes=minutes_ago)).isoformat()
    write_records(store, [RunRecord(uuid=uuid, started_at=started, suites="slow")])
    if heartbeat_minutes_ago is not None:
        lifecycle.beat(store, uuid, now=utcnow() - timedelta(minutes=heartbeat_minutes_ago))


def test_stale_running_runs_are_abandoned_by_the_next_writer(store: Store) -> None:
    _run(store, "old-silent", minutes_ago=30)  # never beat: judged by its start
    _run(store, "old-beating", minutes_ago=30, heartbeat_minutes_ago=1)  # long run, alive
    _run(store, "old-dead", minutes_ago=30, heartbeat_minutes_ago=20)  # beat, then died
    _run(store, "fresh", minutes_ago=1)
    assert sorted(lifecycle.mark_abandoned(store, limit_s=600)) == ["old-dead", "old-silent"]
    assert {u: lifecycle.run_status(store, u) for u in ("old-silent", "old-beating", "old-dead", "fresh")} == {
        "old-silent": "abandoned", "old-beating": "running", "old-dead": "abandoned", "fresh": "running"}
    assert lifecycle.mark_abandoned(store, limit_s=600) == []  # idempotent
    assert lifecycle.beat(store, "old-dead") is False  # an ended run takes no heartbeat


def test_heartbeat_limit_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(lifecycle.LIMIT_ENV, raising=False)
    assert lifecycle.heartbeat_limit_s() == 600.0
    monkeypatch.setenv(lifecycle.LIMIT_ENV, "30")
    assert lifecycle.heartbeat_limit_s() == 30.0
    monkeypatch.setenv(lifecycle.LIMIT_ENV, "soon")
    with pytest.raises(HarnessError, match="HARNESS_HEARTBEAT_LIMIT_S='soon': expected a positive number"):
        lifecycle.heartbeat_limit_s()


def test_recent_durations_read_the_last_completed_run_of_the_suite(store: Store) -> None:
    from harness.bundle import RunEnd

    assert lifecycle.recent_durations(store, "slow") == {}
    for uuid, dur, status in (("r1", 1.0, "completed"), ("r2", 2.0, "completed"), ("r3", 9.0, "cancelled")):
        write_records(store, [RunRecord(uuid=uuid, suites="slow"),
                              ResultRecord(run=uuid, nodeid="t.py::a", outcome="passed", duration_s=dur, suite="slow"),
                              RunEnd(run=uuid, status=status, finished_at=utcnow().isoformat())])
    assert lifecycle.recent_durations(store, "slow") == {nodeid_hash("t.py::a"): 2.0}
    assert lifecycle.recent_durations(store, "slow", exclude_uuid="r2") == {nodeid_hash("t.py::a"): 1.0}
    assert lifecycle.recent_durations(store, "fa2") == {}


@pytest.mark.parametrize(("url", "expected"), [
    ("postgresql://postgres@127.0.0.1:5432/harness_no_such_db_h1", ("3D000", 'database "harness_no_such_db_h1" '
                                                                            "does not exist")),
    ("postgresql://harness_no_such_role@127.0.0.1:5432/postgres", ("28000", 'role "harness_no_such_role" does '
                                                                           "not exist")),
    ("postgresql://postgres@127.0.0.1:1/postgres", None),  # connection refused: an outage, not a refusal
])
def test_refusal_tells_configuration_errors_from_outages(url: str, expected: tuple[str, str] | None) -> None:
    with pytest.raises(Exception) as err:  # noqa: PT011 - whatever Store.open raises is classified
        Store.open(url)
    assert refusal(err.value) == expected


def test_eta_from_history_then_from_the_run_itself() -> None:
    ids = [f"t.py::t{i}" for i in range(4)]
    sp = SuiteProgress("slow", workers=2, started=100.0)
    sp.collected(ids, {nodeid_hash(i): 10.0 for i in ids[:3]})  # history for 3 of 4 tests
    assert sp.eta_s(now=100.0) == pytest.approx(20.0)  # 40 s of tests (4th at the mean) over 2 workers
    sp.result(ResultRecord(run="r", nodeid=ids[0], outcome="failed", duration_s=5.0))
    # left: 10 + 10 s from history, 5 s (this run's mean) for the 4th; 5 s of test time took 4 s of wall
    assert sp.eta_s(now=104.0) == pytest.approx(25.0 * 4 / 5)
    assert sp.line(now=104.0) == "slow: 1/4 done, 1 failed, ETA 20s"
    fresh = SuiteProgress("fa2", started=0.0)
    assert fresh.eta_s(now=1.0) is None and fresh.line(now=1.0) == "fa2: 0/? done, 0 failed, ETA ?"
    fresh.collected(ids, {})
    fresh.result(ResultRecord(run="r", nodeid=ids[0], outcome="passed", duration_s=0.0))
    assert fresh.eta_s(now=3.0) == pytest.approx(9.0)  # running average: 3 s per test, 3 left
    assert [format_eta(s) for s in (None, 5, 80, 7500)] == ["?", "5s", "1m20s", "2h05m"]


def test_plain_progress_lines_when_stderr_is_not_a_terminal(tmp_path: Path) -> None:
    make_repo(tmp_path / "t", {"tests/test_p.py": "import time\n\ndef test_a():\n    time.sleep(2.5)\n\n"
                                                   "def test_b():\n    pass\n"})
    env = {k: v for k, v in os.environ.items() if not k.startswith("HARNESS_")}
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "run", "--repo", str(tmp_path / "t"), "-n", "1",
                           "--db", f"sqlite:///{tmp_path / 'r.db'}", "--json"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env={**env, "HARNESS_PROGRESS_S": "0.5"})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines and all(re.fullmatch(r"all: [0-2]/[?2] done, 0 failed, ETA (\?|\d+s)", ln) for ln in lines), lines
    assert any(re.fullmatch(r"all: [01]/2 done, 0 failed, ETA .*", ln) for ln in lines), lines


def test_live_display_shows_total_and_eta_per_suite() -> None:
    import io

    from rich.console import Console

    from harness.run.summary import LiveProgress

    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=120)
    with LiveProgress(console, enabled=True, workers=1) as progress:
        progress.suite("slow")
        progress.collected("slow", ["t.py::a", "t.py::b"], {nodeid_hash("t.py::a"): 2.0, nodeid_hash("t.py::b"): 2.0})
        progress.result(ResultRecord(run="r", nodeid="t.py::a", outcome="passed", duration_s=2.0, suite="slow"))
        progress.tick()
    text = buf.getvalue()
    assert "suite slow" in text and "1/2" in text and re.search(r"ETA \d+s", text), text
