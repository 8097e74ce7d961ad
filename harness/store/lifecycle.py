"""Run status over a run's life: heartbeats of a live run, and `abandoned` for runs whose process died.

`running` → `completed` | `failed` | `cancelled` is written by the run itself (its `run_end` record).
A process killed with `kill -9` (or a lost machine) cannot write it, so the live `harness run` beats
`runs.heartbeat_at` every few seconds, and the next writer (the next `harness run` opening the store)
calls `mark_abandoned`: a `running` run whose last sign of life (heartbeat, else start) is older than
the limit (`HARNESS_HEARTBEAT_LIMIT_S`, default 600 s) becomes `abandoned`.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from sqlalchemy import and_, func, select, update

from harness.errors import HarnessError
from harness.store import rollups
from harness.store.db import Store
from harness.store.schema import Run, TestResult, utcnow

LIMIT_ENV = "HARNESS_HEARTBEAT_LIMIT_S"
DEFAULT_LIMIT_S = 600.0
COMPLETE = "completed"
INCOMPLETE_STATUSES = ("running", "failed", "cancelled", "abandoned", "partial")


def heartbeat_limit_s(value: str | None = None) -> float:
    """The staleness limit in seconds (`HARNESS_HEARTBEAT_LIMIT_S`); HarnessError when not a positive number."""
    raw = value if value is not None else os.environ.get(LIMIT_ENV)
    if raw is None or raw == "":
        return DEFAULT_LIMIT_S
    try:
        limit = float(raw)
    except ValueError:
        limit = -1.0
    if not limit > 0:
        raise HarnessError(f"{LIMIT_ENV}={raw!r}: expected a positive number of seconds")
    return limit


def beat(store: Store, uuid: str, now: datetime | None = None) -> bool:
    """Record that run `uuid` is alive; False when it has no `running` row (not written yet, or ended)."""
    table = Run.__table__
    with store.engine.begin() as conn:
        res = conn.execute(update(table).where(and_(table.c.uuid == uuid, table.c.status == "running"))
                           .values(heartbeat_at=now or utcnow()))
    return bool(res.rowcount)


def mark_abandoned(store: Store, limit_s: float | None = None, now: datetime | None = None) -> list[str]:
    """Mark every `running` run silent for longer than `limit_s` as `abandoned`; returns their uuids."""
    limit = heartbeat_limit_s() if limit_s is None else limit_s
    cutoff = (now or utcnow()) - timedelta(seconds=limit)
    table = Run.__table__
    last_seen = func.coalesce(table.c.heartbeat_at, table.c.started_at)
    stale = and_(table.c.status == "running", last_seen < cutoff)
    with store.engine.begin() as conn:
        found = conn.execute(select(table.c.id, table.c.uuid).where(stale)).all()
        uuids = [row.uuid for row in found]
        if uuids:
            rollups.lock_runs(conn, uuids)  # after any writer of these runs, as every writer does
            conn.execute(update(table).where(and_(stale, table.c.uuid.in_(uuids)))
                         .values(status="abandoned", finished_at=last_seen))
            rollups.refresh(conn, [row.id for row in found])  # a finished run: its rollups say so too
    return uuids


def run_status(store: Store, uuid: str) -> str | None:
    """The stored status of run `uuid` (None when the store has no such run)."""
    with store.engine.connect() as conn:
        return conn.execute(select(Run.__table__.c.status).where(Run.__table__.c.uuid == uuid)).scalar()



def recent_durations(store: Store, suite: str, exclude_uuid: str | None = None,
                     look_back: int = 20) -> dict[str, float]:
    """Durations by `nodeid_hash` of `suite`'s tests in the latest completed run that ran it (an ETA's
    history); empty when the store has none. Reads one run's rows through the (run_id, ...) index."""
    runs = Run.__table__
    results = TestResult.__table__
    with store.engine.connect() as conn:
        candidates = conn.execute(select(runs.c.id, runs.c.uuid, runs.c.suites).where(runs.c.status == COMPLETE)
                                  .order_by(runs.c.id.desc()).limit(look_back)).all()
        for run_id, uuid, suites in candidates:
            if uuid == exclude_uuid or suite not in (suites or "").split(","):
                continue
            rows = conn.execute(select(results.c.nodeid_hash, results.c.duration_s).where(and_(
                results.c.run_id == run_id, results.c.suite == suite))).all()
            if rows:
                return {h: float(d or 0.0) for h, d in rows}
    return {}


__all__ = ["INCOMPLETE_STATUSES", "beat", "heartbeat_limit_s", "mark_abandoned", "recent_durations", "run_status"]
