"""One git layer: `harness_bisect.checkout.checkout_at` (a pool worktree at one commit, used by the daily
pipeline's baseline run) and `harness.run.metadata`'s use of the engine's `gitops`, on real repositories."""

from __future__ import annotations

from pathlib import Path

import git
import pytest
from harness_bisect import gitops
from harness_bisect.checkout import checkout_at
from harness_bisect.gitops import BisectError

from harness.errors import HarnessError
from harness.run import metadata
from tests.triage.gitrepo import RepoBuilder


def _history(root: Path) -> RepoBuilder:
    b = RepoBuilder(root)
    b.commit({"a.txt": "one\n"}, "first (#7)")
    b.commit({"a.txt": "two\n", "b.txt": "new\n"}, "second")
    return b


def test_checkout_at_an_old_commit_leaves_the_user_checkout_alone(tmp_path: Path, cache: Path) -> None:
    b = _history(tmp_path / "repo")
    (b.root / "untracked.txt").write_text("mine\n")
    head = b.repo.head.commit.hexsha
    with checkout_at(b.root, b.shas[0]) as tree:
        assert cache in tree.parents
        assert (tree / "a.txt").read_text() == "one\n" and not (tree / "b.txt").exists()
        assert git.Repo(tree).head.commit.hexsha == b.shas[0]
        assert len(b.repo.git.worktree("list").splitlines()) == 2
    assert not tree.exists()
    assert [ln.split()[0] for ln in b.repo.git.worktree("list").splitlines()] == [str(b.root)]
    assert b.repo.head.commit.hexsha == head and (b.root / "untracked.txt").read_text() == "mine\n"
    assert b.repo.git.status("--porcelain") == "?? untracked.txt"


def test_checkout_is_removed_when_the_caller_fails(tmp_path: Path, cache: Path) -> None:
    b = _history(tmp_path / "repo")
    with pytest.raises(RuntimeError), checkout_at(b.root, "HEAD~1") as tree:
        raise RuntimeError("the baseline run broke")
    assert not tree.exists() and len(b.repo.git.worktree("list").splitlines()) == 1


@pytest.mark.parametrize("case", ["missing", "not_a_repo", "bad_rev"])
def test_bad_input_is_one_line_and_checks_out_nothing(case: str, tmp_path: Path, cache: Path) -> None:
    b = _history(tmp_path / "repo")
    (tmp_path / "plain").mkdir()
    path, rev = {"missing": (tmp_path / "nope", "HEAD"), "not_a_repo": (tmp_path / "plain", "HEAD"),
                 "bad_rev": (b.root, "no-such-branch")}[case]
    with pytest.raises(BisectError) as err, checkout_at(path, rev):
        pass
    assert "\n" not in err.value.message and str(path.name) in err.value.message + str(path)
    assert len(b.repo.git.worktree("list").splitlines()) == 1


def test_run_metadata_reads_git_through_the_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    b = _history(tmp_path / "repo")
    monkeypatch.delenv("GITHUB_HEAD_REF", raising=False)
    monkeypatch.delenv("GITHUB_REF_NAME", raising=False)
    (b.root / "sub").mkdir()
    info = metadata.commit_info(b.root / "sub")
    engine = gitops.commit_info(gitops.open_repo(b.root), "HEAD")
    assert (info.repo, info.sha, info.subject, info.author, info.email, info.branch) == (
        str(b.root), engine.sha, engine.subject, engine.author, engine.email, "main")
    assert info.subject == "second" and info.author == "Ada Lovelace"


@pytest.mark.parametrize("case", ["missing", "not_a_repo", "no_commits"])
def test_run_metadata_git_errors_are_harness_errors(case: str, tmp_path: Path) -> None:
    where = tmp_path / case
    if case != "missing":
        where.mkdir()
    if case == "no_commits":
        git.Repo.init(where)
    with pytest.raises(HarnessError) as err:
        metadata.commit_info(where)
    text = str(err.value)
    assert "\n" not in text and {"missing": "does not exist", "not_a_repo": "not a git repository",
                                  "no_commits": "no commits yet"}[case] in text
