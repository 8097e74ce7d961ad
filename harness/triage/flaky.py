"""Flaky-test history: one `flaky_tests` row per test and device whose counts accumulate."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy.dialects import postgresql, sqlite

from harness.store import Store
from harness.store.schema import FlakyTest, nodeid_hash, utcnow


@dataclass(frozen=True)
class FlakyObservation:
    """`failures` out of `attempts` for one test on one device."""

    nodeid: str
    device: str
    failures: int
    attempts: int


def record_flaky(store: Store, observations: Iterable[FlakyObservation], run_id: int | None = None) -> int:
    """Upsert each observation: add its counts to the test's row for that device; rows touched."""
    obs = list(observations)
    if not obs:
        return 0
    table = FlakyTest.__table__
    now = utcnow()
    with store.engine.begin() as conn:
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        for o in obs:
            stmt = dialect.insert(table).values(
                nodeid=o.nodeid, nodeid_hash=nodeid_hash(o.nodeid), device=o.device or "",
                failures=o.failures, attempts=o.attempts, last_run_id=run_id, first_seen=now, last_seen=now)
            conn.execute(stmt.on_conflict_do_update(
                index_elements=["nodeid_hash", "device"],
                set_={"failures": table.c.failures + stmt.excluded.failures,
                      "attempts": table.c.attempts + stmt.excluded.attempts,
                      "last_run_id": stmt.excluded.last_run_id, "last_seen": stmt.excluded.last_seen}))
    return len(obs)
