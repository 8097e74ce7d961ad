"""Follow a growing results bundle into the store: the single, batched writer of a live run.

`python -m harness.store.follow BUNDLE` is the sidecar the pytest plugin starts for a plain pytest
session: it ingests new lines as they appear and exits after the last line once stdin closes.
`harness run` uses `BundleFollower` in a thread of its own process instead.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from harness.bundle import Record, from_dict
from harness.store.db import Store
from harness.store.writer import IngestStats, RecordWriter


class BundleFollower:
    """Reads complete new lines of a bundle and writes them in batches; remembers its offset."""

    def __init__(self, store: Store, path: str | os.PathLike[str], batch_size: int = 500,
                 on_record: Callable[[Record], None] | None = None) -> None:
        self.store = store
        self.path = Path(path)
        self.batch_size = batch_size
        self.offset = 0
        self.on_record = on_record
        self.stats = IngestStats()

    def poll(self) -> int:
        """Ingest whatever complete lines were appended since the last call; returns how many."""
        if not self.path.exists():
            return 0
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            chunk = fh.read()
        end = chunk.rfind(b"\n")
        if end < 0:
            return 0
        lines = chunk[: end + 1].splitlines()
        records: list[Record] = []
        for raw in lines:
            try:
                records.append(from_dict(json.loads(raw)))
            except (ValueError, TypeError, AttributeError):
                continue  # a torn line from a killed writer
        if records:
            with self.store.engine.connect() as conn:
                writer = RecordWriter(conn, batch_size=self.batch_size)
                for record in records:
                    writer.add(record)
                writer.flush()
                conn.commit()
            for key in ("runs", "results", "benchmarks", "records"):
                setattr(self.stats, key, getattr(self.stats, key) + getattr(writer.stats, key))
        self.offset += end + 1
        if self.on_record:
            for record in records:
                self.on_record(record)
        return len(records)

    def follow(self, done: threading.Event, interval_s: float = 0.25) -> None:
        """Poll until `done` is set, then drain what is left."""
        while not done.is_set():
            if not self.poll():
                done.wait(interval_s)
        while self.poll():
            pass


def main(argv: list[str]) -> int:
    """Sidecar entry point: exit 0 when everything was stored, 1 (one line on stderr) otherwise."""
    path = argv[0]
    done = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
    try:
        store = Store.open(os.environ.get("HARNESS_DB_URL"))
        BundleFollower(store, path).follow(done)
    except Exception as exc:  # noqa: BLE001 - one line for the plugin to show, bundle keeps the data
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        print(f"{type(exc).__name__}: {first}", file=sys.stderr)
        done.wait()  # keep the pipe open until pytest is done, then report
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
