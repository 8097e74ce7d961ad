"""Bisect verdicts are true (DESIGN "No false success"): a slow-suite test named with `--tests` runs with
its suite's environment (RUN_SLOW=1) and is bisected; a test that does not exist at bad, or did not run
there (skipped, deselected by the target, its probe could not start), is exit 2 with the reason and
nothing stored; "not reproduced" is only said of a test that really passed at bad."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from harness.cli import main
from harness.store import Store
from harness.store.schema import Culprit
from tests.triage.gitrepo import RepoBuilder

PYPROJECT = """\
[tool.harness]
models = ["tiny"]

[tool.harness.suites.slow]
paths = ["suites/slow"]
env = { RUN_SLOW = "1" }

[tool.pytest.ini_options]
addopts = "-m 'not quarantined'"
markers = ["quarantined: deselected by the target itself"]
"""

GATED = """\
import os

import pytest

from pkg import core

slow = pytest.mark.skipif(os.environ.get("RUN_SLOW") != "1", reason="slow test: set RUN_SLOW=1")


@slow
def test_value():
    assert core.V == 1


def test_plain():
    assert core.V == 1


def test_steady():
    assert True


@pytest.mark.skip(reason="waiting for a fix")
def test_always_skipped():
    assert core.V == 1


@pytest.mark.quarantined
def test_quarantined():
    assert core.V == 1


@pytest.mark.xfail(reason="known bad", strict=False)
def test_known_bad():
    assert core.V == 1


def test_always_broken():
    assert core.V == 3
"""

SLOW = "suites/slow/test_gate.py::{}".format


@pytest.fixture
def history(tmp_path: Path) -> RepoBuilder:
    """Commit 0 good; commit 2 breaks `core.V` (#5); commit 3 is a filler."""
    b = RepoBuilder(tmp_path / "repo")
    b.commit({"pyproject.toml": PYPROJECT, "pkg/__init__.py": "", "pkg/core.py": "V = 1\n",
              "suites/__init__.py": "", "suites/slow/__init__.py": "", "suites/slow/test_gate.py": GATED,
              ".gitignore": "__pycache__/\n"}, "initial import")
    b.filler()
    b.commit({"pkg/core.py": "V = 2\n"}, "core: V is two (#5)", author=("Eve Breaker", "eve@example.com"))
    b.filler()
    return b


def _bisect(b: RepoBuilder, db: Path, *tests: str) -> int:
    args = [a for t in tests for a in ("--tests", t)]
    return main(["bisect", "--repo", str(b.root), "--good", b.shas[0], "--db", f"sqlite:///{db}", "--json", *args])


def _culprits(db: Path) -> list[tuple[str, str]]:
    store = Store.open(f"sqlite:///{db}")
    try:
        with store.session() as s:
            return [(c.nodeid, c.commit_sha) for c in s.scalars(select(Culprit))]
    finally:
        store.dispose()


def test_slow_suite_test_named_with_tests_gets_the_suite_env(history: RepoBuilder, tmp_path: Path, cache: Path,
                                                              capsys: pytest.CaptureFixture[str],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RUN_SLOW", raising=False)
    db = tmp_path / "results.db"
    assert _bisect(history, db, SLOW("test_value")) == 1
    assert '"pr": 5' in capsys.readouterr().out
    assert _culprits(db) == [(SLOW("test_value"), history.shas[2])]


@pytest.mark.parametrize(("test", "reason"), [
    ("test_nope", "not collected there: no such test"),
    ("test_always_skipped", "skipped there (waiting for a fix)"),
    ("test_quarantined", "deselected there by the target's own options or hooks"),
    ("test_known_bad", "xfailed there"),
], ids=["nonexistent", "skipped", "deselected", "xfail"])
def test_a_test_that_did_not_run_at_bad_is_exit_2(test: str, reason: str, history: RepoBuilder, tmp_path: Path,
                                                   cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "results.db"
    assert _bisect(history, db, SLOW("test_plain"), SLOW(test)) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1, err
    assert err.startswith(f"harness: {SLOW(test)} did not run at bad {history.shas[-1][:12]}: {reason}"), err
    assert _culprits(db) == []  # nothing stored
    assert not any((cache / "worktrees").glob("*/hb-*"))


def test_perf_bisect_of_a_test_that_does_not_exist_is_exit_2(history: RepoBuilder, tmp_path: Path, cache: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bisect", "--repo", str(history.root), "--good", history.shas[0], "--no-store", "--json",
                 "--perf", "duration", "--threshold", "50%", "--samples", "2", "--tests", SLOW("test_nope")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"harness: {SLOW('test_nope')} did not run at bad {history.shas[-1][:12]}: not collected"), err
    assert err.count("\n") == 1


def test_failing_at_both_ends_is_exit_2_not_a_verdict(history: RepoBuilder, tmp_path: Path, cache: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "results.db"
    assert _bisect(history, db, SLOW("test_plain"), SLOW("test_always_broken")) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1, err
    assert err.startswith(f"harness: {SLOW('test_always_broken')} fails at good {history.shas[0][:12]} too"), err
    assert "pass an older --good" in err and _culprits(db) == []


def test_probe_that_cannot_start_at_bad_is_exit_2(tmp_path: Path, cache: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    b = RepoBuilder(tmp_path / "repo")
    b.commit({"tests/test_a.py": "def test_a():\n    pass\n"}, "initial import")
    b.commit({"conftest.py": "raise ImportError('conftest is broken')\n"}, "break the conftest")
    assert main(["bisect", "--repo", str(b.root), "--good", b.shas[0], "--no-store", "--json", "--tests",
                 "tests/test_a.py::test_a"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "did not run at bad" in err and "could not run there" in err, err


def test_not_reproduced_only_when_it_really_passes_at_bad(history: RepoBuilder, tmp_path: Path, cache: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "results.db"
    assert _bisect(history, db, SLOW("test_steady")) == 0
    out = capsys.readouterr().out
    assert '"not_reproduced": [\n    "suites/slow/test_gate.py::test_steady"\n  ]' in out
    assert _culprits(db) == []
