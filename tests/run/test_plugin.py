"""The pytest plugin, driven through pytester as pytest-xdist's acceptance tests do."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

pytest_plugins = ["pytester"]

SAMPLE = """
import pytest

def test_pass():
    pass

def test_fail():
    assert 1 == 2, "one is not two"

@pytest.mark.parametrize("model_name", ["llama", "gemma"])
def test_model(model_name):
    pass

def test_skip():
    pytest.skip("needs a GPU")

@pytest.mark.xfail(reason="known bug")
def test_xfail():
    assert False

@pytest.fixture
def broken():
    raise RuntimeError("fixture exploded")

def test_setup_error(broken):
    pass

@pytest.mark.benchmark
def test_bench(record_property):
    import time
    time.sleep(0.35)
    record_property("harness_benchmark", {"config": "tiny", "dtype": "float32", "batch_size": 1,
                                          "prompt_length": 4, "measurements": {"time_to_first_token_secs": 0.5}})
"""

EXPECTED = {
    "test_sample.py::test_pass": "passed",
    "test_sample.py::test_fail": "failed",
    "test_sample.py::test_model[llama]": "passed",
    "test_sample.py::test_model[gemma]": "passed",
    "test_sample.py::test_skip": "skipped",
    "test_sample.py::test_xfail": "xfail",
    "test_sample.py::test_setup_error": "error",
    "test_sample.py::test_bench": "passed",
}


@pytest.mark.parametrize("xdist", [False, True], ids=["single-process", "xdist-2"])
def test_collection_error_is_recorded(pytester: pytest.Pytester, xdist: bool) -> None:
    pytester.makepyfile(test_ok="def test_ok():\n    pass\n", test_broken="import no_such_module_here\n")
    bundle = pytester.path / "out.jsonl"
    pytester.runpytest_subprocess(f"--harness-bundle={bundle}", "--continue-on-collection-errors",
                                  *(["-n", "2"] if xdist else []))
    results = {r["nodeid"]: r for r in _bundle(bundle) if r["kind"] == "result"}
    assert results["test_ok.py::test_ok"]["outcome"] == "passed"
    assert results["test_broken.py"]["outcome"] == "error"
    assert "No module named 'no_such_module_here'" in results["test_broken.py"]["message"]


def _bundle(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_inert_without_options(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HARNESS_DB_URL", raising=False)
    pytester.makepyfile(test_sample=SAMPLE)
    pytester.makeconftest("def pytest_configure(config):\n"
                          "    config.addinivalue_line('markers', 'benchmark: a benchmark')\n")
    result = pytester.runpytest()
    result.assert_outcomes(passed=4, failed=1, skipped=1, xfailed=1, errors=1)
    assert not (pytester.path / ".harness").exists()
    assert "harness:" not in result.stdout.str()


@pytest.mark.parametrize("xdist", [False, True], ids=["single-process", "xdist-2"])
def test_bundle_records_every_outcome(pytester: pytest.Pytester, xdist: bool) -> None:
    pytester.makepyfile(test_sample=SAMPLE)
    bundle = pytester.path / "out.jsonl"
    args = ["--harness-bundle", str(bundle), "--harness-suite", "slow", "--harness-models", "llama,gemma"]
    result = pytester.runpytest_subprocess(*args, *(["-n", "2"] if xdist else []))
    assert result.ret == 1
    records = _bundle(bundle)
    results = {r["nodeid"]: r for r in records if r["kind"] == "result"}
    assert {k: v["outcome"] for k, v in results.items()} == EXPECTED
    assert results["test_sample.py::test_fail"]["message"].startswith("AssertionError: one is not two")
    assert "fixture exploded" in results["test_sample.py::test_setup_error"]["message"]
    assert results["test_sample.py::test_skip"]["message"] == "Skipped: needs a GPU"
    assert results["test_sample.py::test_model[gemma]"]["model"] == "gemma"
    assert all(r["suite"] == "slow" and r["device"] == "cpu" for r in results.values())
    workers = {r["worker"] for r in results.values()}
    assert workers <= {"gw0", "gw1"} and workers if xdist else workers == {None}
    kinds = [r["kind"] for r in records]
    assert kinds[-2:] == ["run", "run_end"] and kinds.count("benchmark") == 1
    bench = next(r for r in records if r["kind"] == "benchmark")
    assert bench["measurements"] == {"time_to_first_token_secs": 0.5} and bench["config"] == "tiny"
    samples = bench["device_samples"]  # the device sampler ran around the benchmark-marked test
    assert len(samples) >= 2 and all(s["mem_megabytes"] > 0 and "cpu_util" in s for s in samples)


@pytest.mark.parametrize("xdist", [False, True], ids=["single-process", "xdist-2"])
def test_db_option_stores_rows(pytester: pytest.Pytester, db_url: str, xdist: bool) -> None:
    pytester.makepyfile(test_sample=SAMPLE)
    result = pytester.runpytest_subprocess("--harness-db", db_url, *(["-n", "2"] if xdist else []))
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*harness: run * recorded in * and stored*"])
    engine = create_engine(db_url)
    with engine.connect() as conn:
        rows = dict(conn.execute(text("SELECT nodeid, outcome FROM test_results")).all())
        run = conn.execute(text("SELECT status, commit_sha, event FROM runs")).one()
        metrics = conn.execute(text("SELECT measurements FROM model_measurements")).scalar_one()
        samples = conn.execute(text("SELECT count(*) FROM device_measurements")).scalar_one()
    engine.dispose()
    assert rows == EXPECTED
    assert run.status == "completed" and run.event == "pytest" and samples >= 2
    assert (json.loads(metrics) if isinstance(metrics, str) else metrics)["time_to_first_token_secs"] == 0.5


def test_unreachable_db_keeps_everything_in_the_bundle(pytester: pytest.Pytester, db_url: str) -> None:
    pytester.makepyfile(test_sample=SAMPLE)
    bundle = pytester.path / "b.jsonl"
    dead = "postgresql://postgres@127.0.0.1:1/nowhere"
    result = pytester.runpytest_subprocess("--harness-db", dead, "--harness-bundle", str(bundle))
    result.stdout.fnmatch_lines([f"*harness: results NOT stored*harness ingest {bundle}*"])
    assert {r["nodeid"] for r in _bundle(bundle) if r["kind"] == "result"} == set(EXPECTED)
    from harness.ingest import ingest

    for _ in range(2):  # later, twice: nothing lost, nothing duplicated
        ingest([str(bundle)], db_url)
    engine = create_engine(db_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM test_results")).scalar() == len(EXPECTED)
        assert conn.execute(text("SELECT count(*) FROM runs")).scalar() == 1
    engine.dispose()


def test_a_sidecar_that_dies_is_never_reported_stored(pytester: pytest.Pytester, db_url: str) -> None:
    """The store writer killed mid-session (OOM killer, a stray kill): pytest must not say "stored",
    only that results were NOT stored and where they are; a later ingest stores them."""
    pytester.makepyfile(test_kill="""
import os, signal, time
import psutil

def test_first():
    pass

def _cmdline(p):
    try:
        return " ".join(p.cmdline())
    except psutil.Error:  # the git probe, exited: a zombie
        return ""

def test_kill_the_store_writer():
    writers = [p for p in psutil.Process().children() if "harness.store.follow" in _cmdline(p)]
    assert len(writers) == 1
    os.kill(writers[0].pid, signal.SIGKILL)
    writers[0].wait(10)

def test_after():
    pass
""")
    bundle = pytester.path / "b.jsonl"
    result = pytester.runpytest_subprocess("--harness-db", db_url, "--harness-bundle", str(bundle))
    assert result.ret == 0
    result.stdout.fnmatch_lines([f"*harness: results NOT stored*harness ingest {bundle}*"])
    assert "and stored" not in result.stdout.str()
    from harness.ingest import ingest

    ingest([str(bundle)], db_url)
    engine = create_engine(db_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM test_results")).scalar() == 3
        assert conn.execute(text("SELECT status FROM runs")).scalar() == "completed"
    engine.dispose()


def test_a_bundle_that_cannot_be_written_is_one_usage_line(pytester: pytest.Pytester, tmp_path: Path) -> None:
    """A bundle path whose folder cannot be made: one line and pytest's usage-error exit, no test run,
    no traceback."""
    pytester.makepyfile(test_one="def test_one():\n    pass\n")
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = pytester.runpytest_subprocess(f"--harness-bundle={blocker / 'sub' / 'b.jsonl'}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: harness: cannot write the results bundle {blocker / 'sub' / 'b.jsonl'}: *"])
    out = result.stdout.str() + result.stderr.str()
    assert "Traceback" not in out and "INTERNALERROR" not in out and "passed" not in out


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux) to fail every write")
@pytest.mark.parametrize("with_db", [False, True], ids=["bundle", "bundle+db"])
def test_a_bundle_write_that_fails_mid_session_is_never_a_success(pytester: pytest.Pytester, db_url: str,
                                                                  with_db: bool) -> None:
    """Every write of the record fails (a full disk): the tests still all run, and the session says its
    results were NOT recorded and exits with pytest's internal-error status, whatever the tests did;
    never "recorded" or "stored"."""
    pytester.makepyfile(test_many="import pytest\n\n@pytest.mark.parametrize('i', range(30))\n"
                                  "def test_many(i):\n    pass\n")
    args = ["--harness-bundle=/dev/full", *([f"--harness-db={db_url}"] if with_db else [])]
    result = pytester.runpytest_subprocess(*args, timeout=120)
    assert result.ret == pytest.ExitCode.INTERNAL_ERROR
    result.stdout.fnmatch_lines(["*harness: results NOT recorded (cannot write /dev/full: No space*", "*30 passed*"])
    result.stderr.fnmatch_lines(["*harness: results NOT recorded: cannot write /dev/full*"])
    out = result.stdout.str()
    assert "and stored" not in out and "recorded in" not in out and "INTERNALERROR" not in out


def test_ctrl_c_ends_the_session_cancelled_and_stored(pytester: pytest.Pytester, db_url: str) -> None:
    """Ctrl-C in a terminal reaches pytest and the store writer alike (one process group): the writer
    lets pytest end the session, then stores every result up to the interrupt and the run as cancelled."""
    import os
    import signal
    import subprocess
    import sys
    import time

    pytester.makepyfile(test_slow="import time, pytest\n\n@pytest.mark.parametrize('i', range(400))\n"
                                  "def test_slow(i):\n    time.sleep(0.02)\n")
    bundle = pytester.path / "b.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--harness-db", db_url,
                             f"--harness-bundle={bundle}"], cwd=pytester.path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not bundle.exists() or bundle.read_text().count('"kind": "result"') < 20):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, out
    assert "and stored" in out and "NOT stored" not in out, out
    lines = [json.loads(line) for line in bundle.read_text().splitlines()]
    recorded = sum(1 for line in lines if line["kind"] == "result")
    assert 20 <= recorded < 400
    engine = create_engine(db_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT status FROM runs")).scalars().all() == ["cancelled"]
        assert conn.execute(text("SELECT count(*) FROM test_results")).scalar() == recorded
    engine.dispose()


def test_lines_the_store_refuses_are_never_reported_stored(pytester: pytest.Pytester, db_url: str) -> None:
    """Every line over a column's size (here the suite name) is refused by the store writer's checks: the
    session says NOT stored, with the first reason and the bundle to ingest, never "and stored"."""
    pytester.makepyfile(test_one="def test_one():\n    pass\n")
    result = pytester.runpytest_subprocess("--harness-db", db_url, "--harness-suite", "s" * 100)
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*harness: results NOT stored (RefusedLines: 1 line(s) of the bundle could not be "
                                 "stored (the first: suite: 100 characters, at most 64))*harness ingest*"])
    assert "and stored" not in result.stdout.str()


def test_a_long_device_name_is_cut_to_the_column_not_refused(pytester: pytest.Pytester, db_url: str,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """CUDA_VISIBLE_DEVICES may list GPU UUIDs (40 characters each): the recorded device is cut to the
    store's column, so the session's results are stored."""
    from harness.run.plugin import DEVICE_CHARS
    from harness.store.validate import LIMITS

    assert DEVICE_CHARS == LIMITS["device"]
    device = "cuda:" + ",".join(f"GPU-{i}f2d1a3b-1234-5678-9abc-def012345678" for i in range(3))
    monkeypatch.setenv("HARNESS_DEVICE", device)
    pytester.makepyfile(test_one="def test_one():\n    pass\n")
    result = pytester.runpytest_subprocess("--harness-db", db_url)
    result.stdout.fnmatch_lines(["*and stored*"])
    engine = create_engine(db_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT device FROM test_results")).scalars().all() == [device[:DEVICE_CHARS]]
    engine.dispose()
