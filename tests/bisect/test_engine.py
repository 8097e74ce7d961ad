"""`harness_bisect` is an engine free of the platform (issue 14): it imports nothing of `harness`, hands its
result to a `ResultSink`, and the platform's glue disposes of the store it opens for `harness bisect`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import harness_bisect
import pytest
from harness_bisect.api import BisectRequest, run_bisect
from harness_bisect.report import BisectResult
from sqlalchemy import create_engine, text

from harness.triage.bisect_glue import BisectInputError, bisect_command
from tests.triage.gitrepo import broken_core, core_repo

T = "tests/test_core.py::test_{}".format
ENGINE = Path(harness_bisect.__file__).parent

BLOCK_HARNESS = f"""
import importlib, pkgutil, sys

class NoHarness:
    def find_spec(self, name, path=None, target=None):
        if name == "harness" or name.startswith("harness."):
            raise ImportError(f"harness_bisect imported {{name}}")
        return None

sys.meta_path.insert(0, NoHarness())
names = [m.name for m in pkgutil.iter_modules([{str(ENGINE)!r}], "harness_bisect.")]
for name in ["harness_bisect", *names]:
    importlib.import_module(name)
import harness_bisect
for attr in harness_bisect.__all__:
    getattr(harness_bisect, attr)
assert not [m for m in sys.modules if m == "harness" or m.startswith("harness.")]
print(" ".join(sorted(names)))
"""


def test_engine_imports_nothing_of_harness() -> None:
    proc = subprocess.run([sys.executable, "-c", BLOCK_HARNESS], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    imported = proc.stdout.split()
    assert {"harness_bisect.api", "harness_bisect.probe", "harness_bisect.report", "harness_bisect.verify"} <= set(
        imported) and len(imported) == len(list(ENGINE.glob("*.py"))) - 1  # every module but __init__


class Recorder:
    """A `ResultSink` that keeps what it was given."""

    def __init__(self) -> None:
        self.results: list[BisectResult] = []

    def record(self, result: BisectResult) -> None:
        self.results.append(result)


def test_engine_hands_the_result_to_its_sink(tmp_path: Path, cache: Path) -> None:
    b = core_repo(tmp_path / "repo", "AB", 4, {3: ({"pkg/core.py": broken_core("AB", {"A": 0})}, "break A")})
    sink = Recorder()
    result = run_bisect(BisectRequest(repo=b.root, good=b.shas[0], bad="HEAD", tests=[T("a")]), sink=sink)
    assert sink.results == [result] and [c.commit for c in result.culprits] == [b.shas[3]]


def test_engine_probes_through_the_callers_pytest_command(tmp_path: Path, cache: Path) -> None:
    """The probe command is the caller's: every pytest invocation goes through it (here a wrapper that
    counts itself), with the caller's environment."""
    b = core_repo(tmp_path / "repo", "AB", 4, {2: ({"pkg/core.py": broken_core("AB", {"A": 0})}, "break A")})
    calls = tmp_path / "calls"
    wrapper = tmp_path / "wrapped-pytest"
    wrapper.write_text(f'#!/bin/sh\necho "$PROBE_TAG" >> {calls}\nexec {sys.executable} -m pytest "$@"\n')
    wrapper.chmod(0o755)
    result = run_bisect(BisectRequest(repo=b.root, good=b.shas[0], bad="HEAD", tests=[T("a")],
                                      pytest_command=[str(wrapper)], env={"PROBE_TAG": "mine"}))
    assert [c.commit for c in result.culprits] == [b.shas[2]]
    assert calls.read_text().split() == ["mine"] * result.probes and result.probes >= 3


def _connections(url: str) -> int:
    """Sessions open on this database other than the one asking."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                     "AND pid <> pg_backend_pid()")).scalar_one()
    finally:
        engine.dispose()


@pytest.mark.parametrize("mode", ["tests", "run"])
def test_bisect_command_disposes_of_its_store(mode: str, tmp_path: Path, cache: Path, pg_url: str) -> None:
    """Seen before: `bisect_command` opened a store and never disposed of it (a pooled connection stayed open
    for the life of the process), on success and on bad input alike."""
    b = core_repo(tmp_path / "repo", "AB", 2, {2: ({"pkg/core.py": broken_core("AB", {"A": 0})}, "break A")})
    assert _connections(pg_url) == 0
    if mode == "tests":
        result = bisect_command(repo=str(b.root), good=b.shas[0], bad=None, tests=[T("a")], run_id=None, db=pg_url)
        assert [c.commit for c in result.culprits] == [b.shas[2]]
    else:
        with pytest.raises(BisectInputError.__mro__[1], match="12345"):  # HarnessError: no such run
            bisect_command(repo=None, good=None, bad=None, tests=[], run_id=12345, db=pg_url)
    assert _connections(pg_url) == 0
