"""A DBAPI-only writer for the hot path of a live run: results, run headers and run ends.

The plugin's store sidecar must finish within a few milliseconds of pytest, so it cannot afford to
import SQLAlchemy (~0.3 s). This writer speaks psycopg2 / sqlite3 directly, with bound parameters
only, and is used solely when the database is already at `SCHEMA_HEAD`; anything else (an empty or
old database, benchmark records) goes through the SQLAlchemy writer. tests/test_fastpath.py checks
its column lists against the entities, and that both writers store identical rows.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict
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

    def write(self, records: list[Record]) -> list[Record]:
        """Write what this path handles in one transaction; return the rest, in order."""
        rest: list[Record] = []
        rows: list[tuple] = []
        ends: list[RunEnd] = []
        cur = self.conn.cursor()
        for rec in records:
            if isinstance(rec, ResultRecord):
                rows.append((self._run_id(cur, rec.run, None), rec.nodeid,
                             hashlib.sha1(rec.nodeid.encode("utf-8", "surrogatepass")).hexdigest(), rec.model,
                             rec.suite, rec.outcome, float(rec.duration_s or 0.0), rec.message,
                             int(rec.attempt or 1), rec.worker, rec.device))
            elif isinstance(rec, RunRecord):
                self._run_id(cur, rec.uuid, rec)
            elif isinstance(rec, RunEnd):
                ends.append(rec)
            else:
                rest.append(rec)
        if rows:
            self._insert_results(cur, rows)
        for end in ends:
            run_id = self._run_id(cur, end.run, None)
            cur.execute(f"UPDATE runs SET status = {self.mark}, finished_at = {self.mark} WHERE id = {self.mark}",
                        (end.status, _naive_utc(end.finished_at), run_id))
        self.conn.commit()
        return rest

    def _insert_results(self, cur: Any, rows: list[tuple]) -> None:
        cols = ", ".join(RESULT_COLUMNS)
        conflict = " ON CONFLICT (run_id, nodeid_hash, attempt) DO NOTHING"
        if not self.is_pg:
            before = self.conn.total_changes
            cur.executemany(f"INSERT INTO test_results ({cols}) VALUES ({self._params(len(RESULT_COLUMNS))})"
                            + conflict, rows)
            self.results_added += self.conn.total_changes - before
            return
        import io

        cur.execute("SET LOCAL synchronous_commit = off")  # re-runnable, idempotent writes: no fsync wait
        if not self._staging:  # per connection; emptied by every commit
            cur.execute(f"CREATE TEMP TABLE harness_results_in ON COMMIT DELETE ROWS AS SELECT {cols} "
                        "FROM test_results WITH NO DATA")
            self._staging = True
        buf = io.StringIO("".join("\t".join(_copy_field(v) for v in row) + "\n" for row in rows))
        cur.copy_expert(f"COPY harness_results_in ({cols}) FROM STDIN", buf)
        cur.execute(f"INSERT INTO test_results ({cols}) SELECT {cols} FROM harness_results_in" + conflict)
        self.results_added += max(cur.rowcount, 0)

    def close(self) -> None:
        self.conn.close()
