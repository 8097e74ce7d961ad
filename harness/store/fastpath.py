"""A DBAPI-only writer for the hot path of a live run: results, run headers and run ends.

The plugin's store sidecar must finish within a few milliseconds of pytest, so it cannot afford to
import SQLAlchemy (~0.3 s). This writer speaks psycopg2 / sqlite3 directly, with bound parameters
only, and is used solely when the database is already at `SCHEMA_HEAD`; anything else (an empty or
old database, benchmark records) goes through the SQLAlchemy writer. tests/test_fastpath.py checks
its column lists against the entities, and that both writers store identical rows.
"""

from __future__ import annotations

import hashlib
import random
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import unquote, urlsplit

from harness.bundle import Record, ResultRecord, RunEnd, RunRecord
from harness.store import pending, rollups
from harness.store.revision import SCHEMA_HEAD

RUN_COLUMNS = ("uuid", "repo", "branch", "commit_sha", "commit_subject", "commit_author", "commit_email", "event",
               "workflow", "runner_group", "machine_type", "hostname", "gpu_name", "gpu_count", "python_version",
               "torch_version", "cuda_version", "suites", "models", "started_at", "finished_at", "status")
RESULT_COLUMNS = ("run_id", "nodeid", "nodeid_hash", "model", "suite", "outcome", "duration_s", "message",
                  "attempt", "worker", "device", "started_at", "exception", "signature", "skip_category", "output_tail")


# Session settings of every harness connection to Postgres: no JIT. Its cost model switches it on for
# any query over a large table, and compiling then takes ~0.5 s (a 0.2 s `new-failures` query took 0.8 s
# at 10M results); the store's queries are index probes that never win it back.
PG_OPTIONS = "-c jit=off"
TRANSIENT = ("DeadlockDetected", "SerializationFailure")  # psycopg2 errors worth one more try
CLASH = ("23505", "40P01")  # SQLSTATE unique_violation, deadlock_detected: a direct COPY met another writer's rows

# The order rows are prepared in: the hashed key first, so that sorting by it is a plain sort.
ROW_COLUMNS = ("nodeid_hash", "nodeid", "model", "suite", "outcome", "duration_s", "message", "attempt", "worker",
               "device", "started_at", "exception", "signature", "skip_category", "output_tail")


@dataclass
class PreparedBatch:
    """Records turned into rows, per run and sorted by test key (COPY lines on Postgres, without
    their run id, which the writer adds), without touching the database."""

    headers: list[RunRecord] = field(default_factory=list)
    ends: list[RunEnd] = field(default_factory=list)
    rest: list[Record] = field(default_factory=list)
    uuids: dict[str, None] = field(default_factory=dict)  # ordered set of run uuids with results
    rows: dict[str, list[Any]] = field(default_factory=dict)  # run uuid -> tuples (SQLite) or COPY lines
    count: int = 0

    def empty(self) -> bool:
        return not (self.count or self.headers or self.ends or self.rest)

    def extend(self, later: PreparedBatch) -> None:
        """Append a batch prepared after this one (a follower prepares lines as they come and writes
        them together); each run's rows stay sorted by test key (COPY lines begin with it)."""
        self.headers += later.headers
        self.ends += later.ends
        self.rest += later.rest
        for uuid, rows in later.rows.items():
            mine = self.rows.get(uuid)
            if mine is None:
                self.rows[uuid] = rows
                self.uuids[uuid] = None
            else:
                mine += rows
                mine.sort(key=None if type(rows[0]) is str else _first)
        self.count += later.count


def _utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _naive_utc_now(now: datetime | None) -> datetime:
    return (now or datetime.now(timezone.utc)).astimezone(timezone.utc).replace(tzinfo=None)


def _naive_utc(value: str | None) -> datetime | None:
    if not value:
        return None
    dt = datetime.fromisoformat(value)
    return dt.astimezone(timezone.utc).replace(tzinfo=None) if dt.tzinfo else dt


def _utc_text(value: str | None) -> str | None:
    """An ISO timestamp as naive UTC text in the form SQLAlchemy stores (and Postgres reads)."""
    if not value:
        return None
    if value.endswith("+00:00") and len(value) == 32:  # the plugin's own form: already UTC, microseconds
        return value[:10] + " " + value[11:26]
    dt = _naive_utc(value)
    return dt.strftime("%Y-%m-%d %H:%M:%S.%f") if dt else None


def connect(url: str) -> tuple[Any, str] | None:
    """A DBAPI connection and its paramstyle marker for a sqlite or postgresql URL, else None."""
    parts = urlsplit(url)
    scheme = parts.scheme
    if scheme in ("postgresql", "postgresql+psycopg2", "postgres"):
        import psycopg2

        dsn = url.replace(scheme + "://", "postgresql://", 1)
        return psycopg2.connect(dsn, connect_timeout=5, options=PG_OPTIONS), "%s"
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


def at_head(conn: Any) -> bool:
    """Whether the database behind a DBAPI connection is migrated to `SCHEMA_HEAD`."""
    cur = conn.cursor()
    try:
        cur.execute("SELECT version_num FROM alembic_version")
        row = cur.fetchone()
    except Exception:  # noqa: BLE001 - no table yet: the full writer will migrate
        conn.rollback()
        return False
    finally:
        cur.close()
    return bool(row) and row[0] == SCHEMA_HEAD


def _first(row: tuple) -> Any:
    return row[0]


def _copy_line(row: tuple) -> str:
    """One row in COPY text format. Most rows need no escaping: join them at once, and check the
    result (as many tabs as separators, backslashes only in NULL markers, no line breaks)."""
    h, nodeid, model, suite, outcome, dur, message, attempt, worker, device, started, exc, sig, cat, out = row
    if out is not None or exc is not None:  # a failure: rare, and its output has line breaks
        return "\t".join([_copy_field(v) for v in row])
    nulls = (model, suite, message, worker, device, started, sig, cat).count(None) + 2
    line = "\t".join((h, nodeid, "\\N" if model is None else model, "\\N" if suite is None else suite, outcome,
                      repr(dur), "\\N" if message is None else message, str(attempt),
                      "\\N" if worker is None else worker, "\\N" if device is None else device,
                      "\\N" if started is None else started, "\\N", "\\N" if sig is None else sig,
                      "\\N" if cat is None else cat, "\\N"))
    if line.count("\t") == 14 and line.count("\\") == nulls and "\n" not in line and "\r" not in line:
        return line
    return "\t".join([_copy_field(v) for v in row])


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
        self._new_runs: set[str] = set()  # runs this writer inserted: their results may be COPYed directly
        self.owed: dict[str, int] = {}  # runs written without a rollup refresh since: uuid -> id

    def at_head(self) -> bool:
        return at_head(self.conn)

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
        if inserted:
            self._new_runs.add(uuid)
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
        """The database-free part of a write (hashing, sorting, COPY text): safe to run in another
        thread. Rows are sorted by the hashed test key: the indexes that hold it are then filled
        page by page, and two writers of the same rows take their locks in the same order."""
        batch = PreparedBatch()
        groups: dict[str, list[tuple]] = {}
        sha1 = hashlib.sha1
        for rec in records:
            if type(rec) is ResultRecord:
                row = (sha1(rec.nodeid.encode("utf-8", "surrogatepass")).hexdigest(), rec.nodeid, rec.model,
                       rec.suite, rec.outcome, float(rec.duration_s or 0.0), rec.message, int(rec.attempt or 1),
                       rec.worker, rec.device, _utc_text(rec.started_at), rec.exception, rec.signature,
                       rec.skip_category, rec.output_tail)
                group = groups.get(rec.run)
                if group is None:
                    group = groups[rec.run] = []
                    batch.uuids[rec.run] = None
                group.append(row)
            elif isinstance(rec, RunRecord):
                batch.headers.append(rec)
            elif isinstance(rec, RunEnd):
                batch.ends.append(rec)
            else:
                batch.rest.append(rec)
        for uuid, rows in groups.items():
            rows.sort(key=_first)
            batch.count += len(rows)
            batch.rows[uuid] = [_copy_line(row) for row in rows] if self.is_pg else rows
        return batch

    def write(self, records: list[Record], refresh: bool = True) -> list[Record]:
        """Write what this path handles in one transaction; return the rest, in order. `refresh=False`:
        the runs' rollups are marked owed instead of refreshed (`refresh_rollups` pays them)."""
        return self.write_prepared(self.prepare(records), refresh=refresh)

    def write_prepared(self, batch: PreparedBatch, retries: int = 3, refresh: bool = True) -> list[Record]:
        """Run headers, then results, then run ends, in one transaction; returns the other records.
        On any error the transaction is rolled back (nothing of the batch is written), the counts
        stay as they were, and the error is raised: writing the same batch again completes it. A
        deadlock with another writer (possible only when both write the same rows) is retried."""
        for attempt in range(retries + 1):
            try:
                self._write_once(batch, refresh)
                return batch.rest
            except Exception as exc:
                if attempt == retries or type(exc).__name__ not in TRANSIENT:
                    raise
                time.sleep(random.uniform(0.05, 0.2) * (attempt + 1))  # the whole batch again, rollups included
        return batch.rest  # not reached

    def _write_once(self, batch: PreparedBatch, refresh: bool = True) -> None:
        counts, run_ids, new_runs = (self.runs_added, self.results_added), dict(self.run_ids), set(self._new_runs)
        owed = dict(self.owed)
        try:
            cur = self.conn.cursor()
            rollups.lock_runs(self.conn, [h.uuid for h in batch.headers] + list(batch.uuids)
                              + [e.run for e in batch.ends] + (list(self.owed) if refresh else []))  # one lock order
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
            if refresh:
                rollups.refresh(self.conn, [*touched, *self.owed.values()])  # kept at write time, same transaction
                self.owed = {}
            else:
                pending.mark(self.conn, touched)  # a crash before `refresh_rollups` leaves them owed, not wrong
                by_id = {v: k for k, v in self.run_ids.items()}
                self.owed.update({by_id[run_id]: run_id for run_id in touched})
            self.conn.commit()
        except BaseException:
            self.owed = owed
            self.runs_added, self.results_added = counts
            self.run_ids = run_ids  # ids read in a rolled-back transaction may not exist
            self._new_runs = new_runs
            self._staging = self._staging_committed
            self._rollback()
            raise
        self._staging_committed = self._staging

    def _rollback(self) -> None:
        try:
            self.conn.rollback()
        except Exception:  # noqa: BLE001 - the connection is gone: nothing to roll back
            pass

    def _insert_results(self, cur: Any, batch: PreparedBatch) -> None:
        cols = "run_id, " + ", ".join(ROW_COLUMNS)
        conflict = " ON CONFLICT (run_id, nodeid_hash, attempt) DO NOTHING"
        if not self.is_pg:
            before = self.conn.total_changes
            sql = f"INSERT INTO test_results ({cols}) VALUES ({self._params(len(ROW_COLUMNS) + 1)})" + conflict
            for uuid, rows in batch.rows.items():
                run_id = self.run_ids[uuid]
                cur.executemany(sql, [(run_id, *row) for row in rows])
            self.results_added += self.conn.total_changes - before
            return
        import io

        import psycopg2

        cur.execute("SET LOCAL synchronous_commit = off")  # re-runnable, idempotent writes: no fsync wait
        text = "".join(f"{self.run_ids[uuid]}\t" + f"\n{self.run_ids[uuid]}\t".join(lines) + "\n"
                       for uuid, lines in batch.rows.items())
        if all(uuid in self._new_runs for uuid in batch.rows):
            # Runs this writer created: no other row of theirs can exist unless another writer of the
            # same bundle is at work, so COPY straight into the table; a clash undoes just that.
            cur.execute("SAVEPOINT harness_copy")
            try:
                cur.copy_expert(f"COPY test_results ({cols}) FROM STDIN", io.StringIO(text))
            except psycopg2.Error as exc:
                if exc.pgcode not in CLASH:
                    raise
                cur.execute("ROLLBACK TO SAVEPOINT harness_copy")
                self._new_runs.difference_update(batch.rows)
            else:
                cur.execute("RELEASE SAVEPOINT harness_copy")
                self.results_added += batch.count
                return
        if not self._staging:  # per connection; emptied by every commit
            cur.execute(f"CREATE TEMP TABLE harness_results_in ON COMMIT DELETE ROWS AS SELECT {cols} "
                        "FROM test_results WITH NO DATA")
            self._staging = True
        cur.copy_expert(f"COPY harness_results_in ({cols}) FROM STDIN", io.StringIO(text))
        cur.execute(f"INSERT INTO test_results ({cols}) SELECT {cols} FROM harness_results_in" + conflict)
        self.results_added += max(cur.rowcount, 0)

    def refresh_rollups(self) -> None:
        """Refresh the rollups of every run this writer wrote without refreshing them, a transaction
        per run (a writer of many runs holds each run's lock only for its own refresh)."""
        for uuid, run_id in sorted(self.owed.items()):
            try:
                rollups.lock_runs(self.conn, [uuid])
                rollups.refresh(self.conn, [run_id])
                self.conn.commit()
            except BaseException:
                self._rollback()
                raise
            del self.owed[uuid]

    def refresh_pending(self, limit: int = 50) -> int:
        """Refresh rollups that earlier writers left owed (at most `limit` runs: harness/store/pending.py);
        returns how many runs. Best effort: a failure leaves them owed, not this writer's results."""
        try:
            return pending.refresh_owed(self.conn, limit)
        except Exception:  # noqa: BLE001 - the next writer tries again; nothing of this one is at stake
            self._rollback()
            return 0

    def beat(self, now: datetime | None = None) -> int:
        """Heartbeat of the `running` runs this writer has written (a live writer's runs are never marked
        `abandoned` by another writer); returns how many runs took it."""
        ids = sorted(set(self.run_ids.values()))
        if not ids:
            return 0
        marks = ", ".join([self.mark] * len(ids))  # placeholders only: the values are bound
        cur = self.conn.cursor()
        try:
            cur.execute(f"UPDATE runs SET heartbeat_at = {self.mark} WHERE status = 'running' AND id IN ({marks})",
                        (_naive_utc_now(now), *ids))
            self.conn.commit()
        except BaseException:
            self._rollback()
            raise
        return max(cur.rowcount, 0)

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
