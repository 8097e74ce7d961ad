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
from harness.store import rollups
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
        self._staging = False

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
        if header is None and uuid in self.run_ids:
            return self.run_ids[uuid]
        if header is not None:
            row = asdict(header)
            row["started_at"] = _naive_utc(header.started_at) or datetime.now(timezone.utc).replace(tzinfo=None)
            row["finished_at"] = _naive_utc(header.finished_at)
            values = [row[c] for c in RUN_COLUMNS]
            fill = ", ".join(f"{c} = COALESCE(runs.{c}, excluded.{c})" for c in RUN_COLUMNS
                             if c not in ("uuid", "status", "started_at", "gpu_count"))
            fill += ", started_at = excluded.started_at, gpu_count = CASE WHEN runs.gpu_count = 0 THEN excluded.gpu_count ELSE runs.gpu_count END"
        else:
            values = [uuid, *[None] * (len(RUN_COLUMNS) - 4), datetime.now(timezone.utc).replace(tzinfo=None),
                      None, "partial"]
            values[RUN_COLUMNS.index("gpu_count")] = 0
            fill = None
        cur.execute(f"SELECT id FROM runs WHERE uuid = {self.mark}", (uuid,))
        found = cur.fetchone()
        if found and header is None:
            self.run_ids[uuid] = found[0]
            return found[0]
        self.runs_added += 0 if found else 1
        sql = (f"INSERT INTO runs ({', '.join(RUN_COLUMNS)}) VALUES ({self._params(len(RUN_COLUMNS))}) "
               f"ON CONFLICT (uuid) DO " + (f"UPDATE SET {fill}" if fill else "NOTHING"))
        cur.execute(sql, values)
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
        """Run headers, then results, then run ends, in one transaction; returns the other records."""
        cur = self.conn.cursor()
        for header in batch.headers:
            self._run_id(cur, header.uuid, header)
        for uuid in batch.uuids:
            self._run_id(cur, uuid, None)
        if batch.count:
            self._insert_results(cur, batch)
        for end in batch.ends:
            run_id = self._run_id(cur, end.run, None)
            cur.execute(f"UPDATE runs SET status = {self.mark}, finished_at = {self.mark} WHERE id = {self.mark}",
                        (end.status, _naive_utc(end.finished_at), run_id))
        rollups.refresh(self.conn, [self.run_ids[u] for u in {*batch.uuids, *(h.uuid for h in batch.headers),
                                                              *(e.run for e in batch.ends)}])  # h5: rollups
        self.conn.commit()
        return batch.rest

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

    def close(self) -> None:
        self.conn.close()
