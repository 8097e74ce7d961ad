"""Read-only git queries through GitPython: revisions, the commit range, commit metadata, PR numbers.

Nothing here writes to the user's checkout; worktrees (the only writes) live in `worktrees.py`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import git

_PR_SUFFIX = re.compile(r"\(#(\d+)\)\s*$")
_PR_MERGE = re.compile(r"^Merge pull request #(\d+)\b")


class BisectError(Exception):
    """Bad bisect input (unknown revision, unrelated commits, not a repository, no tests, a test that did
    not run at bad): one line for the user. The platform maps it to its own exit 2."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class CommitInfo:
    """Who and what a commit is, as reported for a culprit."""

    sha: str
    author: str
    email: str
    subject: str
    pr: int | None


def pr_number(subject: str) -> int | None:
    """The PR number in a squash subject "... (#123)" or a merge subject "Merge pull request #123 ..."."""
    for pattern in (_PR_MERGE, _PR_SUFFIX):
        match = pattern.search(subject)
        if match:
            return int(match.group(1))
    return None


def open_repo(path: str | Path) -> git.Repo:
    """The git repository at `path` (its working tree root or below), or a one-line BisectError."""
    p = Path(path).expanduser()
    if not p.exists():
        raise BisectError(f"repository path {p} does not exist: pass --repo PATH of a git checkout")
    try:
        repo = git.Repo(p, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise BisectError(f"{p} is not a git repository: pass --repo PATH of a git checkout") from None
    if repo.bare:
        raise BisectError(f"{p} is a bare repository: bisect needs a repository with a working tree")
    return repo


def subdir_of(repo: git.Repo, path: str | Path) -> str:
    """`path` relative to the repository's top folder ("" for the top itself): where node ids start."""
    top = Path(repo.working_tree_dir or ".").resolve()
    here = Path(path).expanduser().resolve()
    return here.relative_to(top).as_posix() if top in here.parents else ""


def resolve(repo: git.Repo, rev: str) -> str:
    """The full sha of commit `rev`, or a one-line BisectError naming it."""
    if not rev or rev.startswith("-"):
        raise BisectError(f"invalid revision {rev!r}")
    try:
        return repo.git.rev_parse("--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}").strip()
    except git.GitCommandError:
        raise BisectError(f"unknown revision {rev!r} in {repo.working_tree_dir}: "
                          "pass a commit sha, branch or tag that exists there") from None


def is_ancestor(repo: git.Repo, ancestor: str, descendant: str) -> bool:
    """Whether `ancestor` is reachable from `descendant`."""
    return repo.is_ancestor(ancestor, descendant)


def commit_range(repo: git.Repo, good: str, bad: str, first_parent: bool = True) -> list[str]:
    """Commits after `good` up to and including `bad`, oldest first.

    First-parent history by default: a merged PR appears as its merge commit, so it is what gets blamed.
    Without it, each merge is preceded by the commits it brought in (its side branch, oldest first), so
    a PR's own commits are probed and the one that broke the test is blamed (a linear approximation
    of the history graph: side-branch commits are tested without the main line's changes they lacked)."""
    chain = repo.git.rev_list("--first-parent", "--reverse", bad, f"^{good}").split()
    if first_parent:
        return chain
    out: list[str] = []
    seen: set[str] = set()
    merges = set(repo.git.rev_list("--first-parent", "--min-parents=2", bad, f"^{good}").split())
    for sha in chain:
        if sha in merges:
            parents = repo.git.rev_list("--parents", "-n", "1", sha).split()[1:]
            for side in parents[1:]:
                branch = repo.git.rev_list("--topo-order", "--reverse", side, f"^{parents[0]}", f"^{good}").split()
                out.extend(c for c in branch if c not in seen)
                seen.update(branch)
        out.append(sha)
        seen.add(sha)
    return out


def commit_info(repo: git.Repo, sha: str) -> CommitInfo:
    """Author, email, subject and PR number of commit `sha`."""
    commit = repo.commit(sha)
    message = commit.message if isinstance(commit.message, str) else commit.message.decode("utf-8", "replace")
    subject = message.strip().splitlines()[0] if message.strip() else ""
    return CommitInfo(sha=commit.hexsha, author=commit.author.name or "", email=commit.author.email or "",
                      subject=subject, pr=pr_number(subject))


def validate_range(repo: git.Repo, good_rev: str, bad_rev: str) -> tuple[str, str]:
    """Resolve both ends and check that good is a proper ancestor of bad."""
    good, bad = resolve(repo, good_rev), resolve(repo, bad_rev)
    if good == bad:
        raise BisectError(f"good and bad are the same commit ({good[:12]}): nothing to bisect")
    if not is_ancestor(repo, good, bad):
        raise BisectError(f"good {good_rev} ({good[:12]}) is not an ancestor of bad {bad_rev} "
                          f"({bad[:12]}): pass a good revision from bad's history")
    return good, bad
