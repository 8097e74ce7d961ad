"""Install environments shared by a bisect's probe worktrees (imports nothing of `harness`).

A target with an install command used to get a fresh virtualenv and a full install in every probe
worktree. Here one environment is made per *dependency key* (the install command plus the bytes of the
dependency files at the probe commit: pyproject.toml, setup.py, setup.cfg, requirements*.txt,
harness.toml), installed once, and reused by every probe whose commit has the same key, in any
worktree. Each probe still imports the code of its own worktree: its PYTHONPATH starts with the
worktree's source folders, re-pointed from the paths an editable install recorded for the worktree it
ran in (``.pth`` entries, setuptools' editable finder mapping), plus ``src/`` when there is one; those
come before site-packages and before an editable finder. A commit that changes a dependency file gets a
new key, hence a fresh environment and one more install. An install that fails marks its key: probes at
commits with that key are skipped with the reason, without running it again.

Environments live in ``<cache>/envs/<repo key>/<dependency key>/`` and outlive the bisect: a later
bisect of the same repository whose commits have the same dependency files reuses one without
installing (the progress line says so). A successful install writes ``meta.json`` last, so a killed
install is never reused; installs of one key are serialised across processes by a lock file; the
`KEEP` most recently used environments of a repository are kept, older ones removed.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import site
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness_bisect.procs import _tail

KEEP = 4
DEPENDENCY_FILES = ("pyproject.toml", "setup.py", "setup.cfg", "requirements*.txt", "harness.toml")

RunFn = Callable[..., tuple[int, bool]]  # probe._run(cmd, tree, env, log, timeout, cwd)


@dataclass
class Env:
    """One installed environment: its venv, the folder the install ran in, source folders to re-point."""

    venv: Path
    install_root: Path
    sources: list[str] = field(default_factory=list)  # relative to the install root
    failure: str | None = None


def dependency_key(base: Path, command: str, patterns: tuple[str, ...] = DEPENDENCY_FILES) -> str:
    """A hash of the install command and the dependency files present at `base`."""
    h = hashlib.sha1(command.encode())
    for pattern in patterns:
        for path in sorted(base.glob(pattern)):
            if path.is_file():
                h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def make_venv(venv: Path) -> Path:
    """A venv without pip that sees the harness interpreter's packages after its own (a `pip` shim runs
    the parent's pip inside it)."""
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, capture_output=True)
        sites = sorted((venv / "lib").glob("python*/site-packages"))
        parents = [p for p in site.getsitepackages() if Path(p).is_dir()]
        sites[0].joinpath("_harness_parent.pth").write_text(
            "import site; " + "; ".join(f"site.addsitedir({p!r})" for p in parents) + "\n")
        shim = venv / "bin" / "pip"
        shim.write_text(f'#!/bin/sh\nexec "{venv / "bin" / "python"}" -m pip "$@"\n')
        shim.chmod(0o755)
    return venv


def recorded_sources(venv: Path, install_root: Path) -> list[str]:
    """Folders under `install_root` that the install made importable (relative paths)."""
    root = str(install_root)
    found: list[str] = []
    for sp in (venv / "lib").glob("python*/site-packages"):
        for f in [*sp.glob("*.pth"), *sp.glob("__editable__*finder.py")]:
            if f.name == "_harness_parent.pth":
                continue
            try:
                text = f.read_text(errors="replace")
            except OSError:
                continue
            for m in re.finditer(re.escape(root) + r"(/[^'\"\n,}]*)?", text):
                rel = (m.group(1) or "").strip("/")
                target = install_root / rel
                if target.is_file() or (target / "__init__.py").exists():
                    rel = str(Path(rel).parent) if rel else ""
                found.append(rel or ".")
    return list(dict.fromkeys(found))


class SharedEnvs:
    """The environments of one bisect, keyed by dependency key; thread-safe."""

    def __init__(self, cache: Path, patterns: tuple[str, ...] = DEPENDENCY_FILES) -> None:
        self.cache = cache
        self.patterns = patterns
        self.envs: dict[str, Env] = {}
        self.locks: dict[str, threading.Lock] = {}
        self.lock = threading.Lock()
        self.started = 0
        self.installs = 0
        self.install_s = 0.0

    def prepare(self, tree: Any, base: Path, command: str, env: dict[str, str], log: Path, timeout: float,
                run: RunFn, progress: Callable[[str], None] | None = None) -> str | None:
        """Make `tree` use the environment of its commit's dependency key, installing it first if it is
        new; the reason the commit cannot run, or None."""
        key = dependency_key(base, command, self.patterns)
        with self.lock:
            lock = self.locks.setdefault(key, threading.Lock())
        with lock:
            known = self.envs.get(key)
            if known is None:
                known = self.envs[key] = self._load_or_install(tree, base, command, env, log, timeout, run, key,
                                                               progress)
        if known.failure:
            return known.failure
        tree.data["venv"] = known.venv
        tree.data["env"] = known
        return None

    def _load_or_install(self, tree: Any, base: Path, command: str, env: dict[str, str], log: Path,
                         timeout: float, run: RunFn, key: str, progress: Callable[[str], None] | None) -> Env:
        from harness_bisect.worktrees import repo_key

        folder = self.cache / "envs" / repo_key(tree.repo)
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / f"{key}.lock", "w") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)  # another bisect may be installing this key
            meta = folder / key / "meta.json"
            if meta.is_file():
                data = json.loads(meta.read_text())
                meta.touch()
                if progress:
                    progress(f"  install skipped at {(getattr(tree, 'current', None) or '')[:10]}: reusing the "
                             f"environment of an earlier bisect (same dependency files, key {key})")
                return Env(venv=folder / key / "venv", install_root=Path(data["install_root"]),
                           sources=data["sources"])
            shutil.rmtree(folder / key, ignore_errors=True)  # a killed install: start again
            found = self._install(tree, base, command, env, log, timeout, run, key, progress, folder / key)
            if not found.failure:
                meta.write_text(json.dumps({"install_root": str(found.install_root), "sources": found.sources,
                                            "command": command}))
        _prune(folder, keep=KEEP)
        return found

    def _install(self, tree: Any, base: Path, command: str, env: dict[str, str], log: Path, timeout: float,
                 run: RunFn, key: str, progress: Callable[[str], None] | None, where: Path) -> Env:
        venv = make_venv(where / "venv")
        env = {**env, "VIRTUAL_ENV": str(venv), "PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"}
        with self.lock:
            why = "dependency files changed" if self.started else "first install"
            self.started += 1
        started = time.perf_counter()
        rc, timed_out = run(command, tree, env, log, timeout, base)
        took = time.perf_counter() - started
        with self.lock:
            self.installs += 1
            self.install_s += took
        commit = (getattr(tree, "current", None) or "")[:10]
        if progress:
            progress(f"  install at {commit} ({why}): `{command}` took {took:.1f}s"
                     f"{'' if rc == 0 and not timed_out else ' and FAILED'}")
        found = Env(venv=venv, install_root=tree.path, sources=recorded_sources(venv, tree.path))
        if rc != 0 or timed_out:
            found.failure = f"install failed ({'timeout' if timed_out else f'exit {rc}'}): {_tail(log)}"
        return found

    @staticmethod
    def apply(tree: Any, env: dict[str, str]) -> dict[str, str]:
        """The probe environment of `tree`: its venv first on PATH, its own source folders first on
        PYTHONPATH (re-pointed from the worktree the install ran in)."""
        shared: Env | None = tree.data.get("env")
        venv = tree.data.get("venv")
        if venv:
            env["VIRTUAL_ENV"] = str(venv)
            env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        if shared is not None:
            mine = [str(tree.path / rel) for rel in shared.sources if rel != "."]
            if (tree.path / "src").is_dir():
                mine.append(str(tree.path / "src"))
            if mine:
                env["PYTHONPATH"] = os.pathsep.join([*dict.fromkeys(mine), *filter(None, [env.get("PYTHONPATH")])])
        return env


def _prune(folder: Path, keep: int) -> None:
    """Remove all but the `keep` most recently used environments of a repository (not locked ones)."""
    done = sorted((p for p in folder.iterdir() if (p / "meta.json").is_file()),
                  key=lambda p: (p / "meta.json").stat().st_mtime, reverse=True)
    for old in done[keep:]:
        with open(folder / f"{old.name}.lock", "w") as lock_file:
            try:
                fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # in use by another bisect
            shutil.rmtree(old, ignore_errors=True)

