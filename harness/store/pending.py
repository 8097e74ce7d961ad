"""Rollups owed: runs whose rows were committed before their rollups were refreshed.

A live writer may commit results without refreshing the run's rollups in the same transaction (the
sidecar of a plain pytest session does, so that its last write is short and the session can say
"stored" at once; it refreshes them right after). Such a transaction marks the run owed:
`rollup_runs.source` becomes `pending` (a run with no `rollup_runs` row yet is owed as well). The writer
that marked it pays it; if that writer died first, the next writer to start pays it
(`refresh_pending`), so a lost refresh delays the panels, never loses results.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from harness.store import rollups

PENDING = "pending"  # `rollup_runs.source` of a run whose rollups are owed


def mark(conn: Any, run_ids: Iterable[int]) -> None:
    """Mark the rollups of `run_ids` owed, in the caller's transaction (runs with no rollups yet are
    owed already)."""
    ids = sorted(set(run_ids))
    if not ids:
        return
    marks = ", ".join(["?"] * len(ids))  # placeholders only: the values are bound
    rollups.Sql(conn).run(f"UPDATE rollup_runs SET source = ? WHERE run_id IN ({marks}) AND "
                          "(source IS NULL OR source <> ?)", (PENDING, *ids, PENDING))


def owed(conn: Any, limit: int = 50) -> list[tuple[int, str]]:
    """(id, uuid) of runs whose rollups are owed, oldest first (runs older than a prune keep theirs)."""
    cutoff = rollups.pruned_before(conn)
    since = " AND r.started_at >= ?" if cutoff is not None else ""
    params: tuple[Any, ...] = (PENDING, cutoff, limit) if cutoff is not None else (PENDING, limit)
    return [(int(i), str(u)) for i, u in rollups.Sql(conn).rows(
        "SELECT r.id, r.uuid FROM runs r LEFT JOIN rollup_runs s ON s.run_id = r.id "
        f"WHERE (s.run_id IS NULL OR s.source = ?){since} ORDER BY r.id LIMIT ?", params)]


def refresh_owed(conn: Any, limit: int = 50) -> int:
    """Pay what is owed (at most `limit` runs), in one transaction of the caller's connection, which it
    commits; returns how many runs were refreshed."""
    runs = owed(conn, limit)
    if not runs:
        conn.commit()
        return 0
    rollups.lock_runs(conn, [uuid for _, uuid in runs])
    rollups.refresh(conn, [run_id for run_id, _ in runs])
    conn.commit()
    return len(runs)
