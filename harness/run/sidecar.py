"""The store sidecar of a plain `pytest --harness-db` session, as the pytest process sees it.

The sidecar (`python -m harness.store.follow BUNDLE`, harness/store/follow.py) follows the session's
bundle into the store. At the session's end the plugin closes the sidecar's stdin; the sidecar writes
what is left, makes it durable and prints `stored` on stdout; pytest says "stored" only after that line.
The run's rollups (the tables the dashboards read) are refreshed after it: by a detached child of the
sidecar where the OS can fork (pytest does not wait for them; until they commit the run is marked owed,
and a lost refresh is paid by the next writer: harness/store/pending.py), else by the sidecar itself,
whose exit pytest waits for when it unconfigures. Standard library only: the plugin imports this in
every test process.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

STORED = b"stored"  # the line the sidecar prints once every result is durable
WAIT_S = 300.0  # the longest a session waits for its results to be written


def start(bundle: Path, db_url: str) -> subprocess.Popen[bytes]:
    """Start the one store writer of a plain pytest session: it follows `bundle` until stdin closes."""
    env = {**os.environ, "HARNESS_DB_URL": db_url}
    return subprocess.Popen([sys.executable, "-m", "harness.store.follow", str(bundle)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def _last_line(err: bytes | None, default: str) -> str:
    lines = (err or b"").decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else default


class Sidecar:
    """One running sidecar: `finish` when the bundle is complete, `reap` before the process exits."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.stored: bool | None = None
        self.error: str | None = None  # why the results were not stored
        self._err: list[bytes] = []
        self._err_reader: threading.Thread | None = None

    def _drain_stderr(self) -> None:
        """Read the sidecar's stderr to its end in a thread: a chatty sidecar never blocks on a full pipe."""
        stream = self.proc.stderr
        if stream is not None and self._err_reader is None:
            self._err_reader = threading.Thread(target=lambda: self._err.append(stream.read()), daemon=True)
            self._err_reader.start()

    def _stderr_line(self, default: str, timeout_s: float) -> str:
        if self._err_reader is not None:
            self._err_reader.join(timeout_s)
        return _last_line(b"".join(self._err), default)

    def finish(self, timeout_s: float = WAIT_S) -> bool:
        """Tell the sidecar the bundle is complete and wait until it says `stored` (True) or stops
        without saying it (False, `error` says why): only then may the session report "stored"."""
        proc = self.proc
        self._drain_stderr()
        try:
            if proc.stdin is not None:
                proc.stdin.close()
        except OSError:  # the sidecar is gone already; its exit says why
            pass
        proc.stdin = None
        said: list[bytes] = []
        reader = threading.Thread(target=lambda: said.append(proc.stdout.readline() if proc.stdout else b""),
                                  daemon=True)
        reader.start()
        reader.join(timeout_s)
        if said and said[0].strip() == STORED:
            self.stored = True
            return True
        self.stored = False
        if reader.is_alive():
            proc.kill()
            self.error = "timed out writing to the store"
            return False
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
        self.error = self._stderr_line(f"the store writer exited with {proc.returncode} before storing", 5.0)
        return False

    def reap(self, timeout_s: float = WAIT_S) -> str | None:
        """After `stored`: wait for the sidecar's exit (its rollup refresh, where it did not detach one);
        the reason that refresh failed, else None."""
        if not self.stored:
            return None
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return "timed out refreshing them"
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self._stderr_line("unknown error", 5.0) if self.proc.returncode != 0 else None
