"""8 writers of the same two runs at once through the SQLAlchemy writer (`write_records`, the path of
`harness run` and of benchmark records), in small batches with results, run ends and rollup refreshes,
half of them in the opposite run order: every writer finishes, one copy of each row is stored, each
row is counted as new by exactly one writer, and the rollups hold every result once."""

from __future__ import annotations

import threading

from sqlalchemy import text

from harness.bundle import Record
from harness.store import Store
from harness.store.writer import IngestStats, write_records

from .rollup_data import run_records

WRITERS = 8
TESTS = 60


def _records(uuid: str, day: int) -> list[Record]:
    return run_records(uuid, day, {f"t::{uuid}_{i}": "failed" if i % 7 == 0 else "passed" for i in range(TESTS)})


def test_eight_sqlalchemy_writers_of_two_runs_store_one_copy(db_url: str) -> None:
    a, b = _records("wa", 1), _records("wb", 2)
    Store.open(db_url).dispose()  # schema made once; the race is about the writes
    barrier = threading.Barrier(WRITERS)
    stats: list[IngestStats] = []
    errors: list[BaseException] = []

    def write(i: int) -> None:
        store = Store.open(db_url)
        try:
            # interleave the runs; odd writers take them in the opposite order
            first, second = (a, b) if i % 2 == 0 else (b, a)
            records = [r for pair in zip(first, second, strict=True) for r in pair]
            barrier.wait(timeout=60)
            stats.append(write_records(store, records, batch_size=15))
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)
        finally:
            store.dispose()

    threads = [threading.Thread(target=write, args=(i,)) for i in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, repr(errors[0])
    assert len(stats) == WRITERS
    assert sum(s.runs for s in stats) == 2 and sum(s.results for s in stats) == 2 * TESTS
    store = Store.open(db_url)
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM runs")).scalar() == 2
        assert conn.execute(text("SELECT count(*) FROM test_results")).scalar() == 2 * TESTS
        totals = conn.execute(text("SELECT r.uuid, u.n_total, u.n_fail FROM rollup_runs u JOIN runs r "
                                   "ON r.id = u.run_id ORDER BY 1")).all()
        assert [tuple(t) for t in totals] == [("wa", TESTS, 9), ("wb", TESTS, 9)]
    store.dispose()
