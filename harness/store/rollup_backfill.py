"""Rollups of a store written before they existed: the backfills of migrations 0005 and 0006, which
recompute from every stored result what the writers keep at write time (harness/store/rollups.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from harness.store.rollups import (
    EXPLICIT_SKIP,
    FAILING,
    PASSING,
    Sql,
    _day,
    _refresh_run,
    final_sql,
    refresh_identity,
)


def backfill_identity(conn: Any) -> None:
    """The failure-identity rollups of every stored run (migration 0006), oldest first."""
    db = Sql(conn)
    for run_id, started in db.rows("SELECT r.run_id, u.started_at FROM rollup_runs r JOIN runs u ON u.id = r.run_id"
                                   " ORDER BY u.started_at, r.run_id"):
        when = datetime.fromisoformat(started) if isinstance(started, str) else started
        db.run(f"""UPDATE rollup_run_counts SET n_skip_explicit = (
  SELECT count(*) FROM ({final_sql()}) f WHERE coalesce(f.model, '(none)') = rollup_run_counts.model
    AND coalesce(f.suite, '(none)') = rollup_run_counts.suite AND {EXPLICIT_SKIP})
WHERE run_id = ?""".replace("t.run_id = ?", "t.run_id = rollup_run_counts.run_id"), (run_id,))
        refresh_identity(db, run_id, when, _day(when), None)


def backfill(conn: Any) -> None:
    """Rollups of every stored run (migration 0003): per run, oldest first, then the per-test tables in
    one pass over all results (the same values the per-run upserts reach when runs arrive in order,
    without one row version per run inside a single transaction)."""
    db = Sql(conn)
    for (run_id,) in db.rows("SELECT id FROM runs ORDER BY started_at, id"):
        _refresh_run(db, run_id, None, tests=False, identity=False)
    final = """SELECT t.nodeid_hash, t.nodeid, t.model, t.suite, t.outcome, t.duration_s, t.run_id, r.started_at,
       coalesce(r.branch, '(none)') AS branch, coalesce(r.runner_group, '(none)') AS runner_group,
       row_number() OVER (PARTITION BY t.run_id, t.nodeid_hash ORDER BY t.attempt DESC) AS rn
FROM test_results t JOIN runs r ON r.id = t.run_id WHERE r.status <> 'running'"""
    seq = f"""SELECT f.*, CASE WHEN f.outcome IN {FAILING} THEN 1 ELSE 0 END AS failing,
       row_number() OVER w AS k, count(*) OVER (PARTITION BY f.branch, f.runner_group, f.nodeid_hash) AS n,
       lag(CASE WHEN f.outcome IN {FAILING} THEN 1 ELSE 0 END) OVER w AS was_failing
FROM ({final}) f WHERE f.rn = 1
WINDOW w AS (PARTITION BY f.branch, f.runner_group, f.nodeid_hash ORDER BY f.started_at, f.run_id)"""
    key = "{a}.branch = {b}.branch AND {a}.runner_group = {b}.runner_group AND {a}.nodeid_hash = {b}.nodeid_hash"
    db.run(f"""WITH seq AS MATERIALIZED ({seq}),
agg AS (SELECT s.branch, s.runner_group, s.nodeid_hash, count(*) AS runs, sum(s.duration_s) AS duration_sum,
               max(s.duration_s) AS duration_max,
               max(CASE WHEN s.was_failing IS NULL OR s.was_failing <> s.failing THEN s.k END) AS changed_k,
               max(CASE WHEN s.outcome IN {PASSING} THEN s.k END) AS pass_k
        FROM seq s GROUP BY s.branch, s.runner_group, s.nodeid_hash)
INSERT INTO rollup_tests (branch, runner_group, nodeid_hash, nodeid, model, suite, last_run_id,
  last_started_at, last_outcome, last_duration_s, runs, duration_sum, duration_max, changed_run_id, last_pass_run_id)
SELECT l.branch, l.runner_group, l.nodeid_hash, l.nodeid, l.model, l.suite, l.run_id, l.started_at, l.outcome,
       l.duration_s, a.runs, a.duration_sum, a.duration_max, c.run_id, p.run_id
FROM seq l
JOIN agg a ON {key.format(a="a", b="l")}
LEFT JOIN seq c ON {key.format(a="c", b="l")} AND c.k = a.changed_k
LEFT JOIN seq p ON {key.format(a="p", b="l")} AND p.k = a.pass_k
WHERE l.k = l.n""")
    db.run(f"""INSERT INTO rollup_test_names (nodeid_hash, nodeid, last_started_at)
SELECT l.nodeid_hash, l.nodeid, l.started_at FROM (
  SELECT f.nodeid_hash, f.nodeid, f.started_at,
         row_number() OVER (PARTITION BY f.nodeid_hash ORDER BY f.started_at DESC, f.run_id DESC) AS j
  FROM ({final}) f WHERE f.rn = 1) l WHERE l.j = 1""")
