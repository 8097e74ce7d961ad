"""`--perf METRIC --threshold X`: a timing regression bisected with repeated measurements per probe."""

from __future__ import annotations

from pathlib import Path

import pytest
from harness_bisect.api import BisectRequest, run_bisect

from tests.triage.gitrepo import RepoBuilder

SPEED_TESTS = """\
import random
import time

from pkg import core


def test_speed():
    time.sleep(core.DELAY)


def test_latency(record_property):
    record_property("latency_ms", core.LATENCY + random.random())


def test_steady():
    time.sleep(0.002)
"""


def _speed_repo(root: Path, culprit: int = 6, commits: int = 12) -> RepoBuilder:
    b = RepoBuilder(root)
    b.commit({"pkg/__init__.py": "", "pkg/core.py": "DELAY = 0.002\nLATENCY = 10\n",
              "tests/test_speed.py": SPEED_TESTS}, "initial")
    for i in range(1, commits + 1):
        if i == culprit:
            b.commit({"pkg/core.py": "DELAY = 0.03\nLATENCY = 20\n"}, "slow path (#5)")
        else:
            b.filler()
    return b


@pytest.mark.parametrize(("test", "metric", "threshold"), [
    ("test_speed", "duration", "50%"),     # relative change of the test's duration
    ("test_speed", "duration", "0.015"),   # a duration value between good and bad
    ("test_latency", "latency_ms", "25%"),  # a metric the test records
])
def test_perf_regression_found(test: str, metric: str, threshold: str, tmp_path: Path, cache: Path) -> None:
    b = _speed_repo(tmp_path / "repo")
    nodeid = f"tests/test_speed.py::{test}"
    result = run_bisect(BisectRequest(repo=b.root, good=b.shas[0], bad="HEAD", tests=[nodeid, "tests/test_speed.py::test_steady"],
                                      perf_metric=metric, threshold=threshold, samples=5))
    assert [(c.commit, c.pr, c.tests) for c in result.culprits] == [(b.shas[6], 5, [nodeid])]
    assert result.not_reproduced == ["tests/test_speed.py::test_steady"]
    assert result.method == "perf" and result.flaky == []


def test_perf_change_below_threshold_is_not_reproduced(tmp_path: Path, cache: Path) -> None:
    b = _speed_repo(tmp_path / "repo", commits=4, culprit=2)
    result = run_bisect(BisectRequest(repo=b.root, good=b.shas[0], bad="HEAD", tests=["tests/test_speed.py::test_latency"],
                                      perf_metric="latency_ms", threshold="500%", samples=5))
    assert result.culprits == [] and result.not_reproduced == ["tests/test_speed.py::test_latency"]
