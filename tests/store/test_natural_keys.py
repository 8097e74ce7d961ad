"""Natural keys on real Postgres and SQLite: a second write of a record is a no-op, at the same
moment too (forked writers released by a barrier), and migration 0004 dedupes older rows."""

from __future__ import annotations

import multiprocessing
import traceback
from collections.abc import Callable

from harness_bisect.report import BisectResult, CulpritReport
from sqlalchemy import func, select, text

from harness.bundle import BenchmarkRecord, RunRecord
from harness.report.perf_alerts import run_perf_alerts
from harness.store import Store
from harness.store.schema import Benchmark, Culprit, DeviceMeasurement, ModelMeasurement, PerfAlert, Run
from harness.store.writer import write_records
from harness.triage.bisect_glue import store_culprits
from tests.report.factory import benchmark_series

WRITERS = 6


def _child(url: str, job: Callable[[Store], int], barrier, results) -> None:  # noqa: ANN001
    try:
        store = Store.open(url)
        barrier.wait(timeout=60)
        results.put(("ok", job(store)))
        store.dispose()
    except BaseException:  # noqa: BLE001 - reported to the parent, which fails the test
        results.put(("error", traceback.format_exc()))


def at_once(url: str, job: Callable[[Store], int]) -> list[int]:
    """Run `job(store)` in WRITERS forked processes released together; their return values."""
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(WRITERS), ctx.Queue()
    procs = [ctx.Process(target=_child, args=(url, job, barrier, results)) for _ in range(WRITERS)]
    for p in procs:
        p.start()
    got = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    errors = [d for s, d in got if s != "ok"]
    assert not errors, errors[0]
    return [d for _, d in got]


def _count(store: Store, entity) -> int:
    with store.session() as s:
        return s.scalar(select(func.count()).select_from(entity))


def test_perf_alerts_found_by_many_at_once_are_recorded_and_new_once(store: Store, db_url: str) -> None:
    benchmark_series(store, n=40, step_at=30)
    new = at_once(db_url, lambda s: len(run_perf_alerts(s).new_regressions))
    assert sum(new) == 2  # ttft and decode efficiency: each reported new by exactly one process
    assert _count(store, PerfAlert) == 2
    assert not run_perf_alerts(store).new_regressions


def _bisect_result() -> BisectResult:
    culprit = CulpritReport(commit="b" * 40, author="Ada", email="ada@example.com", subject="break it", pr=7,
                            tests=["tests/t.py::test_a", "tests/t.py::test_b"])
    return BisectResult(good="a" * 40, bad="c" * 40, commits_in_range=5, culprits=[culprit])


def test_culprits_stored_by_many_at_once_are_stored_once(store: Store, db_url: str) -> None:
    write_records(store, [RunRecord(uuid="culprit-run")])
    with store.session() as s:
        run_id = s.scalar(select(Run.id))
    at_once(db_url, lambda s: store_culprits(s, _bisect_result(), run_id))
    assert _count(store, Culprit) == 2
    store_culprits(store, _bisect_result())  # without a run: replaces the rows of the same bisect
    store_culprits(store, _bisect_result())
    with store.session() as s:
        assert s.execute(select(Culprit.run_id)).scalars().all() == [None, None]


def test_benchmarks_written_by_many_at_once_are_stored_once(store: Store, db_url: str) -> None:
    run = RunRecord(uuid="bench-run", branch="main", commit_sha="d" * 40)
    records = [run, *[BenchmarkRecord(run=run.uuid, nodeid="b.py::test_b", model="llama", config=config,
                                      dtype=None, batch_size=None, prompt_length=8, measurements={"t_secs": 1.0},
                                      device_samples=[{"cpu_util": 1.0}, {"cpu_util": 2.0}])
                      for config in ("tiny", "small", None)]]
    added = at_once(db_url, lambda s: write_records(s, records).benchmarks)
    assert sum(added) == 3  # each benchmark counted new by exactly one writer
    assert (_count(store, Benchmark), _count(store, ModelMeasurement), _count(store, DeviceMeasurement)) == (3, 3, 6)


def test_migration_dedupes_rows_written_before_the_keys(db_url: str) -> None:
    store = Store.open(db_url, upgrade=False)
    store.upgrade("0002")
    with store.engine.begin() as conn:
        conn.execute(text("INSERT INTO runs (uuid, gpu_count, started_at, status) "
                          "VALUES ('r1', 0, '2026-12-01 00:00:00', 'completed')"))
        for i in range(3):  # the same benchmark three times (the old select-then-insert race)
            conn.execute(text("INSERT INTO benchmarks (created_at, run_id, nodeid_hash, model, config, dtype) "
                              "VALUES ('2026-12-01 00:00:00', 1, 'h', 'llama', NULL, 'fp32')"))
            conn.execute(text("INSERT INTO model_measurements (benchmark_id, measurements, time) "
                              "VALUES (:b, '{}', '2026-12-01 00:00:00')"), {"b": i + 1})
            conn.execute(text("INSERT INTO perf_alerts (metric, model, commit_after, magnitude, direction, "
                              "created_at) VALUES ('t', NULL, 'x', 0.1, 'regression', '2026-12-01 00:00:00')"))
            conn.execute(text("INSERT INTO culprits (run_id, nodeid, nodeid_hash, commit_sha, method, confidence, "
                              "created_at) VALUES (1, 'n', 'h', 'x', 'bisect', 1.0, '2026-12-01 00:00:00')"))
    store.upgrade()
    assert [_count(store, e) for e in (Benchmark, ModelMeasurement, PerfAlert, Culprit)] == [1, 1, 1, 1]
    with store.session() as s:
        assert s.scalar(select(Benchmark.benchmark_id)) == 1  # the oldest row is the one kept
    store.dispose()
