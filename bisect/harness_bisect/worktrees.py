"""Probe checkouts as git worktrees in a cache folder: the user's checkout, HEAD and index are never touched.

Each worktree sits in ``<cache>/worktrees/<repo key>/<name>`` next to ``<name>.owner`` (pid and process
start time of the bisect that made it). A bisect that dies, even by SIGKILL, leaves its worktrees
behind; the next pool over the same repository finds them by their dead owner and removes them, both
the folder and git's administrative entry, without `git worktree prune` (which would also drop the
user's own missing worktrees).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import git

_ADD_LOCK = threading.Lock()


def cache_root(override: str | Path | None = None) -> Path:
    """Where bisect keeps worktrees: the override, HARNESS_CACHE_DIR, XDG_CACHE_HOME/harness or ~/.cache."""
    if override:
        return Path(override).expanduser().resolve()
    if os.environ.get("HARNESS_CACHE_DIR"):
        return Path(os.environ["HARNESS_CACHE_DIR"]).expanduser().resolve()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return (Path(base) / "harness").resolve()


def common_dir(repo: git.Repo) -> Path:
    """The repository's shared git dir (`.git` of the main checkout, also from inside a worktree)."""
    return Path(repo.common_dir).resolve()


def repo_key(repo: git.Repo) -> str:
    """A short stable key of the repository (its common git dir)."""
    return hashlib.sha1(str(common_dir(repo)).encode()).hexdigest()[:12]


def _start_time(pid: int) -> str | None:
    """Process start time in clock ticks since boot (Linux), to tell a live owner from a reused pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _alive(owner: dict) -> bool:
    pid = int(owner.get("pid", -1))
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    started = _start_time(pid)
    return started is None or owner.get("start") in (None, started)


def _admin_entries(repo: git.Repo) -> dict[Path, Path]:
    """git's worktree admin dirs, keyed by the worktree folder each points at."""
    out: dict[Path, Path] = {}
    root = common_dir(repo) / "worktrees"
    if not root.is_dir():
        return out
    for admin in root.iterdir():
        try:
            target = Path((admin / "gitdir").read_text().strip()).parent
        except OSError:
            continue
        out[target.resolve() if target.exists() else target] = admin
    return out


def _kill_orphan(owner: dict) -> None:
    """Kill the probe process group a dead bisect left running, if it is still that process."""
    probe = owner.get("probe") or {}
    pid = int(probe.get("pid", -1))
    if pid > 0 and _alive(probe):
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _remove_tree(repo: git.Repo, path: Path, admin: Path | None, owner: dict | None = None) -> None:
    """Drop one of our worktrees: folder, git admin entry, its side files (owner, venv, probe scratch).
    Never touches other worktrees."""
    if owner:
        _kill_orphan(owner)
    if path.exists():
        try:
            repo.git.worktree("remove", "--force", "--force", str(path))
        except git.GitCommandError:
            pass
    for _ in range(3):  # an orphaned probe may still be writing into it
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            break
        time.sleep(0.2)
    for side in path.parent.glob(path.name + ".*"):
        if side.is_dir() and not side.is_symlink():
            shutil.rmtree(side, ignore_errors=True)
        else:
            side.unlink(missing_ok=True)
    if admin is not None and admin.exists():
        shutil.rmtree(admin, ignore_errors=True)


def venv_path(tree: Path) -> Path:
    """The private virtual environment of a worktree (made only when the target has an install command)."""
    return tree.with_name(tree.name + ".venv")


def clean_stale(repo: git.Repo, cache: Path) -> list[Path]:
    """Remove worktrees of this repository left by bisects that are no longer running."""
    folder = cache / "worktrees" / repo_key(repo)
    admins = _admin_entries(repo)
    removed: list[Path] = []
    candidates: set[Path] = set()
    if folder.is_dir():
        candidates |= {p.with_name(p.name.split(".", 1)[0]) for p in folder.iterdir()}
    candidates |= {p for p in admins if folder in p.parents}
    for path in sorted(candidates):
        owner_file = path.with_name(path.name + ".owner")
        try:
            owner = json.loads(owner_file.read_text())
        except (OSError, ValueError):
            owner = {}
        if owner and _alive(owner):
            continue
        _remove_tree(repo, path, admins.get(path), owner)
        removed.append(path)
    return removed


@dataclass
class Worktree:
    """One probe checkout, used by one worker at a time."""

    repo: git.Repo
    path: Path
    index: int
    current: str | None = None
    installed: str | None = None
    data: dict = field(default_factory=dict)

    def note_probe(self, pid: int | None) -> None:
        """Record the running probe's process group in the owner file (a later cleanup kills orphans)."""
        owner_file = self.path.with_name(self.path.name + ".owner")
        try:
            owner = json.loads(owner_file.read_text())
        except (OSError, ValueError):
            return
        owner["probe"] = {"pid": pid, "start": _start_time(pid)} if pid else None
        tmp = owner_file.with_name(owner_file.name + ".tmp")
        tmp.write_text(json.dumps(owner))
        tmp.replace(owner_file)

    def scratch(self) -> Path:
        """A folder beside the worktree for one probe's files (removed with the worktree)."""
        return self.path.parent

    def checkout(self, sha: str) -> None:
        """Detach this worktree at `sha` and drop every untracked file (stale bytecode, build output)."""
        wt = git.Git(str(self.path))
        if self.current != sha:
            wt.checkout("--detach", "--force", "--quiet", sha)
            self.current = sha
        wt.clean("-ffdxq")


class WorktreePool:
    """`count` worktrees of `repo` in the cache folder, created on enter and removed on exit."""

    def __init__(self, repo: git.Repo, count: int, cache: str | Path | None = None, start: str = "HEAD") -> None:
        self.repo = repo
        self.start = start
        self.count = count
        self.cache = cache_root(cache)
        self.folder = self.cache / "worktrees" / repo_key(repo)
        self.trees: list[Worktree] = []

    def __enter__(self) -> WorktreePool:
        self.folder.mkdir(parents=True, exist_ok=True)
        clean_stale(self.repo, self.cache)
        try:
            for i in range(self.count):
                self.trees.append(self._add(i))
        except BaseException:
            self.close()
            raise
        return self

    def _add(self, index: int) -> Worktree:
        pid = os.getpid()
        path = self.folder / f"hb-{pid}-{index}-{os.urandom(3).hex()}"
        owner = {"pid": pid, "start": _start_time(pid), "created": time.time()}
        path.with_name(path.name + ".owner").write_text(json.dumps(owner))
        with _ADD_LOCK:  # git serialises admin-dir creation badly across threads
            self.repo.git.worktree("add", "--detach", "--no-checkout", "--quiet", str(path), self.start)
        return Worktree(repo=self.repo, path=path, index=index)

    def close(self) -> None:
        admins = _admin_entries(self.repo)
        for tree in self.trees:
            _remove_tree(self.repo, tree.path, admins.get(tree.path.resolve()))
        self.trees = []

    def __exit__(self, *exc: object) -> None:
        self.close()
