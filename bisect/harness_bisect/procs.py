"""Probe processes of this bisect: started (a fresh interpreter, or a child forked by a probe server),
tracked in their own process groups and in the worktree's owner file, killed all at once on interrupt."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from harness_bisect.servers import ProbeServer
from harness_bisect.worktrees import Worktree

_LIVE: set = set()  # probe processes (Popen, or _Child of a probe server): anything with .pid
_LIVE_LOCK = threading.Lock()
_STOPPING = threading.Event()  # set by kill_live: a probe that starts afterwards is killed at once


def kill_live() -> None:
    """Kill every probe process still running, and any that a worker thread starts from now on (used when
    the bisect is interrupted: a thread may be between deciding to probe and registering its process)."""
    with _LIVE_LOCK:
        _STOPPING.set()
        procs = list(_LIVE)
    for proc in procs:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def allow_probes() -> None:
    """Clear the stop left by an earlier interrupted bisect in this process."""
    _STOPPING.clear()


def _run(cmd: list[str] | str, tree: Worktree, env: dict[str, str], log: Path, timeout: float,
         cwd: Path) -> tuple[int, bool]:
    """Run in `cwd` inside `tree`, in its own process group (noted in the owner file), output to `log`;
    (returncode, timed_out)."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, shell=isinstance(cmd, str))
        with _LIVE_LOCK:
            _LIVE.add(proc)
            if _STOPPING.is_set():  # kill_live ran before this process was registered
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        tree.note_probe(proc.pid)
        try:
            return proc.wait(timeout=timeout), False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            return proc.wait(), True
        finally:
            with _LIVE_LOCK:
                _LIVE.discard(proc)
            tree.note_probe(None)


@dataclass(frozen=True)
class _Child:
    """A probe forked by a probe server (its own process group), as `kill_live` sees it."""

    pid: int


def _track(proc: object) -> None:
    with _LIVE_LOCK:
        _LIVE.add(proc)  # type: ignore[arg-type]
        stopping = _STOPPING.is_set()
    if stopping:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # type: ignore[attr-defined]
        except (ProcessLookupError, PermissionError):
            pass


def _untrack(proc: object) -> None:
    with _LIVE_LOCK:
        _LIVE.discard(proc)  # type: ignore[arg-type]


def _run_forked(server: ProbeServer, request: dict, tree: Worktree, timeout: float) -> tuple[int, bool]:
    """One probe forked from `server`, tracked like `_run`'s processes; (returncode, timed_out)."""
    child: list[_Child] = []

    def started(pid: int) -> None:
        child.append(_Child(pid))
        _track(child[0])
        tree.note_probe(pid)

    try:
        return server.fork(request, timeout, started)
    finally:
        if child:
            _untrack(child[0])
            tree.note_probe(None)


def _tail(path: Path, limit: int = 300) -> str:
    """The line of a probe's or an install's log that says what went wrong: its first error line, else its last."""
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no output"
    errors = [ln for ln in lines if "Error" in ln or "error" in ln]
    return (errors[0] if errors else (lines[-1] if lines else "no output"))[:limit]
