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

# An owed run's `rollup_runs.source` is its last fingerprint (40 hex digits) with the first replaced by
# "p": a refresh that finds the run's rows and metadata unchanged only clears the mark, so re-writing
# the same rows (a re-ingest) stays cheap.
MARK = "p"


def mark(conn: Any, run_ids: Iterable[int]) -> None:
    """Mark the rollups of `run_ids` owed, in the caller's transaction (runs with no rollups yet are
    owed already)."""
    ids = sorted(set(run_ids))
    if not ids:
        return
    marks = ", ".join(["?"] * len(ids))  # placeholders only: the values are bound
    rollups.Sql(conn).run(f"UPDATE rollup_runs SET source = ? || coalesce(substr(source, 2), '') WHERE run_id IN "
                          f"({marks}) AND (source IS NULL OR substr(source, 1, 1) <> ?)", (MARK, *ids, MARK))


def is_marked(source: str | None) -> bool:
    """Whether a `rollup_runs.source` says the run's rollups are owed."""
    return bool(source) and source[0] == MARK  # type: ignore[index]


def owed(conn: Any, limit: int = 50) -> list[tuple[int, str]]:
    """(id, uuid) of runs whose rollups are owed, oldest first (runs older than a prune keep theirs)."""
    cutoff = rollups.pruned_before(conn)
    since = " AND r.started_at >= ?" if cutoff is not None else ""
    params: tuple[Any, ...] = (MARK, cutoff, limit) if cutoff is not None else (MARK, limit)
    return [(int(i), str(u)) for i, u in rollups.Sql(conn).rows(
        "SELECT r.id, r.uuid FROM runs r LEFT JOIN rollup_runs s ON s.run_id = r.id "
        f"WHERE (s.run_id IS NULL OR substr(s.source, 1, 1) = ?){since} ORDER BY r.id LIMIT ?", params)]


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
