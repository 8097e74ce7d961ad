"""`harness ingest`: load results bundles and JUnit XML files (from any CI system), idempotently."""

from __future__ import annotations

import hashlib
import queue
import threading
import uuid as uuid_mod
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from harness.bundle import Record, ResultRecord, RunEnd, RunRecord, read_bundle, short_message
from harness.errors import HarnessError
from harness.store.db import Store
from harness.store.fastpath import FastWriter, PreparedBatch, connect
from harness.store.writer import IngestStats, write_records

JUNIT_NAMESPACE = uuid_mod.UUID("4f1c2d9e-5b7a-4c1e-9a43-2f6d1b8e7c10")


@dataclass
class IngestReport:
    """What one ingest call read and added."""

    files: int
    records: int
    added: IngestStats


def _junit_nodeid(case: ET.Element) -> str:
    classname, name = case.get("classname", ""), case.get("name", "")
    file = case.get("file")
    parts = classname.split(".")
    if file:
        module_parts = Path(file).with_suffix("").parts
        rest = parts[len(module_parts):] if tuple(parts[: len(module_parts)]) == module_parts else parts[-1:]
        return "::".join([file, *rest, name]) if rest else f"{file}::{name}"
    # pytest's junit classname is "pkg.test_mod.TestClass": find the module part, keep classes after it
    for i in range(len(parts), 0, -1):
        if parts[i - 1].startswith("test") or i == 1:
            module, classes = parts[:i], parts[i:]
            if parts[i - 1][:1].isupper() and i > 1:
                continue
            return "::".join(["/".join(module) + ".py", *classes, name])
    return f"{classname}::{name}"


def junit_records(path: Path) -> Iterator[Record]:
    """Records for one JUnit XML file; the run uuid derives from the file content, so re-ingest is a no-op."""
    data = path.read_bytes()
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise HarnessError(f"{path}: not valid JUnit XML ({exc})") from None
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    if root.tag not in ("testsuite", "testsuites"):
        raise HarnessError(f"{path}: not JUnit XML (root element <{root.tag}>)")
    run_uuid = str(uuid_mod.uuid5(JUNIT_NAMESPACE, hashlib.sha256(data).hexdigest()))
    first = suites[0] if suites else root
    started = first.get("timestamp") or datetime.now(timezone.utc).isoformat()
    yield RunRecord(uuid=run_uuid, repo=str(path.resolve().parent), event="junit", hostname=first.get("hostname"),
                    suites=",".join(sorted({s.get("name", "") for s in suites if s.get("name")})) or None,
                    started_at=started)
    for suite in suites:
        for case in suite.iter("testcase"):
            outcome, message = "passed", None
            for child in case:
                if child.tag in ("failure", "error", "skipped"):
                    outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[child.tag]
                    message = short_message(child.get("message") or (child.text or "").strip())
                    break
            yield ResultRecord(run=run_uuid, nodeid=_junit_nodeid(case), outcome=outcome,
                               duration_s=float(case.get("time") or 0.0), message=message,
                               suite=suite.get("name"))
    yield RunEnd(run=run_uuid, status="completed", finished_at=started)


def file_records(path: Path) -> Iterator[Record]:
    if not path.is_file():
        raise HarnessError(f"{path}: no such file")
    if path.suffix.lower() == ".xml":
        return junit_records(path)
    return read_bundle(path)


def ingest(paths: list[str], db_url: str | None, batch_size: int = 50000) -> IngestReport:
    """Validate every file first (nothing is written if one is unreadable), then write them all."""
    if not paths:
        raise HarnessError("ingest needs at least one bundle (.jsonl) or JUnit XML (.xml) file")
    files = [Path(p) for p in paths]
    for f in files:  # fail before touching the database
        first = next(iter(file_records(f)), None)
        if first is None:
            raise HarnessError(f"{f}: empty file, nothing to ingest")
    store = Store.open(db_url)
    total = IngestStats()
    try:
        conn = connect(store.config.url)
        fast = FastWriter(*conn) if conn else None
        for f in files:
            if fast is None:
                stats = write_records(store, file_records(f), batch_size=batch_size)
                for key in ("runs", "results", "benchmarks", "records"):
                    setattr(total, key, getattr(total, key) + getattr(stats, key))
                continue
            _write_pipelined(fast, store, file_records(f), batch_size, total)
        if fast is not None:
            total.results, total.runs = fast.results_added, fast.runs_added
            fast.close()
    finally:
        store.dispose()
    return IngestReport(files=len(files), records=total.records, added=total)


def _write_pipelined(fast: FastWriter, store: Store, records: Iterator[Record], batch_size: int,
                     total: IngestStats) -> None:
    """Parse and prepare the next batch in a thread while the database writes this one (psycopg2 and
    sqlite3 release the GIL while they wait); runs and results through the DBAPI writer (COPY on
    Postgres), benchmarks through SQLAlchemy."""
    batches: queue.Queue[PreparedBatch | BaseException | None] = queue.Queue(maxsize=2)

    def produce() -> None:
        try:
            batch: list[Record] = []
            for record in records:
                batch.append(record)
                if len(batch) >= batch_size:
                    batches.put(fast.prepare(batch))
                    batch = []
            batches.put(fast.prepare(batch))
            batches.put(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the writer thread, raised there
            batches.put(exc)

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    while (item := batches.get()) is not None:
        if isinstance(item, BaseException):
            raise item
        total.records += item.count + len(item.headers) + len(item.ends) + len(item.rest)
        rest = fast.write_prepared(item)
        if rest:
            total.benchmarks += write_records(store, rest).benchmarks
    producer.join()
