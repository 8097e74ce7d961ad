"""A DBAPI-only writer for the hot path of a live run: results, run headers and run ends.

The plugin's store sidecar must finish within a few milliseconds of pytest, so it cannot afford to
import SQLAlchemy (~0.3 s). This writer speaks psycopg2 / sqlite3 directly, with bound parameters
only, and is used solely when the database is already at `SCHEMA_HEAD`; anything else (an empty or
old database, benchmark records) goes through the SQLAlchemy writer. tests/test_fastpath.py checks
its column lists against the entities, and that both writers store identical rows.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import unquote, urlsplit

from harness.bundle import Record, ResultRecord, RunEnd, RunRecord
from harness.store.revision import SCHEMA_HEAD

RUN_COLUMNS = ("uuid", "repo", "branch", "commit_sha", "commit_subject", "commit_author", "commit_email", "event",
               "workflow", "runner_group", "machine_type", "hostname", "gpu_name", "gpu_count", "python_version",
               "torch_version", "cuda_version", "suites", "models", "started_at", "finished_at", "status")
RESULT_COLUMNS = ("run_id", "nodeid", "nodeid_hash", "model", "suite", "outcome", "duration_s", "message",
                  "attempt", "worker", "device")


STAGED_COLUMNS = ("run_uuid", *RESULT_COLUMNS[1:])


@dataclass
class PreparedBatch:
    """Records turned into rows (and COPY text on Postgres) without touching the database."""

    headers: list[RunRecord] = field(default_factory=list)
    ends: list[RunEnd] = field(default_factory=list)
    rest: list[Record] = field(default_factory=list)
    uuids: dict[str, None] = field(default_factory=dict)  # ordered set of run uuids with results
    rows: list[tuple] = field(default_factory=list)
    copy_text: str = ""
    count: int = 0


def on_batch_written(cur: Any, mark: str, run_ids: list[int]) -> None:
    """Hook called by both writers inside each batch's transaction, after its rows and before its
    commit, with the ids of the runs the batch wrote (results, headers or ends) and the DBAPI cursor
    of that transaction (`mark` is its parameter marker: "%s" on Postgres, "?" on SQLite). Tables
    kept at write time (rollups) are maintained here, so they commit, or roll back, with the rows."""


def _utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _naive_utc(value: str | None) -> datetime | None:
    if not value:
        return None
    dt = datetime.fromisoformat(value)
    return dt.astimezone(timezone.utc).replace(tzinfo=None) if dt.tzinfo else dt


def connect(url: str) -> tuple[Any, str] | None:
    """A DBAPI connection and its paramstyle marker for a sqlite or postgresql URL, else None."""
    parts = urlsplit(url)
    scheme = parts.scheme
    if scheme in ("postgresql", "postgresql+psycopg2", "postgres"):
        import psycopg2

        dsn = url.replace(scheme + "://", "postgresql://", 1)
        return psycopg2.connect(dsn, connect_timeout=5), "%s"
    if scheme == "sqlite" and url.startswith("sqlite:///") and "?" not in url:
        import sqlite3

        path = unquote(url[len("sqlite:///"):])
        if not path or path == ":memory:":
            return None
        conn = sqlite3.connect(path, timeout=30, detect_types=0)
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=30000")
        return conn, "?"
    return None


def _copy_field(value: Any) -> str:
    """One field in COPY text format (bound data, not SQL: escaping per the COPY spec)."""
    if value is None:
        return "\\N"
    text = value if isinstance(value, str) else str(value)
    if "\\" in text or "\t" in text or "\n" in text or "\r" in text:
        text = text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return text


class FastWriter:
    """Writes run, result and run-end records; hands every other record back to the caller."""

    def __init__(self, conn: Any, mark: str) -> None:
        self.conn, self.mark = conn, mark
        self.run_ids: dict[str, int] = {}
        self.is_pg = mark == "%s"
        self.results_added = 0
        self.runs_added = 0
        self._staging = False  # the COPY staging table exists in this session
        self._staging_committed = False  # ... and its creation was committed

    def at_head(self) -> bool:
        cur = self.conn.cursor()
        try:
            cur.execute("SELECT version_num FROM alembic_version")
            row = cur.fetchone()
        except Exception:  # noqa: BLE001 - no table yet: the full writer will migrate
            self.conn.rollback()
            return False
        return bool(row) and row[0] == SCHEMA_HEAD

    def _params(self, n: int) -> str:
        return ", ".join([self.mark] * n)

    def _run_id(self, cur: Any, uuid: str, header: RunRecord | None) -> int:
        """The id of run `uuid`: inserted if new (counted only when this call inserted it, so that of
        many writers at once exactly one counts it), else filled in from `header` where empty."""
        if header is None and uuid in self.run_ids:
            return self.run_ids[uuid]
        if header is None:
            cur.execute(f"SELECT id FROM runs WHERE uuid = {self.mark}", (uuid,))
            found = cur.fetchone()
            if found:
                self.run_ids[uuid] = found[0]
                return found[0]
            values: list[Any] = [uuid, *[None] * (len(RUN_COLUMNS) - 4), _utcnow(), None, "partial"]
            values[RUN_COLUMNS.index("gpu_count")] = 0
        else:
            row = asdict(header)
            row["started_at"] = _naive_utc(header.started_at) or _utcnow()
            row["finished_at"] = _naive_utc(header.finished_at)
            values = [row[c] for c in RUN_COLUMNS]
        cur.execute(f"INSERT INTO runs ({', '.join(RUN_COLUMNS)}) VALUES ({self._params(len(RUN_COLUMNS))}) "
                    "ON CONFLICT (uuid) DO NOTHING", values)
        inserted = cur.rowcount == 1
        self.runs_added += int(inserted)
        if header is not None and not inserted:  # known run (maybe a bare row made by early results)
            fill = ", ".join(f"{c} = COALESCE({c}, {self.mark})" for c in RUN_COLUMNS
                             if c not in ("uuid", "status", "started_at", "gpu_count"))
            cur.execute(f"UPDATE runs SET {fill}, started_at = {self.mark}, gpu_count = CASE WHEN gpu_count = 0 "
                        f"THEN {self.mark} ELSE gpu_count END WHERE uuid = {self.mark}",
                        [row[c] for c in RUN_COLUMNS if c not in ("uuid", "status", "started_at", "gpu_count")]
                        + [row["started_at"], row["gpu_count"], uuid])
        cur.execute(f"SELECT id FROM runs WHERE uuid = {self.mark}", (uuid,))
        self.run_ids[uuid] = cur.fetchone()[0]
        return self.run_ids[uuid]

    def prepare(self, records: list[Record]) -> PreparedBatch:
        """The database-free part of a write (hashing, COPY text): safe to run in another thread."""
        batch = PreparedBatch()
        rows: list[tuple] = []
        for rec in records:
            if isinstance(rec, ResultRecord):
                rows.append((rec.run, rec.nodeid, hashlib.sha1(rec.nodeid.encode("utf-8", "surrogatepass")).hexdigest(),
                             rec.model, rec.suite, rec.outcome, float(rec.duration_s or 0.0), rec.message,
                             int(rec.attempt or 1), rec.worker, rec.device))
                batch.uuids.setdefault(rec.run, None)
            elif isinstance(rec, RunRecord):
                batch.headers.append(rec)
            elif isinstance(rec, RunEnd):
                batch.ends.append(rec)
            else:
                batch.rest.append(rec)
        if self.is_pg:
            batch.copy_text = "".join("\t".join([_copy_field(v) for v in row]) + "\n" for row in rows)
        else:
            batch.rows = rows
        batch.count = len(rows)
        return batch

    def write(self, records: list[Record]) -> list[Record]:
        """Write what this path handles in one transaction; return the rest, in order."""
        return self.write_prepared(self.prepare(records))

    def write_prepared(self, batch: PreparedBatch) -> list[Record]:
        """Run headers, then results, then run ends, in one transaction; returns the other records.
        On any error the transaction is rolled back (nothing of the batch is written), the counts
        stay as they were, and the error is raised: writing the same batch again completes it."""
        counts, run_ids = (self.runs_added, self.results_added), dict(self.run_ids)
        try:
            cur = self.conn.cursor()
            touched: dict[int, None] = {}
            for header in batch.headers:
                touched[self._run_id(cur, header.uuid, header)] = None
            for uuid in batch.uuids:
                touched[self._run_id(cur, uuid, None)] = None
            if batch.count:
                self._insert_results(cur, batch)
            for end in batch.ends:
                run_id = self._run_id(cur, end.run, None)
                touched[run_id] = None
                cur.execute(f"UPDATE runs SET status = {self.mark}, finished_at = {self.mark} WHERE id = {self.mark}",
                            (end.status, _naive_utc(end.finished_at), run_id))
            on_batch_written(cur, self.mark, list(touched))
            self.conn.commit()
        except BaseException:
            self.runs_added, self.results_added = counts
            self.run_ids = run_ids  # ids read in a rolled-back transaction may not exist
            self._staging = self._staging_committed
            self._rollback()
            raise
        self._staging_committed = self._staging
        return batch.rest

    def _rollback(self) -> None:
        try:
            self.conn.rollback()
        except Exception:  # noqa: BLE001 - the connection is gone: nothing to roll back
            pass

    def _insert_results(self, cur: Any, batch: PreparedBatch) -> None:
        cols = ", ".join(RESULT_COLUMNS)
        conflict = " ON CONFLICT (run_id, nodeid_hash, attempt) DO NOTHING"
        if not self.is_pg:
            before = self.conn.total_changes
            rows = [(self.run_ids[r[0]], *r[1:]) for r in batch.rows]
            cur.executemany(f"INSERT INTO test_results ({cols}) VALUES ({self._params(len(RESULT_COLUMNS))})"
                            + conflict, rows)
            self.results_added += self.conn.total_changes - before
            return
        import io

        cur.execute("SET LOCAL synchronous_commit = off")  # re-runnable, idempotent writes: no fsync wait
        staged = ", ".join(STAGED_COLUMNS)
        if not self._staging:  # per connection; emptied by every commit
            cur.execute("CREATE TEMP TABLE harness_results_in ON COMMIT DELETE ROWS AS SELECT "
                        "r.uuid AS run_uuid, " + ", ".join(f"t.{c}" for c in RESULT_COLUMNS[1:])
                        + " FROM test_results t JOIN runs r ON r.id = t.run_id WITH NO DATA")
            self._staging = True
        cur.copy_expert(f"COPY harness_results_in ({staged}) FROM STDIN", io.StringIO(batch.copy_text))
        # Sorted by the hashed key: both indexes that lead with it are then filled page by page.
        cur.execute(f"INSERT INTO test_results ({cols}) SELECT r.id, "
                    + ", ".join(f"i.{c}" for c in RESULT_COLUMNS[1:])
                    + " FROM harness_results_in i JOIN runs r ON r.uuid = i.run_uuid"
                    " ORDER BY i.nodeid_hash, r.id" + conflict)
        self.results_added += max(cur.rowcount, 0)

    def sync(self) -> None:
        """Make every batch committed so far durable. Batches commit without waiting for the WAL
        flush (synchronous_commit off: a crash may lose the last moment's batches whole, which a
        re-run writes again); one synchronous commit of a transaction with an id flushes the WAL up
        to it, so a writer calls this before it reports success."""
        if self.is_pg:
            cur = self.conn.cursor()
            cur.execute("SELECT txid_current()")
            self.conn.commit()

    def close(self) -> None:
        try:
            self.conn.close()
        except Exception:  # noqa: BLE001 - closing a connection that is already gone
            pass
