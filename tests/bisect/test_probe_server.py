"""Probes forked from a probe server (issue 16): one import of the third-party dependencies, but each probe
runs its own commit's code of the package under test; a fresh interpreter when a dependency file changed,
when the server holds a module of the checkout, or when forking is turned off; a crash is never a pass."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from harness_bisect.api import BisectRequest, run_bisect
from harness_bisect.gitops import open_repo
from harness_bisect.probe import FAIL, PASS, SKIP, ProbeConfig, ProbeRunner
from harness_bisect.servers import dependency_key, scan_deps
from harness_bisect.worktrees import WorktreePool

from tests.triage.gitrepo import RepoBuilder

TEST = "tests/test_value.py::test_value"
TEST_FILE = """import os
from pathlib import Path

import heavydep
from pkg.core import value


def test_value():
    Path(os.environ["SEEN_DIR"], str(os.getpid())).write_text(f"{os.getppid()} {value()}")
    assert value() == 1
"""
HEAVYDEP = """import os
from pathlib import Path

with open(Path(os.environ["SEEN_DIR"]) / "heavydep-imports", "a") as fh:
    fh.write(f"{os.getpid()}\\n")
"""


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder standing in for site-packages: a third-party `heavydep` that logs each import of it."""
    folder = tmp_path / "site"
    folder.mkdir()
    (folder / "heavydep.py").write_text(HEAVYDEP)
    seen = tmp_path / "seen"
    seen.mkdir()
    monkeypatch.setenv("SEEN_DIR", str(seen))
    monkeypatch.setenv("PYTHONPATH", str(folder))
    monkeypatch.delenv("HARNESS_BISECT_FORK", raising=False)
    return folder


def _repo(root: Path) -> RepoBuilder:
    """c0: value() == 1; c1: value() == 2; c2: a dependency file changes (value() == 1 again)."""
    b = RepoBuilder(root)
    b.commit({"pkg/__init__.py": "", "pkg/core.py": "def value():\n    return 1\n", "tests/test_value.py": TEST_FILE,
              "pyproject.toml": '[project]\nname = "pkg"\ndependencies = ["heavydep"]\n'}, "initial")
    b.commit({"pkg/core.py": "def value():\n    return 2\n"}, "core: value 2")
    b.commit({"pkg/core.py": "def value():\n    return 1\n",
              "pyproject.toml": '[project]\nname = "pkg"\ndependencies = ["heavydep>=2"]\n'}, "deps: heavydep 2")
    return b


def _probe(runner: ProbeRunner, tree, sha: str, test: str = TEST):  # noqa: ANN001, ANN202
    result = runner.run(tree, sha, [test])
    return result, [(a.status, a.outcome) for a in result.attempts[test]]


def test_probes_through_one_server_see_their_own_commits_code(tmp_path: Path, site: Path) -> None:
    b = _repo(tmp_path / "repo")
    seen = Path(os.environ["SEEN_DIR"])
    with WorktreePool(open_repo(b.root), 1, tmp_path / "cache") as pool:
        runner = ProbeRunner(ProbeConfig(fork=True), tmp_path / "cache")
        try:
            first, got_first = _probe(runner, pool.trees[0], b.shas[0])
            second, got_second = _probe(runner, pool.trees[0], b.shas[1])
            third, got_third = _probe(runner, pool.trees[0], b.shas[0])
            server_pid = next(iter(runner.servers.servers.values())).proc.pid
        finally:
            runner.close()
    assert (first.path, second.path, third.path) == ("fork", "fork", "fork")
    assert got_first == [(PASS, "passed")] and got_third == [(PASS, "passed")]
    assert got_second == [(FAIL, "failed")]  # value() is 2 at c1, though c0's pkg ran in the same server before
    records = sorted(p.read_text().split() for p in seen.iterdir() if p.name != "heavydep-imports")
    assert records == sorted([[str(server_pid), "1"], [str(server_pid), "2"], [str(server_pid), "1"]])
    assert (seen / "heavydep-imports").read_text().split() == [str(server_pid)]  # imported once, by the server
    assert first.phases["interpreter"] > 0 and "heavydep" not in first.deps  # preloaded: no child imported it


def test_dependency_file_change_runs_a_fresh_interpreter(tmp_path: Path, site: Path) -> None:
    b = _repo(tmp_path / "repo")
    assert dependency_key(open_repo(b.root), b.shas[0]) != dependency_key(open_repo(b.root), b.shas[2])
    assert dependency_key(open_repo(b.root), b.shas[0]) == dependency_key(open_repo(b.root), b.shas[1])
    with WorktreePool(open_repo(b.root), 1, tmp_path / "cache") as pool:
        runner = ProbeRunner(ProbeConfig(fork=True), tmp_path / "cache")
        try:
            paths = [(result.path, got) for result, got in (_probe(runner, pool.trees[0], sha)
                                                             for sha in (b.shas[1], b.shas[2], b.shas[0]))]
        finally:
            runner.close()
    assert paths == [("fork", [(FAIL, "failed")]), ("fresh", [(PASS, "passed")]), ("fork", [(PASS, "passed")])]


def test_server_holding_the_package_under_test_is_refused(tmp_path: Path, site: Path) -> None:
    """A stale installed copy of `pkg` that a dependency imports must not stand in for the commit's own."""
    (site / "pkg").mkdir()
    (site / "pkg" / "__init__.py").write_text("")
    (site / "pkg" / "core.py").write_text("def value():\n    return 1\n")
    (site / "heavydep.py").write_text(HEAVYDEP + "import pkg.core\n")
    b = _repo(tmp_path / "repo")
    with WorktreePool(open_repo(b.root), 1, tmp_path / "cache") as pool:
        runner = ProbeRunner(ProbeConfig(fork=True), tmp_path / "cache")
        try:
            result, got = _probe(runner, pool.trees[0], b.shas[1])
            again, _ = _probe(runner, pool.trees[0], b.shas[0])
        finally:
            runner.close()
    assert result.path == "fresh" and got == [(FAIL, "failed")]  # c1's value() == 2, not the stale copy's 1
    assert again.path == "fresh"  # the server stays off for the rest of the bisect


def test_crash_in_a_forked_child_is_never_a_pass(tmp_path: Path, site: Path) -> None:
    b = RepoBuilder(tmp_path / "repo")
    b.commit({"tests/test_crash.py": "import os\nimport signal\n\n\ndef test_segv():\n"
              "    os.kill(os.getpid(), signal.SIGSEGV)\n\n\ndef test_exit():\n    os._exit(0)\n"})
    b.commit({"conftest.py": "import os\n\nos._exit(0)\n"})
    with WorktreePool(open_repo(b.root), 1, tmp_path / "cache") as pool:
        runner = ProbeRunner(ProbeConfig(fork=True), tmp_path / "cache")
        try:
            segv, got_segv = _probe(runner, pool.trees[0], b.shas[0], "tests/test_crash.py::test_segv")
            _, got_exit = _probe(runner, pool.trees[0], b.shas[0], "tests/test_crash.py::test_exit")
            early, got_early = _probe(runner, pool.trees[0], b.shas[1], "tests/test_crash.py::test_exit")
        finally:
            runner.close()
    assert segv.path == "fork" and got_segv == [(FAIL, "crashed")]
    assert got_exit == [(FAIL, "crashed")]  # exit status 0 mid-test is no pass either
    assert early.path == "fork" and got_early == [(SKIP, "not_run")] and early.skip_reason


def test_bisect_forks_by_default_and_opts_out(tmp_path: Path, site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    b = RepoBuilder(tmp_path / "repo")
    b.commit({"pkg/__init__.py": "", "pkg/core.py": "def value():\n    return 1\n", "tests/test_value.py": TEST_FILE})
    for i in range(1, 12):
        b.commit({"pkg/core.py": f"def value():\n    return {2 if i >= 7 else 1}\n"} if i == 7 else
                 {"notes.txt": f"{i}\n"}, "core: value 2 (#7)" if i == 7 else f"note {i}")
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    forked = run_bisect(BisectRequest(repo=b.root, good=b.shas[0], bad=b.shas[-1], tests=[TEST], workers=2))
    fresh = run_bisect(BisectRequest(repo=b.root, good=b.shas[0], bad=b.shas[-1], tests=[TEST], workers=2,
                                     env={"HARNESS_BISECT_FORK": "0"}))
    for result in (forked, fresh):
        assert [(c.commit, c.tests) for c in result.culprits] == [(b.shas[7], [TEST])]
    assert forked.cost["paths"] == {"fork": forked.probes}
    assert fresh.cost["paths"] == {"fresh": fresh.probes}
    assert len(forked.cost["rounds"]) == forked.rounds
    assert set(forked.to_json()["cost"]["phases"]) >= {"worktree", "interpreter", "imports", "collection", "call"}


def test_scan_finds_third_party_imports_through_the_checkout(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("import numpy as np\nfrom .sub import x\n")
    (tmp_path / "pkg" / "sub.py").write_text("from safetensors.torch import load_file\nx = 1\n\n\n"
                                             "def later():\n    import lazy_only\n")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_a.py").write_text("import json\nimport torch\nfrom pkg import sub\n")
    (tmp_path / "conftest.py").write_text("try:\n    import yaml\nexcept ImportError:\n    pass\n")
    deps = scan_deps([tmp_path], ["tests/test_a.py"], tmp_path)
    assert {"numpy", "safetensors.torch", "torch", "yaml"} <= set(deps)
    assert not {"json", "lazy_only", "pkg", "pkg.sub"} & set(deps)


def test_timeout_in_a_forked_child_kills_it(tmp_path: Path, site: Path) -> None:
    b = RepoBuilder(tmp_path / "repo")
    b.commit({"tests/test_slow.py": "import os\nimport time\nfrom pathlib import Path\n\n\ndef test_slow():\n"
              "    Path(os.environ['SEEN_DIR'], 'pid').write_text(str(os.getpid()))\n    time.sleep(60)\n"})
    with WorktreePool(open_repo(b.root), 1, tmp_path / "cache") as pool:
        runner = ProbeRunner(ProbeConfig(fork=True, timeout_s=3), tmp_path / "cache")
        try:
            result, got = _probe(runner, pool.trees[0], b.shas[0], "tests/test_slow.py::test_slow")
        finally:
            runner.close()
    assert result.path == "fork" and got == [(FAIL, "timeout")]
    pid = int((Path(os.environ["SEEN_DIR"]) / "pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
