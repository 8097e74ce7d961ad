"""Idempotent, batched writes of bundle records into the store (never a commit per row)."""

from __future__ import annotations

import random
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Connection, Insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError

from harness.bundle import BenchmarkRecord, Record, ResultRecord, RunEnd, RunRecord
from harness.store import rollups
from harness.store.db import Store
from harness.store.fastpath import TRANSIENT
from harness.store.schema import (
    Benchmark,
    DeviceMeasurement,
    ModelMeasurement,
    Run,
    TestResult,
    nodeid_hash,
    utcnow,
)

RUN_COLUMNS = {f.name for f in fields(RunRecord)} - {"uuid"}


@dataclass
class IngestStats:
    """What an ingest added (re-ingesting the same data adds zeros)."""

    runs: int = 0
    results: int = 0
    benchmarks: int = 0
    records: int = 0


def parse_time(value: str | datetime | None) -> datetime | None:
    """ISO text (any offset) to naive UTC."""
    if value is None or isinstance(value, datetime):
        return value
    dt = datetime.fromisoformat(value)
    if dt.tzinfo is not None:
        dt = dt.astimezone(timezone.utc).replace(tzinfo=None)
    return dt


def _insert(conn: Connection, table: Any) -> Insert:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


def run_row(record: RunRecord) -> dict[str, Any]:
    row = {k: v for k, v in asdict(record).items() if k in RUN_COLUMNS or k == "uuid"}
    row["started_at"] = parse_time(record.started_at) or utcnow()
    row["finished_at"] = parse_time(record.finished_at)
    return row


class RecordWriter:
    """Writes records on one connection; call `flush()` (and commit) at batch boundaries."""

    def __init__(self, conn: Connection, batch_size: int = 5000) -> None:
        self.conn = conn
        self.batch_size = batch_size
        self.stats = IngestStats()
        self._run_ids: dict[str, int] = {}
        self._results: list[dict[str, Any]] = []

    def run_id(self, uuid: str, record: RunRecord | None = None) -> int:
        """The id of run `uuid`, inserting it (from `record`, or a bare row) when missing."""
        if uuid in self._run_ids and record is None:
            return self._run_ids[uuid]
        table = Run.__table__
        row = run_row(record) if record else {"uuid": uuid, "started_at": utcnow(), "status": "partial"}
        res = self.conn.execute(_insert(self.conn, table).values(**row)
                                .on_conflict_do_nothing(index_elements=["uuid"]))
        self.stats.runs += res.rowcount or 0
        run_id = self.conn.execute(select(table.c.id).where(table.c.uuid == uuid)).scalar_one()
        if record is not None and not res.rowcount:
            # Known run: fill in metadata that was missing (a bare row made by an early result).
            fill = {k: v for k, v in row.items() if v is not None and k not in ("uuid", "status")}
            existing = self.conn.execute(select(table).where(table.c.id == run_id)).mappings().one()
            fill = {k: v for k, v in fill.items() if existing[k] in (None, 0) or k == "started_at"}
            if fill:
                self.conn.execute(update(table).where(table.c.id == run_id).values(**fill))
        self._run_ids[uuid] = run_id
        return run_id

    def add(self, record: Record) -> None:
        self.stats.records += 1
        if isinstance(record, ResultRecord):
            self._results.append(self._result_row(record))
            if len(self._results) >= self.batch_size:
                self.flush()
        elif isinstance(record, RunRecord):
            self.run_id(record.uuid, record)
        elif isinstance(record, RunEnd):
            self.finish(record)
        elif isinstance(record, BenchmarkRecord):
            self.flush()
            self.add_benchmark(record)

    def _result_row(self, r: ResultRecord) -> dict[str, Any]:
        run_id = self.run_id(r.run)
        return {
            "run_id": run_id, "nodeid": r.nodeid, "nodeid_hash": nodeid_hash(r.nodeid),
            "model": r.model, "suite": r.suite, "outcome": r.outcome,
            "duration_s": float(r.duration_s or 0.0), "message": r.message, "attempt": int(r.attempt or 1),
            "worker": r.worker, "device": r.device, "started_at": parse_time(r.started_at),
            "exception": r.exception, "signature": r.signature, "skip_category": r.skip_category,
            "output_tail": r.output_tail,
        }

    def flush(self) -> None:
        """Write pending results; the caller refreshes the rollups and commits right after."""
        if self._results:
            stmt = _insert(self.conn, TestResult.__table__).on_conflict_do_nothing(
                index_elements=["run_id", "nodeid_hash", "attempt"])
            res = self.conn.execute(stmt, self._results)
            self.stats.results += max(res.rowcount or 0, 0)
            self._results = []

    def finish(self, end: RunEnd) -> None:
        table = Run.__table__
        run_id = self.run_id(end.run)
        self.conn.execute(update(table).where(table.c.id == run_id)
                          .values(status=end.status, finished_at=parse_time(end.finished_at)))

    def add_benchmark(self, b: BenchmarkRecord) -> None:
        """Insert a benchmark and its measurements unless its natural key (run, test, config, dtype,
        batch, prompt) is already stored: the header insert decides, atomically, who writes them."""
        run_id = self.run_id(b.run)
        t = Benchmark.__table__
        run = self.conn.execute(select(Run.__table__).where(Run.__table__.c.id == run_id)).mappings().one()
        created = parse_time(b.created_at) or utcnow()
        bench_id = self.conn.execute(_insert(self.conn, t).values(
            branch=run["branch"], commit_id=run["commit_sha"],
            commit_message=(run["commit_subject"] or "")[:70] or None,
            gpu_name=b.gpu_name or run["gpu_name"], created_at=created, run_id=run_id,
            nodeid_hash=nodeid_hash(b.nodeid), model=b.model, config=b.config, dtype=b.dtype,
            batch_size=b.batch_size, prompt_length=b.prompt_length,
        ).on_conflict_do_nothing().returning(t.c.benchmark_id)).scalar()
        if bench_id is None:
            return
        self.conn.execute(ModelMeasurement.__table__.insert().values(
            benchmark_id=bench_id, measurements=b.measurements, time=created))
        samples = [{
            "benchmark_id": bench_id, "cpu_util": s.get("cpu_util"), "mem_megabytes": s.get("mem_megabytes"),
            "gpu_util": s.get("gpu_util"), "gpu_mem_megabytes": s.get("gpu_mem_megabytes"),
            "gpu_index": s.get("gpu_index"), "time": parse_time(s.get("time")) or created,
        } for s in b.device_samples]
        if samples:
            self.conn.execute(DeviceMeasurement.__table__.insert(), samples)
        self.stats.benchmarks += 1


def insert_new(conn: Connection, table: Any, row: dict[str, Any]) -> bool:
    """Insert `row` unless a row with the same natural key exists (INSERT .. ON CONFLICT DO NOTHING on
    both backends); True when this call inserted it. Safe when many writers insert the same row at once:
    exactly one gets True."""
    return (conn.execute(_insert(conn, table).values(**row).on_conflict_do_nothing()).rowcount or 0) == 1


def write_records(store: Store, records: Iterable[Record], batch_size: int = 5000) -> IngestStats:
    """Write `records` in one transaction per batch; safe to repeat (idempotent). Each batch first takes
    the advisory locks of its runs (rollups.lock_runs), and is written again whole, rollups included,
    when Postgres picks it as a deadlock victim or serialization failure."""
    with store.engine.connect() as conn:
        writer = RecordWriter(conn, batch_size=batch_size)
        batch: list[Record] = []
        for record in records:
            batch.append(record)
            if len(batch) >= batch_size:
                _write_batch(conn, writer, batch)
                batch = []
        _write_batch(conn, writer, batch)
    return writer.stats


def _record_run(record: Record) -> str | None:
    return record.uuid if isinstance(record, RunRecord) else getattr(record, "run", None)


def _write_batch(conn: Connection, writer: RecordWriter, batch: list[Record], retries: int = 3) -> None:
    """One transaction: the batch's run locks, its records, the rollups of its runs; retried whole on a
    transient conflict (the counts and run ids of a rolled-back try are forgotten)."""
    uuids = {u for u in map(_record_run, batch) if u}
    for attempt in range(retries + 1):
        stats, run_ids = replace(writer.stats), dict(writer._run_ids)
        try:
            rollups.lock_runs(conn, uuids)
            for record in batch:
                writer.add(record)
            writer.flush()
            rollups.refresh(conn, [writer._run_ids[u] for u in uuids if u in writer._run_ids])
            conn.commit()
            return
        except DBAPIError as exc:
            conn.rollback()
            writer.stats, writer._run_ids, writer._results = stats, run_ids, []
            if attempt == retries or type(exc.orig).__name__ not in TRANSIENT:
                raise
            time.sleep(random.uniform(0.05, 0.2) * (attempt + 1))
