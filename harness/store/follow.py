"""Follow a growing results bundle into the store: the single, batched writer of a live run.

`python -m harness.store.follow BUNDLE` is the sidecar the pytest plugin starts for a plain pytest
session: it ingests new lines as they appear and exits after the last line once stdin closes. It
writes through the DBAPI fast path when the database is already migrated (no SQLAlchemy import, so
it is ready before a short pytest session ends), else through the SQLAlchemy writer.
`harness run` uses `BundleFollower` in a thread of its own process instead.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.bundle import Record, RunEnd
from harness.store.validate import LineError, check_line

if TYPE_CHECKING:
    from harness.store.db import Store
    from harness.store.writer import IngestStats


class BundleTail:
    """Complete new lines of a bundle since the last read (torn lines are skipped)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.offset = 0
        self.rejected = 0  # lines that cannot be stored (bad JSON, types, sizes), skipped
        self.first_reason: str | None = None  # why the first of them could not be

    def read(self) -> tuple[list[Record], int]:
        """New records and the offset just past them (call `commit(offset)` once they are handled)."""
        if not self.path.is_file():  # not yet written (or a device, a pipe: never a bundle)
            return [], self.offset
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            chunk = fh.read()
        end = chunk.rfind(b"\n")
        if end < 0:
            return [], self.offset
        records: list[Record] = []
        for raw in chunk[: end + 1].splitlines():
            try:
                record = check_line(raw)
            except LineError as exc:  # `harness ingest` of the bundle lists it in <bundle>.rejected.jsonl
                self.rejected += 1
                self.first_reason = self.first_reason or str(exc)
                continue
            if record is not None:
                records.append(record)
        return records, self.offset + end + 1

    def commit(self, offset: int) -> None:
        self.offset = offset


class BundleFollower:
    """Reads complete new lines of a bundle and writes them with the SQLAlchemy writer. The runs'
    rollups are refreshed with a batch at most every `ROLLUPS_EVERY_S` (and with a run's end); batches
    between mark them owed (harness/store/pending.py), and `settle` pays what is left. A refresh costs
    time in proportion to the run's size so far: once per batch, a long run would spend its follower's
    time refreshing (300 ms a batch at 80,000 results on SQLite)."""

    def __init__(self, store: Store, path: str | os.PathLike[str], batch_size: int = 500,
                 on_record: Callable[[Record], None] | None = None) -> None:
        from harness.store.writer import IngestStats

        self.store = store
        self.tail = BundleTail(path)
        self.batch_size = batch_size
        self.on_record = on_record
        self.stats: IngestStats = IngestStats()
        self._refreshed_at = time.monotonic()
        self._owed: set[int] = set()  # run ids written since their last refresh

    @property
    def offset(self) -> int:
        return self.tail.offset

    def poll(self) -> int:
        """Ingest whatever complete lines were appended since the last call; returns how many."""
        from harness.store.writer import RecordWriter

        records, offset = self.tail.read()
        if records:
            from harness.store import pending, rollups

            now = time.monotonic()
            refresh = now - self._refreshed_at >= ROLLUPS_EVERY_S or any(type(r) is RunEnd for r in records)
            with self.store.engine.connect() as conn:
                writer = RecordWriter(conn, batch_size=self.batch_size)
                for record in records:
                    writer.add(record)
                writer.flush()
                ids = set(writer._run_ids.values())
                if refresh:  # tables kept at write time, same transaction
                    rollups.refresh(conn, ids | self._owed)
                else:
                    pending.mark(conn, ids)
                conn.commit()
            self._owed = set() if refresh else self._owed | ids
            if refresh:
                self._refreshed_at = now
            for key in ("runs", "results", "benchmarks", "records"):
                setattr(self.stats, key, getattr(self.stats, key) + getattr(writer.stats, key))
        self.tail.commit(offset)
        if self.on_record:
            for record in records:
                self.on_record(record)
        return len(records)

    def settle(self) -> None:
        """Refresh the rollups of the runs written since their last refresh."""
        if self._owed:
            from harness.store import rollups

            with self.store.engine.connect() as conn:
                rollups.refresh(conn, self._owed)
                conn.commit()
            self._owed = set()

    def follow(self, done: threading.Event, interval_s: float = 0.25) -> None:
        """Poll until `done` is set, then drain what is left and settle the rollups."""
        while not done.is_set():
            if not self.poll():
                done.wait(interval_s)
        while self.poll():
            pass
        self.settle()


HEARTBEAT_S = 15.0  # as `harness run`: a run followed here is alive while its sidecar is
READ_S = 0.05  # new lines are read, checked and prepared this often: little is left for the session's end
WRITE_S = 0.25  # live batches at most this often: the end of a session writes at most this much
ROLLUPS_EVERY_S = 10.0  # live batches refresh the rollups at most this often (each one marks them owed)


def _follow_fast(writer: Any, url: str, path: str, done: threading.Event) -> BundleTail:
    """Write the bundle's lines as they come until `done` is set and nothing is left; the last batches'
    rollups may be owed (`FastWriter.refresh_rollups` pays them). Lines are checked and turned into rows
    as soon as they are read, on this process's core while the tests run; they are written in batches,
    so that what the end of the session waits for is one batch of ready rows."""
    from harness.store.fastpath import PreparedBatch

    tail = BundleTail(path)
    ready = PreparedBatch()
    last_beat = last_rollups = time.monotonic()
    last_write = last_beat - WRITE_S  # the first lines are written as soon as they are read
    writer.beat()
    while True:
        finishing = done.is_set()
        records, offset = tail.read()
        if records:
            ready.extend(writer.prepare(records))
        tail.commit(offset)
        now = time.monotonic()
        if not ready.empty() and (finishing or now - last_write >= WRITE_S):
            refresh = not finishing and now - last_rollups >= ROLLUPS_EVERY_S
            rest = writer.write_prepared(ready, refresh=refresh)
            ready, last_write = PreparedBatch(), now
            if refresh:
                last_rollups = now
            if rest:  # benchmark records: the full writer (imports SQLAlchemy only when needed)
                from harness.store.db import Store
                from harness.store.writer import write_records

                store = Store.open(url, upgrade=False)
                write_records(store, rest)
                store.dispose()
        if finishing and not records:
            writer.sync()
            return tail
        if now - last_beat >= HEARTBEAT_S:
            last_beat = now
            writer.beat()
        if not finishing:
            done.wait(READ_S)


def _refused(tail: BundleTail) -> str | None:
    """The line that says some of the bundle could not be stored (never `stored` then), else None."""
    if not tail.rejected:
        return None
    return (f"RefusedLines: {tail.rejected} line(s) of the bundle could not be stored (the first: "
            f"{tail.first_reason})")


def _say_stored() -> None:
    """Tell the plugin every result is durable (harness/run/sidecar.py waits for this line)."""
    sys.stdout.write("stored\n")
    sys.stdout.flush()


def _detach() -> bool:
    """Fork where the OS can: True in the parent, which exits at once so that pytest need not wait for
    the rollup refresh; the child lets go of pytest's pipes and of its process group, then refreshes.
    False (no fork: the refresh runs here, and the plugin waits for it) in the child or without fork."""
    if not hasattr(os, "fork"):
        return False
    sys.stdout.flush()
    sys.stderr.flush()
    if os.fork():
        return True
    os.setsid()  # a Ctrl-C of the terminal's foreground group is not for us any more
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    return False


def main(argv: list[str]) -> int:
    """Sidecar entry point: `stored` on stdout once every result is durable, then the rollups; exit 0
    when both were done, 1 (one line on stderr) otherwise."""
    path, url = argv[0], os.environ.get("HARNESS_DB_URL") or ""
    done = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
    try:
        from harness.store.fastpath import FastWriter, connect

        conn = connect(url)
        writer = FastWriter(*conn) if conn else None
        if writer is not None and writer.at_head():
            writer.refresh_pending(limit=3)  # owed by a writer that died after `stored`; few: pytest may end soon
            refused = _refused(_follow_fast(writer, url, path, done))
            if refused:
                writer.refresh_rollups()
                writer.close()
                print(refused, file=sys.stderr)
                return 1
            _say_stored()
            if _detach():  # the session goes on at once; the rollups are refreshed by a child of ours
                os._exit(0)
            writer.refresh_rollups()  # a failure leaves them owed (harness/store/pending.py), not wrong
            writer.close()
        else:
            if writer is not None:
                writer.close()
            from harness.store.db import Store

            follower = BundleFollower(Store.open(url), path)
            follower.follow(done)
            refused = _refused(follower.tail)
            if refused:
                print(refused, file=sys.stderr)
                return 1
            _say_stored()
    except Exception as exc:  # noqa: BLE001 - one line for the plugin to show; the bundle keeps the data
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        print(f"{type(exc).__name__}: {first}", file=sys.stderr)
        done.wait()  # keep the pipe open until pytest is done, then report
        return 1
    return 0


if __name__ == "__main__":
    import signal

    # A terminal's Ctrl-C is for pytest, which ends the session as cancelled and then closes our stdin:
    # the sidecar writes everything up to that end rather than dying with it (SIGTERM still ends it).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    code = main(sys.argv[1:])
    sys.stderr.flush()
    os._exit(code)  # skip interpreter teardown: pytest is waiting on us
