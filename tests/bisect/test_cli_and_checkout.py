"""`harness bisect` from the command line: bad input (exit 2, one line, nothing written), the user's
checkout left exactly as it was (also when the bisect is SIGKILLed mid-run; the next bisect removes the
stale worktrees and the orphaned probe), and culprits stored in the results database."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import git
import psutil
import pytest
from harness_bisect.api import BisectRequest, run_bisect
from sqlalchemy import select

from harness.cli import main
from harness.store import Store
from harness.store.schema import Culprit
from tests.triage.gitrepo import RepoBuilder, broken_core, core_repo

T = "tests/test_core.py::test_{}".format


def _repo(root: Path, commits: int = 8, culprit: int = 5) -> RepoBuilder:
    return core_repo(root, "AB", commits, {culprit: ({"pkg/core.py": broken_core("AB", {"A": 0})}, "break A (#9)")})


def _worktrees(repo_path: Path) -> list[str]:
    out = git.Repo(repo_path).git.worktree("list", "--porcelain")
    return [line.split(" ", 1)[1] for line in out.splitlines() if line.startswith("worktree ")]


def _bad_input_cases(tmp: Path, b: RepoBuilder) -> dict[str, list[str]]:
    b.repo.create_head("side", b.shas[2])
    b.repo.git.checkout("side")
    side_sha = b.commit({"side.txt": "x\n"}, "side work")
    b.repo.git.checkout("main")
    plain = tmp / "plain"
    plain.mkdir()
    repo = str(b.root)
    return {
        "unknown_good": ["--repo", repo, "--good", "no-such-rev", "--tests", T("a")],
        "unknown_bad": ["--repo", repo, "--good", b.shas[0], "--bad", "deadbeef" * 5, "--tests", T("a")],
        "good_not_ancestor": ["--repo", repo, "--good", side_sha, "--bad", "main", "--tests", T("a")],
        "same_commit": ["--repo", repo, "--good", "HEAD", "--bad", "HEAD", "--tests", T("a")],
        "not_a_repo": ["--repo", str(plain), "--good", "HEAD", "--tests", T("a")],
        "missing_repo": ["--repo", str(tmp / "nowhere"), "--good", "HEAD", "--tests", T("a")],
        "empty_tests": ["--repo", repo, "--good", b.shas[0]],
        "blank_test": ["--repo", repo, "--good", b.shas[0], "--tests", " "],
        "no_good": ["--repo", repo, "--tests", T("a")],
        "perf_without_threshold": ["--repo", repo, "--good", b.shas[0], "--tests", T("a"), "--perf", "duration"],
        "threshold_without_perf": ["--repo", repo, "--good", b.shas[0], "--tests", T("a"), "--threshold", "5%"],
        "bad_threshold": ["--repo", repo, "--good", b.shas[0], "--tests", T("a"), "--perf", "duration",
                          "--threshold", "fast"],
        "zero_workers": ["--repo", repo, "--good", b.shas[0], "--tests", T("a"), "-j", "0"],
        "run_with_tests": ["--run", "1", "--tests", T("a")],
        "unknown_run": ["--run", "12345"],
    }


BAD_INPUTS = ["unknown_good", "unknown_bad", "good_not_ancestor", "same_commit", "not_a_repo", "missing_repo",
              "empty_tests", "blank_test", "no_good", "perf_without_threshold", "threshold_without_perf",
              "bad_threshold", "zero_workers", "run_with_tests", "unknown_run"]


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(case: str, tmp_path: Path, cache: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    b = _repo(tmp_path / "repo")
    args = _bad_input_cases(tmp_path, b)[case]
    db = tmp_path / "db" / "results.db"
    if case == "unknown_run":
        Store.open(f"sqlite:///{db}").dispose()  # an existing, empty store
    assert main(["bisect", *args, "--db", f"sqlite:///{db}"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("harness: ") and err.count("\n") == 1, err
    if case == "unknown_run":
        store = Store.open(f"sqlite:///{db}")
        with store.session() as s:
            assert s.scalars(select(Culprit)).all() == []
        store.dispose()
    else:
        assert not db.parent.exists()
    assert not cache.exists() or not any((cache / "worktrees").glob("*/hb-*"))
    assert _worktrees(b.root) == [str(b.root)]


def _running(pid: int) -> bool:
    """Whether `pid` is a live process (a killed, unreaped zombie is not)."""
    try:
        return psutil.Process(pid).status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except psutil.Error:
        return False


def _snapshot(repo: git.Repo) -> dict:
    """Everything a bisect must not change, read without taking git's optional index lock."""
    g = git.Git(repo.working_tree_dir)
    env = {"GIT_OPTIONAL_LOCKS": "0"}
    index = Path(repo.git_dir) / "index"
    return {
        "head": (Path(repo.git_dir) / "HEAD").read_text(), "sha": repo.head.commit.hexsha,
        "index": hashlib.sha1(index.read_bytes()).hexdigest(),
        "status": g.execute(["git", "status", "--porcelain=v2", "--untracked-files=all"], env=env),
        "branches": sorted(h.name for h in repo.heads), "stash": g.execute(["git", "stash", "list"], env=env),
        "files": {p: (Path(repo.working_tree_dir) / p).read_text() for p in ("pkg/core.py", "staged.txt", "scratch.txt")},
    }


def _dirty(b: RepoBuilder) -> None:
    """Uncommitted work of every kind: a modified tracked file, a staged new file, an untracked file."""
    (b.root / "pkg/core.py").write_text(broken_core("AB", {"B": 7}))
    (b.root / "staged.txt").write_text("staged\n")
    b.repo.index.add(["staged.txt"])
    (b.root / "scratch.txt").write_text("untracked\n")


def test_user_checkout_head_and_index_untouched(tmp_path: Path, cache: Path) -> None:
    b = _repo(tmp_path / "repo")
    _dirty(b)
    before = _snapshot(b.repo)
    result = run_bisect(BisectRequest(repo=b.root, good=b.shas[0], bad="main", tests=[T("a")], workers=2))
    assert [c.commit for c in result.culprits] == [b.shas[5]]
    assert _snapshot(b.repo) == before
    assert _worktrees(b.root) == [str(b.root)]
    assert not list((cache / "worktrees").glob("*/hb-*"))


def _slow_repo(root: Path) -> RepoBuilder:
    """Importing the package sleeps PROBE_SLEEP seconds: probes stay running long enough to interrupt."""
    slow = "\nimport time as _t\n_t.sleep(float(__import__('os').environ.get('PROBE_SLEEP', '0')))\n"
    b = core_repo(root, "AB", 16, {9: ({"pkg/core.py": broken_core("AB", {"A": 0})}, "break A")},
                  extra={"pkg/__init__.py": slow})
    _dirty(b)
    return b


def _start_until_probe(b: RepoBuilder, cache: Path) -> tuple[subprocess.Popen, dict]:
    """Start `harness bisect` and wait until one of its probes runs inside a worktree."""
    env = {**os.environ, "PROBE_SLEEP": "30"}
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "bisect", "--repo", str(b.root), "--good", b.shas[0],
                             "--tests", T("a"), "-j", "2", "--no-store"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for owner in (cache / "worktrees").glob("*/hb-*.owner"):
            try:
                probe = json.loads(owner.read_text()).get("probe")
            except ValueError:
                continue
            if probe:
                return proc, probe
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("no probe started within 60 s")


def test_sigkill_mid_bisect_leaves_checkout_and_next_bisect_cleans_up(tmp_path: Path, cache: Path) -> None:
    b = _slow_repo(tmp_path / "repo")
    before = _snapshot(b.repo)
    proc, probe = _start_until_probe(b, cache)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert _snapshot(b.repo) == before
    assert len(_worktrees(b.root)) == 3  # main + the dead bisect's two
    assert _running(probe["pid"])  # its orphaned probe is still running

    result = run_bisect(BisectRequest(repo=b.root, good=b.shas[0], bad="main", tests=[T("a")]))
    assert [c.commit for c in result.culprits] == [b.shas[9]]
    assert _worktrees(b.root) == [str(b.root)]
    assert not list((cache / "worktrees").glob("*/hb-*"))
    assert not (Path(b.repo.git_dir) / "worktrees").exists() or not list((Path(b.repo.git_dir) / "worktrees").iterdir())
    time.sleep(0.2)
    assert not _running(probe["pid"])
    assert _snapshot(b.repo) == before


def test_sigterm_stops_probes_and_removes_worktrees_at_once(tmp_path: Path, cache: Path) -> None:
    b = _slow_repo(tmp_path / "repo")
    before = _snapshot(b.repo)
    proc, probe = _start_until_probe(b, cache)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 128 + signal.SIGTERM
    time.sleep(0.2)
    assert not _running(probe["pid"])
    assert _worktrees(b.root) == [str(b.root)]
    assert not list((cache / "worktrees").glob("*/hb-*"))
    assert _snapshot(b.repo) == before


def test_cli_json_exit_1_and_culprits_stored(tmp_path: Path, cache: Path, pg_url: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    db_url = pg_url
    b = _repo(tmp_path / "repo")
    assert main(["bisect", "--repo", str(b.root), "--good", b.shas[0], "--bad", b.shas[-1], "--db", db_url,
                 "--json", T("a"), "--tests", T("b")]) == 1
    out = json.loads(capsys.readouterr().out)
    assert set(out) >= {"good", "bad", "commits_in_range", "probes", "rounds", "culprits", "flaky",
                        "not_reproduced", "skipped_commits"}
    assert out["commits_in_range"] == 8 and out["not_reproduced"] == [T("b")]
    (culprit,) = out["culprits"]
    assert culprit == {"commit": b.shas[5], "author": "Eve Breaker", "email": "eve@example.com",
                       "subject": "break A (#9)", "pr": 9, "tests": [T("a")], "range": [b.shas[5]]}
    store = Store.open(db_url)
    with store.session() as s:
        rows = s.scalars(select(Culprit)).all()
    assert [(r.nodeid, r.commit_sha, r.pr, r.author, r.good_sha, r.bad_sha, r.confidence) for r in rows] == [
        (T("a"), b.shas[5], 9, "Eve Breaker", b.shas[0], b.shas[-1], 1.0)]
    # Nothing to blame: exit 0, and a rerun replaces rather than duplicates rows.
    assert main(["bisect", "--repo", str(b.root), "--good", b.shas[0], "--bad", b.shas[3], "--db", db_url,
                 "--tests", T("a")]) == 0
    assert "no culprit found" in capsys.readouterr().out
    assert main(["bisect", "--repo", str(b.root), "--good", b.shas[0], "--bad", b.shas[-1], "--db", db_url,
                 "--json", "--tests", T("a")]) == 1
    with store.session() as s:
        assert len(s.scalars(select(Culprit)).all()) == 1
    store.dispose()
