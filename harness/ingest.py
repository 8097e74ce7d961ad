"""`harness ingest`: load results bundles and JUnit XML files (from any CI system), idempotently."""

from __future__ import annotations

import hashlib
import os
import queue
import sqlite3
import threading
import uuid as uuid_mod
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import psycopg2
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring as safe_fromstring
from sqlalchemy.exc import SQLAlchemyError

from harness.bundle import Record, RunEnd
from harness.errors import HarnessError
from harness.signature import exception_type, model_of_nodeid, signature, skip_category, tail
from harness.store import lifecycle
from harness.store.bundle_files import looks_like_bundle, read_lines
from harness.store.db import Store, StoreError, first_line, redact
from harness.store.fastpath import FastWriter, PreparedBatch, connect
from harness.store.validate import LineError, RejectLog, check
from harness.store.writer import IngestStats, write_records

DB_ERRORS = (SQLAlchemyError, psycopg2.Error, sqlite3.Error)
BATCH_SIZE = int(os.environ.get("HARNESS_INGEST_BATCH", "50000"))  # results per transaction

JUNIT_NAMESPACE = uuid_mod.UUID("4f1c2d9e-5b7a-4c1e-9a43-2f6d1b8e7c10")


@dataclass
class IngestReport:
    """What one ingest call read, stored (valid records, new or already there), refused and added."""

    files: int
    records: int
    added: IngestStats
    rejected: int = 0
    rejected_files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # e.g. a rejected-lines file that could not be written
    abandoned: list[str] = field(default_factory=list)  # running runs with no heartbeat, now `abandoned`

    def summary(self) -> str:
        """One line: "N stored, M rejected (see FILE)" and what was new."""
        see = f" (see {', '.join(self.rejected_files)})" if self.rejected_files else ""
        return (f"ingested {self.files} file(s): {self.records} stored, {self.rejected} rejected{see}; "
                f"{self.added.runs} new runs, {self.added.results} new results, "
                f"{self.added.benchmarks} new benchmarks"
                + (f"; marked {len(self.abandoned)} run(s) abandoned (no heartbeat): {', '.join(self.abandoned)}"
                   if self.abandoned else ""))

    def to_json(self) -> dict:
        return {"files": self.files, "records": self.records, "stored": self.records, "rejected": self.rejected,
                "rejected_files": self.rejected_files, "notes": self.notes,
                "added": {"runs": self.added.runs, "results": self.added.results,
                          "benchmarks": self.added.benchmarks}, "abandoned": self.abandoned}


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


def parse_junit(path: Path) -> ET.Element:
    """The root of a JUnit XML file, parsed with defusedxml (no entities, no external references)."""
    try:
        root = safe_fromstring(path.read_bytes())
    except ET.ParseError as exc:
        raise HarnessError(f"{path}: not valid JUnit XML ({exc})") from None
    except DefusedXmlException as exc:
        raise HarnessError(f"{path}: refused, the XML uses a forbidden construct ({type(exc).__name__})") from None
    if root.tag not in ("testsuite", "testsuites"):
        raise HarnessError(f"{path}: not JUnit XML (root element <{root.tag}>)")
    return root


def junit_records(path: Path, log: RejectLog | None = None, root: ET.Element | None = None) -> Iterator[Record]:
    """Records for one JUnit XML file; the run uuid derives from the file content, so re-ingest is a no-op.
    A test case that cannot be stored goes to `log` (its `line` is the case's position in the file)."""
    data = path.read_bytes()
    root = root if root is not None else parse_junit(path)
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    run_uuid = str(uuid_mod.uuid5(JUNIT_NAMESPACE, hashlib.sha256(data).hexdigest()))
    first = suites[0] if suites else root
    started = first.get("timestamp") or datetime.now(timezone.utc).isoformat()
    try:
        datetime.fromisoformat(started)
    except ValueError:
        started = datetime.now(timezone.utc).isoformat()
    yield check({"kind": "run", "uuid": run_uuid, "repo": str(path.resolve().parent), "event": "junit",
                 "hostname": (first.get("hostname") or "")[:255] or None,
                 "suites": ",".join(sorted({s.get("name", "") for s in suites if s.get("name")}))[:255] or None,
                 "started_at": started})
    position = 0
    for suite in suites:
        for case in suite.iter("testcase"):
            position += 1
            time_attr = case.get("time")
            try:
                duration = float(time_attr) if time_attr not in (None, "") else 0.0
                nodeid = _junit_nodeid(case)
                yield check({"kind": "result", "run": run_uuid, "nodeid": nodeid,
                             "duration_s": duration, "suite": suite.get("name"), **_junit_outcome(case, nodeid)})
            except (ValueError, LineError) as exc:
                reason = str(exc) if isinstance(exc, LineError) else f"time: {time_attr[:40]!r} is not a number"
                if log is not None:
                    log.reject(position, f"testcase {case.get('name', '?')[:200]!r}: {reason}",
                               ET.tostring(case, encoding="unicode")[:65536])
    yield RunEnd(run=run_uuid, status="completed", finished_at=started)


def _junit_outcome(case: ET.Element, nodeid: str) -> dict[str, object]:
    """Outcome, message and what JUnit carries of the failure's identity: the `type` of a failure or
    error (else the type its message names), its signature, the skip category of a skip, the case's
    `timestamp` if it has one, and the tail of system-out / system-err for a failure or error."""
    out: dict[str, object] = {"outcome": "passed", "message": None}
    stamp = case.get("timestamp")
    if stamp:
        try:
            datetime.fromisoformat(stamp)
            out["started_at"] = stamp
        except ValueError:
            pass
    for child in case:
        if child.tag not in ("failure", "error", "skipped"):
            continue
        outcome = out["outcome"] = {"failure": "failed", "error": "error", "skipped": "skipped"}[child.tag]
        message = out["message"] = child.get("message") or (child.text or "").strip() or None
        if outcome == "skipped":
            xfail = child.get("type") == "pytest.xfail"  # pytest's JUnit: an expected failure, as the plugin says
            out["outcome"] = "xfail" if xfail else "skipped"
            out["skip_category"] = skip_category(message, xfail=xfail)
            return out
        exc = exception_type(message, (child.get("type") or "").strip()[:255] or None)
        out["exception"], out["signature"] = exc, signature(exc, message, model_of_nodeid(nodeid))
        streams = [f"----- {el.tag} -----\n{el.text}" for el in case if el.tag in ("system-out", "system-err")
                   and el.text and el.text.strip()]
        out["output_tail"] = tail("\n".join(streams)) if streams else None
        return out
    return out


def _open_input(path: Path) -> ET.Element | None:
    """Refuse, before anything is written, an input that is missing, unreadable, empty or not a
    bundle / JUnit file; the parsed root of a JUnit file."""
    if not path.is_file():
        what = ("a directory" if path.is_dir() else "not a regular file") if path.exists() else "no such file"
        raise HarnessError(f"{path}: {what}" + (": pass the bundle files in it" if path.is_dir() else ""))
    try:
        if path.stat().st_size == 0:
            raise HarnessError(f"{path}: empty file, nothing to ingest")
        if path.suffix.lower() == ".xml":
            return parse_junit(path)
        if not looks_like_bundle(path):
            raise HarnessError(f"{path}: not a results bundle (no line is a JSON record with a known kind)")
    except OSError as exc:
        raise HarnessError(f"{path}: cannot read ({exc.strerror})") from None
    return None


def ingest(paths: list[str], db_url: str | None, batch_size: int = BATCH_SIZE) -> IngestReport:
    """Check every file first (nothing is written if one is unusable), then write the storable
    records of each, in one transaction per batch; refused lines go to `<file>.rejected.jsonl`.
    A store that fails mid-write raises `StoreError`: the batches committed stay (each is whole), and
    running the same ingest again completes the work (every record has a natural key)."""
    if not paths:
        raise HarnessError("ingest needs at least one bundle (.jsonl) or JUnit XML (.xml) file")
    files = [Path(p) for p in paths]
    roots = [_open_input(f) for f in files]
    empty = [f for f, root in zip(files, roots, strict=True) if root is not None and root.find(".//testcase") is None]
    if len(empty) == len(files):  # no run made of nothing: it would be the next run's baseline
        raise HarnessError(f"{empty[0]}: JUnit XML with no test case, nothing to ingest"
                           + (f" (nor in the {len(empty) - 1} other file(s))" if len(empty) > 1 else ""))
    files, roots = zip(*[(f, r) for f, r in zip(files, roots, strict=True) if f not in empty], strict=True)
    store = Store.open(db_url)
    report = IngestReport(files=len(files), records=0, added=IngestStats())
    report.notes += [f"{f}: JUnit XML with no test case, nothing ingested from it" for f in empty]
    fast: FastWriter | None = None
    try:
        conn = connect(store.config.url)
        fast = FastWriter(*conn) if conn else None
        if fast is not None:
            fast.refresh_pending()  # rollups a live writer left owed when it died (harness/store/pending.py)
        for f, root in zip(files, roots, strict=True):
            log = RejectLog(f)
            records = junit_records(f, log, root) if root is not None else read_lines(f, log)
            try:
                if fast is None:
                    stats = write_records(store, records, batch_size=batch_size)
                    for key in ("runs", "results", "benchmarks", "records"):
                        setattr(report.added, key, getattr(report.added, key) + getattr(stats, key))
                else:
                    _write_pipelined(fast, store, records, batch_size, report.added)
                    fast.refresh_rollups()  # each run's rollups once, from everything the file held
            finally:
                log.close()
            if log.count:
                report.rejected += log.count
                report.rejected_files.append(str(log.path))
            if log.error:
                report.notes.append(log.error)
        if fast is not None:
            fast.sync()
            report.added.results, report.added.runs = fast.results_added, fast.runs_added
        report.abandoned = lifecycle.mark_abandoned(store)  # the next writer ends runs whose process died
    except DB_ERRORS as exc:
        raise StoreError(f"writing to {redact(store.config.url)} failed: {first_line(exc)} (batches already "
                         "written are whole; run the same ingest again to complete it)") from None
    except OSError as exc:
        raise HarnessError(f"reading {exc.filename or 'an input'} failed: {exc.strerror}") from None
    finally:
        if fast is not None:
            fast.close()
        store.dispose()
    report.records = report.added.records
    return report


def _write_pipelined(fast: FastWriter, store: Store, records: Iterator[Record], batch_size: int,
                     total: IngestStats) -> None:
    """Parse, check and prepare the next batch in a thread while the database writes this one
    (psycopg2 and sqlite3 release the GIL while they wait); runs and results through the DBAPI
    writer (COPY on Postgres), benchmarks through SQLAlchemy. A write error stops the reader too."""
    batches: queue.Queue[PreparedBatch | BaseException | None] = queue.Queue(maxsize=2)
    stop = threading.Event()

    def put(item: PreparedBatch | BaseException | None) -> bool:
        while not stop.is_set():
            try:
                batches.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            batch: list[Record] = []
            for record in records:
                batch.append(record)
                if len(batch) >= batch_size:
                    if not put(fast.prepare(batch)):
                        return
                    batch = []
            if put(fast.prepare(batch)):
                put(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the writer thread, raised there
            put(exc)

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    try:
        while (item := batches.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            rest = fast.write_prepared(item, refresh=False)  # rollups once per file, below: not per batch
            if rest:
                total.benchmarks += write_records(store, rest).benchmarks
            total.records += item.count + len(item.headers) + len(item.ends) + len(item.rest)
    finally:
        stop.set()
        producer.join()
