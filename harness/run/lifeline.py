"""Children that die with their parent (Linux `prctl(PR_SET_PDEATHSIG)`), standard library only.

`harness run` starts pytest with `die_with_parent` as its pre-exec hook and in a process group of its
own; the harness pytest plugin calls it again in every xdist worker (`HARNESS_DIE_WITH_PARENT=1`), so a
`kill -9` of `harness run` takes pytest and its workers with it. Elsewhere (macOS) these are no-ops and
the runner's process-group kill on exit is what remains.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

ENV_FLAG = "HARNESS_DIE_WITH_PARENT"
ENV_PARENT = "HARNESS_PARENT_PID"
_PR_SET_PDEATHSIG = 1
_prctl = _signal = None
if sys.platform.startswith("linux"):
    try:
        _libc = ctypes.CDLL(None, use_errno=True)
        _prctl, _signal = _libc.prctl, _libc.signal
    except (OSError, AttributeError):  # pragma: no cover - exotic libc
        _prctl = _signal = None


def die_with_parent(parent_pid: int | None = None, sig: int = signal.SIGKILL) -> bool:
    """Ask the kernel to send `sig` to this process when its parent exits; if the parent (`parent_pid`)
    is already gone, exit now. Safe in a pre-exec hook (one system call, no allocation, no import)."""
    if _prctl is None:
        return False
    _prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
    if parent_pid is not None and os.getppid() != parent_pid:
        os.kill(os.getpid(), sig)
    return True


def preexec(parent_pid: int):  # noqa: ANN201 - returns the pre-exec callable
    """A `preexec_fn` for subprocess.Popen: die with `parent_pid`, and take SIGINT again (a shell starts
    background jobs with SIGINT ignored; the runner forwards Ctrl-C to pytest's group itself)."""
    def _hook() -> None:
        if _signal is not None:
            _signal(signal.SIGINT, 0)  # SIG_DFL
        die_with_parent(parent_pid)
    return _hook
