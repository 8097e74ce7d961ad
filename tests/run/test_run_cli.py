"""`harness run` and `harness ingest` end to end on temporary git repos, against real databases."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import git
import pytest
from sqlalchemy import create_engine, text

from harness.cli import main

ROOT = Path(__file__).resolve().parents[2]
LONG_ID = "x" * 10_000

TARGET_TESTS = f'''
import os, time
import pytest

def test_ok():
    pass

def test_fail():
    assert 1 == 2, "boom"

@pytest.mark.parametrize("name", ["it's \\"q\\"", "1'); DROP TABLE runs; --", "ünï-🦙", "{LONG_ID}"], ids=str)
def test_awkward(name):
    pass

def test_ünïcødé_日本():
    pass

def test_segfault():
    import ctypes
    ctypes.string_at(0)

def test_exit():
    os._exit(3)

def test_hang():
    time.sleep(60)

def test_after():
    pass
'''

EXPECTED_OUTCOMES = {"passed": 7, "failed": 1, "crashed": 2, "timeout": 1}


def make_repo(path: Path, files: dict[str, str], message: str = "init") -> git.Repo:
    path.mkdir(parents=True, exist_ok=True)
    repo = git.Repo.init(path, initial_branch="main")
    for name, body in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(body)
    repo.index.add(list(files))
    actor = git.Actor("Ada Lovelace", "ada@example.com")
    repo.index.commit(message, author=actor, committer=actor)
    return repo


def harness(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


def rows(db_url: str, sql: str) -> list:
    engine = create_engine(db_url)
    with engine.connect() as conn:
        out = conn.execute(text(sql)).all()
    engine.dispose()
    return out


@pytest.fixture
def target(tmp_path: Path) -> Path:
    make_repo(tmp_path / "target", {"tests/test_target.py": TARGET_TESTS}, "Add target tests (#42)")
    return tmp_path / "target"


def test_run_records_crashes_timeouts_and_awkward_names(target: Path, db_url: str) -> None:
    proc = harness("run", "--repo", str(target), "--db", db_url, "--timeout", "2", "-n", "2", "--json", cwd=target)
    assert proc.returncode == 1, proc.stderr
    out = json.loads(proc.stdout)
    assert out["stored"] is True and out["runner_group"] == "cpu"
    assert {k: v for k, v in out["counts"].items() if v} == EXPECTED_OUTCOMES
    assert out["commit"] == git.Repo(target).head.commit.hexsha
    by_test = {r["test"]: r for r in out["results"]}
    assert by_test["tests/test_target.py::test_after"]["outcome"] == "passed"  # the suite went on
    assert by_test["tests/test_target.py::test_hang"]["outcome"] == "timeout"
    stored = rows(db_url, "SELECT nodeid, outcome, worker, device FROM test_results")
    assert {r.nodeid for r in stored} == set(by_test)
    assert any(r.nodeid.endswith(f"[{LONG_ID}]") for r in stored)
    assert any("DROP TABLE runs" in r.nodeid for r in stored) and any("test_ünïcødé_日本" in r.nodeid for r in stored)
    run = rows(db_url, "SELECT branch, commit_subject, commit_author, status, runner_group, python_version, "
                       "finished_at FROM runs")[0]
    assert (run.branch, run.commit_subject, run.commit_author) == ("main", "Add target tests (#42)", "Ada Lovelace")
    assert run.status == "completed" and run.runner_group == "cpu" and run.finished_at is not None
    # Re-ingesting the run's bundle adds nothing.
    again = harness("ingest", out["bundle"], "--db", db_url, "--json", cwd=target)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["added"]["results"] == 0
    assert rows(db_url, "SELECT count(*) FROM test_results")[0][0] == len(by_test)


def test_database_unreachable_at_start(target: Path, db_url: str) -> None:
    dead = "postgresql://postgres@127.0.0.1:1/nowhere"
    proc = harness("run", "--repo", str(target), "--db", dead, "--timeout", "2", "--json", cwd=target)
    assert proc.returncode == 1
    out = json.loads(proc.stdout)
    assert out["stored"] is False
    lines = [ln for ln in proc.stderr.splitlines() if "NOT stored" in ln]
    assert len(lines) == 1 and f"harness ingest {out['bundle']}" in lines[0]
    for _ in range(2):
        assert harness("ingest", out["bundle"], "--db", db_url, cwd=target).returncode == 0
    assert rows(db_url, "SELECT count(*) FROM test_results")[0][0] == sum(EXPECTED_OUTCOMES.values())
    assert rows(db_url, "SELECT status FROM runs")[0][0] == "completed"


def test_database_lost_mid_run(tmp_path: Path, pg_url: str) -> None:
    """A test of the target drops the run's own database halfway: nothing is lost, ingest restores all."""
    dbname = pg_url.rsplit("/", 1)[1]
    dropper = f'''
import time
from sqlalchemy import create_engine, text

def test_1_before():
    time.sleep(1.0)

def test_2_drop_the_database():
    e = create_engine("{pg_url.rsplit("/", 1)[0]}/postgres", isolation_level="AUTOCOMMIT")
    with e.connect() as c:
        c.execute(text('DROP DATABASE "{dbname}" WITH (FORCE)'))

def test_3_after():
    time.sleep(0.6)

def test_4_after():
    pass
'''
    repo = tmp_path / "t"
    make_repo(repo, {"tests/test_drop.py": dropper})
    proc = harness("run", "--repo", str(repo), "--db", pg_url, "-n", "1", "--json", cwd=repo)
    out = json.loads(proc.stdout)
    assert proc.returncode == 0 and out["stored"] is False and out["counts"]["passed"] == 4
    engine = create_engine(pg_url.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{dbname}"'))
    engine.dispose()
    for _ in range(2):
        assert harness("ingest", out["bundle"], "--db", pg_url, cwd=repo).returncode == 0
    assert rows(pg_url, "SELECT count(*) FROM test_results")[0][0] == 4
    assert rows(pg_url, "SELECT count(*) FROM runs")[0][0] == 1


BAD_INPUTS = {
    "unknown-model": (["--models", "lama"], "harness: unknown model 'lama' (known: "),
    "unknown-suite": (["--suite", "nightly"], "harness: unknown suite 'nightly' (known: "),
    "bad-db-url": (["--db", "mysql://x@y/z"], "harness: unsupported database 'mysql'"),
    "garbage-db-url": (["--db", "not a url"], "harness: unusable database URL"),
    "not-a-git-repo": (["--repo", "{tmp}"], "not a git repository"),
    "unknown-runner-group": (["--runner-group", "gpu"], "harness: unknown runner group 'gpu'"),
    "negative-workers": (["-n", "-1"], "harness: -n/--workers must be 0 or more"),
    "unknown-flag": (["--modles", "llama"], "harness: No such option: --modles"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case: str, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    args, expected = BAD_INPUTS[case]
    empty = tmp_path / "empty"
    empty.mkdir()
    args = [a.replace("{tmp}", str(empty)) for a in args]
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "r.db"
    repo_args = [] if "--repo" in args else ["--repo", str(ROOT)]
    code = main(["run", *repo_args, "--db", f"sqlite:///{db}", *args] if "--db" not in args
                else ["run", *repo_args, *args])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("harness: ") and expected in err, err
    assert not db.exists() and not (tmp_path / ".harness").exists()


def test_ingest_junit_xml_idempotently(tmp_path: Path, db_url: str) -> None:
    make_repo(tmp_path / "j", {"tests/test_j.py": "def test_a():\n    pass\n\ndef test_b():\n    assert 0\n"})
    xml = tmp_path / "junit.xml"
    subprocess.run([sys.executable, "-m", "pytest", "-p", "no:harness", f"--junitxml={xml}", "tests"],
                   cwd=tmp_path / "j", capture_output=True)
    for expected_new in (2, 0):
        proc = harness("ingest", str(xml), "--db", db_url, "--json", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["added"]["results"] == expected_new
    assert dict(rows(db_url, "SELECT nodeid, outcome FROM test_results")) == {
        "tests/test_j.py::test_a": "passed", "tests/test_j.py::test_b": "failed"}


@pytest.mark.parametrize("content", ["this is not json\n", "<html></html>"], ids=["text", "html"])
def test_ingest_rejects_garbage_before_writing(tmp_path: Path, content: str, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / ("bad.xml" if content.startswith("<") else "bad.jsonl")
    bad.write_text(content)
    db = tmp_path / "x.db"
    assert main(["ingest", str(bad), "--db", f"sqlite:///{db}"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert not db.exists()
