"""Tables kept at write time for the read paths (dashboards, `new-failures`, `notify`), and the one
definition of "new failure".

`refresh(conn, run_ids)` recomputes every rollup of the given runs from their stored results, in the
caller's transaction, right after the raw rows are written; it is idempotent (a re-ingest that adds
nothing changes nothing) and safe beside other writers (the run row is locked; day totals move by
deltas; upserts go in key order, so two writers lock shared rows in the same order). It speaks plain SQL with positional parameters through either a SQLAlchemy `Connection` or
a DBAPI connection (psycopg2 / sqlite3), so the live plugin's fast writer can call it without
importing SQLAlchemy.

Kept per run: outcome counts per model x suite (`rollup_run_counts`), totals, day key and baseline
(`rollup_runs`), its new failures (`rollup_new_failures`). Per day x branch x runner group x model:
outcome counts (`rollup_daily`), and the same summed over every branch and runner group per day x model
(`rollup_daily_models`, what the pass-rate panel reads when all of them are selected). Per branch x runner group x test: the latest final outcome, the run
where the failing state last changed, the last passing run and duration statistics (`rollup_tests`).
Names for Grafana variables: `rollup_dims` (models, branches, runner groups), `rollup_test_names`.
Failure identity (migration 0006): each run's failing final results per signature x model
(`rollup_run_signatures`), summed per day (`rollup_signatures_daily`, by deltas like `rollup_daily`) with
each signature's first and last sighting (`rollup_signatures`): the "top failure signatures" panel;
`rollup_run_counts.n_skip_explicit` counts the skips and xfails that are not `not-applicable`.

A new failure of a finished run R (any status but running): a test whose last attempt in R fails (failed, error, crashed,
timeout, xpass) and whose last attempt in R's baseline does not fail or is absent. R's baseline is
the previous completed run (by start time, then id) of the same branch, runner group, suites and
models. `classify_sql` is that comparison for any pair of runs; `harness new-failures` and the kept
table both use it, and the ci-overview panel reads the kept table.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

FAILING_OUTCOMES = ("failed", "error", "crashed", "timeout", "xpass")
FAILING = "(" + ", ".join(f"'{o}'" for o in FAILING_OUTCOMES) + ")"  # constants, as SQL text
PASSING = "('passed', 'xfail')"
MESSAGE_CHARS = 500
PRUNED_KEY = "pruned_before"
NONE = "(none)"  # rollup keys cannot be NULL: a missing branch / model / ... is kept as the panels show it


class Sql:
    """Positional-parameter SQL on a SQLAlchemy Connection or a DBAPI connection (`?` in the text)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.alchemy = hasattr(conn, "exec_driver_sql")
        if self.alchemy:
            self.pg = conn.dialect.name == "postgresql"
        else:
            self.pg = not type(conn).__module__.startswith("sqlite3")

    def _text(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.pg else sql

    def rows(self, sql: str, params: Iterable[Any] = ()) -> list[tuple]:
        if self.alchemy:
            return [tuple(r) for r in self.conn.exec_driver_sql(self._text(sql), tuple(params)).fetchall()]
        cur = self.conn.cursor()
        try:
            cur.execute(self._text(sql), tuple(params))
            return list(cur.fetchall()) if cur.description else []
        finally:
            cur.close()

    def run(self, sql: str, params: Iterable[Any] = ()) -> int:
        """Execute a statement; returns the rows it changed."""
        if self.alchemy:
            return max(self.conn.exec_driver_sql(self._text(sql), tuple(params)).rowcount, 0)
        cur = self.conn.cursor()
        try:
            cur.execute(self._text(sql), tuple(params))
            return max(cur.rowcount, 0)
        finally:
            cur.close()

    @property
    def same(self) -> str:
        """Null-safe equality operator."""
        return "IS NOT DISTINCT FROM" if self.pg else "IS"

    @property
    def greatest(self) -> str:
        return "greatest" if self.pg else "max"


def final_sql(retried: bool = True) -> str:
    """The last attempt of each test of one run (one `?`: the run id). `retried=False` (the run has no
    attempt but the first: `has_retries`) reads the run's rows as they are, without sorting them."""
    if not retried:
        return "SELECT t.* FROM test_results t WHERE t.run_id = ?"
    return ("SELECT * FROM (SELECT t.*, row_number() OVER (PARTITION BY t.nodeid_hash ORDER BY t.attempt DESC)"
            " AS rn FROM test_results t WHERE t.run_id = ?) f WHERE f.rn = 1")


def has_retries(db: Sql, run_id: int) -> bool:
    """Whether any test of the run has an attempt other than the first (else each test has one row)."""
    return bool(db.rows("SELECT 1 FROM test_results WHERE run_id = ? AND attempt <> 1 LIMIT 1", (run_id,)))


def _last(alias: str) -> str:
    """`alias` (a test_results row) is its test's last attempt in its run: a scalar subquery, which both
    databases run as one index probe per row whatever their row estimates (a NOT EXISTS can be planned
    as an anti-join filtering every pair of rows when the statistics are stale: minutes at 2,000 tests)."""
    return (f"{alias}.attempt = (SELECT max({alias}2.attempt) FROM test_results {alias}2"
            f" WHERE {alias}2.run_id = {alias}.run_id AND {alias}2.nodeid_hash = {alias}.nodeid_hash)")


def classify_sql(with_missing: bool = True, identity: bool = True, failing_only: bool = False) -> str:
    """Per test, its class in a run against a baseline (new, still_failing, fixed, missing; rows whose
    state did not change and does not fail are left out). Parameters: baseline id, run id, and with
    `with_missing` baseline id, run id again. Written as correlated scalar subqueries on (run_id,
    nodeid_hash, attempt), index probes per row, so its cost follows the two runs' sizes whatever the
    planner's estimates. `identity`: with the run's exception and signature columns (migration 0006).
    `failing_only`: only the run's failing tests (new and still failing), the only ones that can be new:
    the baseline is then probed for ~1 % of the rows instead of all."""
    ident = "c.exception, c.signature" if identity else "NULL AS exception, NULL AS signature"
    sql = f"""SELECT x.*, CASE WHEN x.outcome IN {FAILING} THEN
              CASE WHEN x.baseline_outcome IN {FAILING} THEN 'still_failing' ELSE 'new' END
            WHEN x.baseline_outcome IN {FAILING} THEN 'fixed' END AS kind FROM (
SELECT c.nodeid_hash, c.nodeid, c.model, c.suite, c.outcome, c.message, c.device,
       (SELECT b.outcome FROM test_results b WHERE b.run_id = ? AND b.nodeid_hash = c.nodeid_hash
        ORDER BY b.attempt DESC LIMIT 1) AS baseline_outcome,
       {ident}
FROM test_results c
WHERE c.run_id = ?{f" AND c.outcome IN {FAILING}" if failing_only else ""} AND {_last("c")}) x"""
    if with_missing:
        sql += f"""
UNION ALL
SELECT b.nodeid_hash, b.nodeid, b.model, b.suite, NULL, NULL, b.device, b.outcome, NULL, NULL, 'missing'
FROM test_results b
WHERE b.run_id = ? AND {_last("b")}
  AND (SELECT 1 FROM test_results t WHERE t.run_id = ? AND t.nodeid_hash = b.nodeid_hash LIMIT 1) IS NULL"""
    return f"SELECT * FROM ({sql}) k WHERE k.kind IS NOT NULL"


def classify(conn: Any, run_id: int, baseline_id: int) -> list[dict[str, Any]]:
    """Every test of `run_id` or `baseline_id` whose state differs or still fails, with its `kind`."""
    db = Sql(conn)
    cols = ("nodeid_hash", "nodeid", "model", "suite", "outcome", "message", "device", "baseline_outcome", "exception",
            "signature", "kind")
    return [dict(zip(cols, r, strict=True))
            for r in db.rows(classify_sql(), (baseline_id, run_id, baseline_id, run_id))]


def _lane(db: Sql) -> str:
    s = db.same
    return (f"r.branch {s} ? AND r.runner_group {s} ? AND r.suites {s} ? AND r.models {s} ?")


def baseline_of(conn: Any, run_id: int) -> int | None:
    """The baseline run of `run_id` (see the module docstring), or None."""
    db = Sql(conn)
    run = db.rows("SELECT id, started_at, branch, runner_group, suites, models FROM runs WHERE id = ?", (run_id,))
    return _neighbour(db, run[0], before=True) if run else None


def _neighbour(db: Sql, run: tuple, before: bool) -> int | None:
    rid, started, *lane = run
    op, order = ("<", "DESC") if before else (">", "ASC")
    rows = db.rows(f"SELECT r.id FROM runs r WHERE r.status = 'completed' AND r.id <> ? AND {_lane(db)}"
                   f" AND (r.started_at {op} ? OR (r.started_at = ? AND r.id {op} ?))"
                   f" ORDER BY r.started_at {order}, r.id {order} LIMIT 1", (rid, *lane, started, started, rid))
    return rows[0][0] if rows else None


def _day(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return datetime(value.year, value.month, value.day)


def pruned_before(conn: Any) -> datetime | None:
    """The cutoff of the last `harness db prune` (runs before it have rollups but no raw results)."""
    rows = Sql(conn).rows("SELECT value FROM rollup_meta WHERE key = ?", (PRUNED_KEY,))
    return datetime.fromisoformat(rows[0][0]) if rows else None


RUN_LOCK_CLASS = 0x686E  # first key of the per-run advisory locks (the migration lock is a one-key lock)


def run_lock_key(uuid: str) -> int:
    """The second key (a signed 32-bit integer) of run `uuid`'s advisory lock."""
    return int.from_bytes(hashlib.sha1(uuid.encode("utf-8", "surrogatepass")).digest()[:4], "big", signed=True)


def lock_runs(conn: Any, uuids: Iterable[str]) -> None:
    """Take the transaction-scoped advisory lock of every run in `uuids`, in key order, before the
    transaction writes anything of them (Postgres; SQLite has one writer at a time). Every writer of a
    run (its results, header, end, benchmarks, rollups) takes it first, so two transactions on the same
    run wait for each other whole instead of interleaving row locks (a deadlock: the FK checks of
    inserted rows share-lock the run row that the rollup refresh locks for update), and writers of
    several runs take their locks in one global order."""
    db = Sql(conn)
    if not db.pg:
        return
    for key in sorted({run_lock_key(u) for u in uuids}):
        db.run("SELECT pg_advisory_xact_lock(?, ?)", (RUN_LOCK_CLASS, key))


def refresh(conn: Any, run_ids: Iterable[int]) -> None:
    """Recompute the rollups of `run_ids` from their stored results, in the caller's transaction."""
    db = Sql(conn)
    cutoff = pruned_before(conn)
    for run_id in sorted(set(run_ids)):
        _refresh_run(db, run_id, cutoff)


def _daily_add(db: Sql, run_id: int, key: tuple, sign: int) -> None:
    """Add (sign 1) or take away (sign -1) the run's per-model counts in `rollup_daily` under `key`."""
    db.run(f"""INSERT INTO rollup_daily (day, branch, runner_group, model, n_pass, n_fail, n_skip, n_total)
SELECT ?, ?, ?, c.model, {sign} * sum(c.n_pass), {sign} * sum(c.n_fail), {sign} * sum(c.n_skip), {sign} * sum(c.n_total)
FROM rollup_run_counts c WHERE c.run_id = ? GROUP BY c.model ORDER BY c.model
ON CONFLICT (day, branch, runner_group, model) DO UPDATE SET n_pass = rollup_daily.n_pass + excluded.n_pass,
  n_fail = rollup_daily.n_fail + excluded.n_fail, n_skip = rollup_daily.n_skip + excluded.n_skip,
  n_total = rollup_daily.n_total + excluded.n_total""", (*key, run_id))
    db.run(f"""INSERT INTO rollup_daily_models (day, model, n_pass, n_fail, n_skip, n_total)
SELECT ?, c.model, {sign} * sum(c.n_pass), {sign} * sum(c.n_fail), {sign} * sum(c.n_skip), {sign} * sum(c.n_total)
FROM rollup_run_counts c WHERE c.run_id = ? GROUP BY c.model ORDER BY c.model
ON CONFLICT (day, model) DO UPDATE SET n_pass = rollup_daily_models.n_pass + excluded.n_pass,
  n_fail = rollup_daily_models.n_fail + excluded.n_fail, n_skip = rollup_daily_models.n_skip + excluded.n_skip,
  n_total = rollup_daily_models.n_total + excluded.n_total""", (key[0], run_id))
    if sign < 0:
        db.run("DELETE FROM rollup_daily WHERE day = ? AND branch = ? AND runner_group = ? AND n_total = 0", key)
        db.run("DELETE FROM rollup_daily_models WHERE day = ? AND n_total = 0", key[:1])


def _refresh_run(db: Sql, run_id: int, cutoff: datetime | None, tests: bool = True, identity: bool = True) -> None:
    """`identity`: also the failure-identity and per-suite rollups (False only in migration 0005's
    backfill, before the columns and tables of 0006 / 0007 exist; those migrations backfill them)."""
    lock = " FOR NO KEY UPDATE" if db.pg else ""  # not FOR UPDATE: that one waits on every FK check
    found = db.rows("SELECT id, started_at, branch, runner_group, suites, models, status FROM runs WHERE id = ?"
                    + lock, (run_id,))
    if not found:
        return
    run = found[0]
    started = datetime.fromisoformat(run[1]) if isinstance(run[1], str) else run[1]
    if cutoff is not None and started < cutoff:
        return  # its raw results are gone: keep the rollups computed before the prune
    count = db.rows("SELECT count(*) FROM test_results WHERE run_id = ?", (run_id,))[0][0]
    source = hashlib.sha1(repr((count, *run[1:])).encode()).hexdigest()
    old = db.rows("SELECT day, branch, runner_group, source FROM rollup_runs WHERE run_id = ?", (run_id,))
    if old and tests and old[0][3] and old[0][3][1:] == source[1:] and old[0][3][0] in (source[0], "p"):
        if old[0][3] != source:  # marked owed (harness/store/pending.py), yet nothing changed: clear the mark
            db.run("UPDATE rollup_runs SET source = ? WHERE run_id = ?", (source, run_id))
        return  # same rows and run metadata as at the last refresh: nothing to recompute
    if old:
        _daily_add(db, run_id, (_day(old[0][0]), old[0][1], old[0][2]), -1)
    db.run("DELETE FROM rollup_run_counts WHERE run_id = ?", (run_id,))
    retried = has_retries(db, run_id)
    explicit = (", n_skip_explicit", f", sum(CASE WHEN {EXPLICIT_SKIP} THEN 1 ELSE 0 END)") if identity else ("", "")
    db.run(f"""INSERT INTO rollup_run_counts (run_id, model, suite, n_pass, n_fail, n_skip, n_total{explicit[0]})
SELECT ?, coalesce(f.model, '(none)'), coalesce(f.suite, '(none)'),
       sum(CASE WHEN f.outcome IN {PASSING} THEN 1 ELSE 0 END), sum(CASE WHEN f.outcome IN {FAILING} THEN 1 ELSE 0 END),
       sum(CASE WHEN f.outcome = 'skipped' THEN 1 ELSE 0 END), count(*){explicit[1]}
FROM ({final_sql(retried)}) f GROUP BY coalesce(f.model, '(none)'), coalesce(f.suite, '(none)')""", (run_id, run_id))
    key = (_day(started), run[2] or NONE, run[3] or NONE)
    _daily_add(db, run_id, key, 1)
    if identity:
        refresh_identity(db, run_id, started, key[0], _day(old[0][0]) if old else None, retried)
        db.run("DELETE FROM rollup_run_suites WHERE run_id = ?", (run_id,))
        db.run("INSERT INTO rollup_run_suites (run_id, suite, n_skip, n_skip_explicit, n_total) SELECT run_id, suite,"
               " sum(n_skip), sum(n_skip_explicit), sum(n_total) FROM rollup_run_counts WHERE run_id = ?"
               " GROUP BY run_id, suite", (run_id,))
    totals = db.rows("SELECT coalesce(sum(n_pass), 0), coalesce(sum(n_fail), 0), coalesce(sum(n_skip), 0),"
                     " coalesce(sum(n_total), 0) FROM rollup_run_counts WHERE run_id = ?", (run_id,))[0]
    db.run("""INSERT INTO rollup_runs (run_id, day, branch, runner_group, n_pass, n_fail, n_skip, n_total, source)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (run_id) DO UPDATE SET day = excluded.day, branch = excluded.branch,
  runner_group = excluded.runner_group, n_pass = excluded.n_pass, n_fail = excluded.n_fail,
  n_skip = excluded.n_skip, n_total = excluded.n_total, source = excluded.source""",
           (run_id, *key, *totals, source))
    db.run("INSERT INTO rollup_dims (kind, value) VALUES ('branch', ?), ('runner_group', ?)"
           " ON CONFLICT (kind, value) DO NOTHING", (run[2] or NONE, run[3] or NONE))
    db.run("INSERT INTO rollup_dims (kind, value) SELECT DISTINCT 'model', model FROM rollup_run_counts"
           " WHERE run_id = ? AND NOT EXISTS (SELECT 1 FROM rollup_dims d WHERE d.kind = 'model' AND d.value = model)"
           " ON CONFLICT (kind, value) DO NOTHING", (run_id,))
    if run[6] == "running":
        return  # test state and new failures are kept for finished runs
    if tests:
        _refresh_tests(db, run_id, started, key, retried)
    _refresh_new_failures(db, run)
    later = _neighbour(db, run[:6], before=False)
    if later is not None:
        nxt = db.rows("SELECT id, started_at, branch, runner_group, suites, models, status FROM runs WHERE id = ?",
                      (later,))[0]
        _refresh_new_failures(db, nxt)


EXPLICIT_SKIP = "f.outcome IN ('skipped', 'xfail') AND coalesce(f.skip_category, 'skipped') = 'skipped'"


def _signatures_add(db: Sql, run_id: int, day: datetime, sign: int) -> None:
    """Add (1) or take away (-1) the run's failures per signature x model in `rollup_signatures_daily`."""
    least = "least" if db.pg else "min"
    db.run(f"""INSERT INTO rollup_signatures_daily (day, signature, model, n, first_seen, last_seen)
SELECT ?, s.signature, s.model, {sign} * s.n, s.started_at, s.started_at
FROM rollup_run_signatures s WHERE s.run_id = ? ORDER BY s.signature, s.model
ON CONFLICT (day, signature, model) DO UPDATE SET n = rollup_signatures_daily.n + excluded.n,
  first_seen = {least}(rollup_signatures_daily.first_seen, excluded.first_seen),
  last_seen = {db.greatest}(rollup_signatures_daily.last_seen, excluded.last_seen)""", (day, run_id))
    if sign < 0:
        db.run("DELETE FROM rollup_signatures_daily WHERE day = ? AND n <= 0", (day,))


def refresh_identity(db: Sql, run_id: int, started: datetime, day: datetime, old_day: datetime | None,
                     retried: bool = True) -> None:
    """The run's failure-identity rollups: its failing final results per signature x model, their day
    sums and each signature's first / last sighting."""
    if old_day is not None:
        _signatures_add(db, run_id, old_day, -1)
    db.run("DELETE FROM rollup_run_signatures WHERE run_id = ?", (run_id,))
    db.run(f"""INSERT INTO rollup_run_signatures (run_id, signature, model, exception, message, n, started_at)
SELECT ?, f.signature, coalesce(f.model, '(none)'), max(f.exception), max(substr(f.message, 1, {MESSAGE_CHARS})),
       count(*), ?
FROM ({final_sql(retried)}) f WHERE f.signature IS NOT NULL AND f.outcome IN {FAILING}
GROUP BY f.signature, coalesce(f.model, '(none)') ORDER BY f.signature""", (run_id, started, run_id))
    _signatures_add(db, run_id, day, 1)
    least = "least" if db.pg else "min"
    db.run(f"""INSERT INTO rollup_signatures (signature, exception, message, first_seen, last_seen)
SELECT s.signature, max(s.exception), max(s.message), min(s.started_at), max(s.started_at)
FROM rollup_run_signatures s WHERE s.run_id = ? GROUP BY s.signature ORDER BY s.signature
ON CONFLICT (signature) DO UPDATE SET first_seen = {least}(rollup_signatures.first_seen, excluded.first_seen),
  last_seen = {db.greatest}(rollup_signatures.last_seen, excluded.last_seen),
  exception = coalesce(rollup_signatures.exception, excluded.exception),
  message = coalesce(rollup_signatures.message, excluded.message)""", (run_id,))


def _refresh_tests(db: Sql, run_id: int, started: datetime, key: tuple, retried: bool = True) -> None:
    same = "rollup_tests.last_run_id = excluded.last_run_id"
    db.run(f"""INSERT INTO rollup_tests (branch, runner_group, nodeid_hash, nodeid, model, suite, last_run_id,
  last_started_at, last_outcome, last_duration_s, runs, duration_sum, duration_max, changed_run_id, last_pass_run_id)
SELECT ?, ?, f.nodeid_hash, f.nodeid, f.model, f.suite, ?, ?, f.outcome, f.duration_s, 1, f.duration_s, f.duration_s,
       ?, CASE WHEN f.outcome IN {PASSING} THEN ? END
FROM ({final_sql(retried)}) f WHERE true ORDER BY f.nodeid_hash
ON CONFLICT (branch, runner_group, nodeid_hash) DO UPDATE SET
  runs = rollup_tests.runs + CASE WHEN {same} THEN 0 ELSE 1 END,
  duration_sum = rollup_tests.duration_sum + excluded.last_duration_s
                 - CASE WHEN {same} THEN rollup_tests.last_duration_s ELSE 0 END,
  duration_max = {db.greatest}(rollup_tests.duration_max, excluded.last_duration_s),
  changed_run_id = CASE WHEN (excluded.last_outcome IN {FAILING}) <> (rollup_tests.last_outcome IN {FAILING})
                        AND NOT {same} THEN excluded.last_run_id ELSE rollup_tests.changed_run_id END,
  last_pass_run_id = coalesce(excluded.last_pass_run_id, rollup_tests.last_pass_run_id),
  nodeid = excluded.nodeid, model = excluded.model, suite = excluded.suite, last_run_id = excluded.last_run_id,
  last_started_at = excluded.last_started_at, last_outcome = excluded.last_outcome,
  last_duration_s = excluded.last_duration_s
WHERE excluded.last_started_at > rollup_tests.last_started_at
   OR (excluded.last_started_at = rollup_tests.last_started_at AND excluded.last_run_id >= rollup_tests.last_run_id)
""", (key[1], key[2], run_id, started, run_id, run_id, run_id))
    db.run(f"""INSERT INTO rollup_test_names (nodeid_hash, nodeid, last_started_at)
SELECT f.nodeid_hash, f.nodeid, ? FROM ({final_sql(retried)}) f WHERE true ORDER BY f.nodeid_hash
ON CONFLICT (nodeid_hash) DO UPDATE SET nodeid = excluded.nodeid, last_started_at = excluded.last_started_at
WHERE rollup_test_names.last_started_at < ?""", (started, run_id, started - timedelta(hours=12)))


def _refresh_new_failures(db: Sql, run: tuple) -> None:
    run_id = run[0]
    db.run("DELETE FROM rollup_new_failures WHERE run_id = ?", (run_id,))
    baseline = _neighbour(db, run[:6], before=True) if run[6] != "running" else None
    db.run("UPDATE rollup_runs SET baseline_id = ? WHERE run_id = ?", (baseline, run_id))
    if baseline is None:
        return
    sql = classify_sql(with_missing=False, identity=False, failing_only=True)  # kept: no identity columns
    db.run(f"""INSERT INTO rollup_new_failures (run_id, nodeid_hash, nodeid, model, suite, outcome, message, device,
  baseline_id, baseline_outcome)
SELECT ?, n.nodeid_hash, n.nodeid, n.model, n.suite, n.outcome, substr(n.message, 1, {MESSAGE_CHARS}), n.device,
       ?, n.baseline_outcome
FROM ({sql}) n WHERE n.kind = 'new'
ON CONFLICT (run_id, nodeid_hash) DO NOTHING""", (run_id, baseline, baseline, run_id))
