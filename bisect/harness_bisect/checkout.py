"""A checkout of one commit for a caller outside the search (e.g. the daily pipeline's baseline run).

It is a worktree of the bisect's own pool (`worktrees.WorktreePool`): in the cache folder, the user's
checkout, HEAD and index untouched, removed on exit, and after a crash removed by the next pool over
the same repository.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from harness_bisect.gitops import open_repo, resolve
from harness_bisect.worktrees import WorktreePool, cache_root

__all__ = ["checkout_at"]


@contextmanager
def checkout_at(repo: str | Path, rev: str, cache_dir: str | Path | None = None) -> Iterator[Path]:
    """The top folder of a detached, clean checkout of `rev` of the repository at `repo` (one-line
    `BisectError` for a bad repository or revision)."""
    git_repo = open_repo(repo)
    sha = resolve(git_repo, rev)
    with WorktreePool(git_repo, 1, cache_root(cache_dir), start=sha) as pool:
        tree = pool.trees[0]
        tree.checkout(sha)
        yield tree.path
