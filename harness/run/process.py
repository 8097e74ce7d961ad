"""One pytest pass as a child process that shares the runner's fate.

pytest runs in a session (process group) of its own, with `PR_SET_PDEATHSIG` (harness/run/lifeline.py)
so that a `kill -9` of `harness run` kills it; the harness plugin does the same in each xdist worker,
and a watchdog process (its own session, reading a pipe from the runner) kills the whole group, a
test's own subprocesses included, once the runner is gone.
On Ctrl-C / SIGTERM the runner forwards SIGINT to the group (pytest finishes its session and flushes the
bundle), waits `grace_s`, then kills the group. After every pass the group is killed, so nothing a test
started outlives the run.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from harness.run.lifeline import ENV_FLAG, preexec

GRACE_S = 10.0


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def run_pytest(argv: list[str], env: dict[str, str], cwd: Path, log: Path, grace_s: float = GRACE_S) -> int:
    """Run one pass, its output appended to `log`; returns pytest's exit code (3 if it cannot start).
    KeyboardInterrupt (Ctrl-C, or SIGTERM turned into it by the runner) stops the pass and re-raises."""
    with open(log, "a", encoding="utf-8") as fh:
        fh.write("$ " + " ".join(argv) + "\n")
        fh.flush()
        try:
            proc = subprocess.Popen(argv, env={**env, ENV_FLAG: "1"}, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True,
                                    preexec_fn=preexec(os.getpid()))  # noqa: PLW1509 - one syscall
        except OSError as exc:
            fh.write(f"harness: cannot start pytest: {exc}\n")
            return 3
        watchdog = _watchdog(proc.pid)
        try:
            return proc.wait()
        except BaseException:
            _killpg(proc.pid, signal.SIGINT)  # pytest ends its session, flushes the bundle
            try:
                proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                pass
            raise
        finally:
            _killpg(proc.pid, signal.SIGKILL)  # workers, and anything a test started
            proc.wait()
            if watchdog is not None:
                os.close(watchdog[1])
                watchdog[0].wait()


# Blocks on a pipe from the runner; when the runner is gone (even `kill -9`), kills pytest's whole group:
# the processes PR_SET_PDEATHSIG does not reach (a test's own subprocesses).
_WATCHDOG = ("import os, signal, sys\nsys.stdin.buffer.read()\ntry:\n    os.killpg(int(sys.argv[1]), signal.SIGKILL)\n"
             "except OSError:\n    pass\n")


def _watchdog(pgid: int) -> tuple[subprocess.Popen[bytes], int] | None:
    """A tiny process in a session of its own that outlives the runner just long enough to kill `pgid`."""
    read_end, write_end = os.pipe()
    try:
        dog = subprocess.Popen([sys.executable, "-S", "-c", _WATCHDOG, str(pgid)], stdin=read_end,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    except OSError:
        os.close(write_end)
        return None
    finally:
        os.close(read_end)
    return dog, write_end


_PRIORITY = (
    re.compile(r"^harness: .*"),  # the plugin's own line (INTERNALERROR cause) or "cannot start"
    re.compile(r"^[^:]{1,80}: error: .*"),  # argparse: "__main__.py: error: unrecognized arguments: --x"
    re.compile(r"^ERROR: (?!usage:).*"),  # "ERROR: file or directory not found: x"
    re.compile(r"^INTERNALERROR> E\s+(\w+\.)*\w+(Error|Exception|Exit)\b.*"),
    re.compile(r"^ERROR: .*"),
)


def log_line(log: Path, start: int = 0) -> str:
    """The line of a pass's log (from byte `start`) that says why pytest could not run."""
    try:
        with open(log, "rb") as fh:
            fh.seek(start)
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [ln.rstrip() for ln in text.splitlines() if ln.strip() and not ln.startswith("$ ")]
    for pattern in _PRIORITY:
        hits = [ln for ln in lines if pattern.match(ln)]
        if hits:
            line = hits[-1] if pattern.pattern.startswith("^INTERNAL") else hits[0]
            line = re.sub(r"^INTERNALERROR> E\s+", "INTERNALERROR: ", line)
            return line.removeprefix("harness: ")[:500]
    return lines[-1][:500] if lines else ""


__all__ = ["GRACE_S", "log_line", "run_pytest"]
