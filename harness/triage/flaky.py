"""Flaky-test history: one `flaky_tests` row per test, device and failure signature whose counts
accumulate (a test that fails two different ways is two histories, not one flaky test).

What a flaky observation is, and when a test is flaky, is defined once in `harness_bisect.flaky`
(`Flaky`, `is_flaky`); this module only keeps the history.
"""

from __future__ import annotations

from collections.abc import Iterable

from harness_bisect.flaky import Flaky
from sqlalchemy.dialects import postgresql, sqlite

from harness.store import Store
from harness.store.schema import FlakyTest, nodeid_hash, utcnow


def record_flaky(store: Store, observations: Iterable[Flaky], run_id: int | None = None) -> int:
    """Upsert each observation: add its counts to the row of its (test, device, signature); rows touched."""
    obs = list(observations)
    if not obs:
        return 0
    table = FlakyTest.__table__
    now = utcnow()
    with store.engine.begin() as conn:
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        for o in obs:
            stmt = dialect.insert(table).values(
                nodeid=o.test, nodeid_hash=nodeid_hash(o.test), device=o.device or "", signature=o.signature or "",
                failures=o.failures, attempts=o.attempts, last_run_id=run_id, first_seen=now, last_seen=now)
            conn.execute(stmt.on_conflict_do_update(
                index_elements=["nodeid_hash", "device", "signature"],
                set_={"failures": table.c.failures + stmt.excluded.failures,
                      "attempts": table.c.attempts + stmt.excluded.attempts,
                      "last_run_id": stmt.excluded.last_run_id, "last_seen": stmt.excluded.last_seen}))
    return len(obs)
