"""One probe in a real worktree: what each kind of test outcome becomes (pass / fail / skip)."""

from __future__ import annotations

from pathlib import Path

import pytest
from harness_bisect.gitops import open_repo
from harness_bisect.probe import FAIL, PASS, SKIP, ProbeConfig, ProbeRunner
from harness_bisect.worktrees import WorktreePool

from tests.triage.gitrepo import RepoBuilder

MIXED = """\
import os

import pytest

CALLS = []


@pytest.fixture(scope="module")
def shared():
    CALLS.append("module")
    return CALLS


@pytest.fixture
def fresh():
    CALLS.append("function")
    yield
    CALLS.append("teardown")


def test_pass(shared, fresh):
    assert shared.count("module") == 1


def test_fail():
    assert False, "boom"


@pytest.mark.skip(reason="not here")
def test_skipped():
    pass


@pytest.mark.xfail(strict=False)
def test_xpass():
    pass


def test_bad_fixture(missing_fixture):
    pass


def test_zz_crash():
    os._exit(3)


def test_zzz_after_crash():
    pass
"""


def test_probe_outcomes(tmp_path: Path) -> None:
    b = RepoBuilder(tmp_path / "repo")
    b.commit({"tests/test_mixed.py": MIXED, "tests/test_broken.py": "import not_a_module\n\ndef test_x():\n    pass\n"})
    ids = {name: f"tests/test_mixed.py::{name}" for name in
           ("test_pass", "test_fail", "test_skipped", "test_xpass", "test_bad_fixture", "test_zz_crash",
            "test_zzz_after_crash", "test_gone")}
    ids["broken"] = "tests/test_broken.py::test_x"
    ids["no_file"] = "tests/test_nowhere.py::test_y"
    with WorktreePool(open_repo(b.root), 1, tmp_path / "cache") as pool:
        result = ProbeRunner(ProbeConfig(), tmp_path / "cache").run(pool.trees[0], b.shas[-1], list(ids.values()), 2)
    got = {name: [(a.status, a.outcome) for a in result.attempts[nodeid]] for name, nodeid in ids.items()}
    assert result.invoked and result.skip_reason is None
    assert got["test_pass"] == [(PASS, "passed")] * 2  # module fixture kept, function fixture renewed
    assert got["test_fail"] == [(FAIL, "failed")] * 2
    assert got["test_skipped"] == [(PASS, "skipped")] * 2
    assert got["test_xpass"] == [(FAIL, "xpass")] * 2
    assert got["test_bad_fixture"] == [(FAIL, "error")] * 2
    assert got["test_zz_crash"] == [(FAIL, "crashed"), (SKIP, "not_run")]
    assert got["test_zzz_after_crash"] == [(SKIP, "not_run")] * 2
    assert got["test_gone"] == [(PASS, "absent")] * 2  # not collected here: does not exist = passes
    assert got["no_file"] == [(PASS, "absent")] * 2
    assert got["broken"] == [(SKIP, "collect_error")] * 2
    assert "not_a_module" in (result.attempts[ids["broken"]][0].message or "")
    assert result.attempts[ids["test_fail"]][0].message.startswith("AssertionError: boom")


def test_probe_that_cannot_start_is_a_skip(tmp_path: Path) -> None:
    b = RepoBuilder(tmp_path / "repo")
    b.commit({"conftest.py": "raise ImportError('conftest is broken')\n", "tests/test_a.py": "def test_a():\n    pass\n"})
    with WorktreePool(open_repo(b.root), 1, tmp_path / "cache") as pool:
        result = ProbeRunner(ProbeConfig(), tmp_path / "cache").run(pool.trees[0], b.shas[-1], ["tests/test_a.py::test_a"])
    assert result.skip_reason and "conftest" in result.skip_reason
    assert [(a.status, a.outcome) for a in result.attempts["tests/test_a.py::test_a"]] == [(SKIP, "not_run")]


def test_each_worker_gets_its_own_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = tmp_path / "seen"
    seen.mkdir()
    monkeypatch.setenv("SEEN_DIR", str(seen))
    b = RepoBuilder(tmp_path / "repo")
    b.commit({"tests/test_gpu.py": "import os\nfrom pathlib import Path\n\n\ndef test_gpu():\n"
              "    Path(os.environ['SEEN_DIR'], str(os.getpid())).write_text(os.environ['CUDA_VISIBLE_DEVICES'])\n"})
    with WorktreePool(open_repo(b.root), 2, tmp_path / "cache") as pool:
        runner = ProbeRunner(ProbeConfig(gpus=["3", "5"]), tmp_path / "cache")
        for tree in pool.trees:
            assert runner.run(tree, b.shas[-1], ["tests/test_gpu.py::test_gpu"]).attempts[
                "tests/test_gpu.py::test_gpu"][0].status == PASS
    assert sorted(p.read_text() for p in seen.iterdir()) == ["3", "5"]
