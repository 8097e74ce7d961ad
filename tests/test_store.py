"""The store on real Postgres and SQLite: migrations, idempotent batched writes, awkward names."""

from __future__ import annotations

from sqlalchemy import func, inspect, select

from harness.bundle import BenchmarkRecord, ResultRecord, RunEnd, RunRecord
from harness.store import Store
from harness.store.revision import SCHEMA_HEAD
from harness.store.schema import Benchmark, DeviceMeasurement, ModelMeasurement, Run, TestResult
from harness.store.writer import write_records

AWKWARD_IDS = [
    "tests/test_q.py::test_quotes[it's \"quoted\"]",
    "tests/test_sql.py::test_x[1'); DROP TABLE runs; --]",
    "tests/test_uni.py::test_ünïcødé[日本語-🦙]",
    "tests/test_long.py::test_long[" + "x" * 10_000 + "]",
]


def _records(uuid: str = "run-1") -> list:
    run = RunRecord(uuid=uuid, repo="/r", branch="main", commit_sha="a" * 40, commit_subject="s",
                    runner_group="cpu", started_at="2026-11-26T01:00:00+00:00")
    results = [ResultRecord(run=uuid, nodeid=n, outcome="passed", duration_s=0.5, model="llama", suite="slow")
               for n in AWKWARD_IDS]
    results.append(ResultRecord(run=uuid, nodeid="tests/t.py::test_fail", outcome="failed",
                                message="AssertionError: 1 != 2", worker="gw1", device="cpu"))
    bench = BenchmarkRecord(run=uuid, nodeid="suites/benchmark/test_b.py::test_b[llama]", model="llama",
                            config="tiny", dtype="float32", batch_size=1, prompt_length=8,
                            measurements={"time_to_first_token_secs": 0.01},
                            device_samples=[{"cpu_util": 12.5, "mem_megabytes": 100.0}])
    return [run, *results, bench, RunEnd(run=uuid, status="completed", finished_at="2026-11-26T01:05:00Z")]


def _count(store: Store, entity) -> int:
    with store.session() as s:
        return s.scalar(select(func.count()).select_from(entity))


def test_migrations_create_the_schema(store: Store) -> None:
    tables = set(inspect(store.engine).get_table_names())
    assert {"runs", "test_results", "benchmarks", "device_measurements", "model_measurements", "culprits",
            "flaky_tests", "perf_alerts", "alembic_version"} <= tables
    assert store.current_revision() == SCHEMA_HEAD
    store.upgrade()  # again: a no-op
    assert store.current_revision() == SCHEMA_HEAD


def test_schema_head_constant_matches_alembic() -> None:
    from alembic.script import ScriptDirectory

    from harness.store.db import SCHEMA_HEAD, alembic_config

    assert ScriptDirectory.from_config(alembic_config()).get_current_head() == SCHEMA_HEAD


def test_write_is_idempotent_and_round_trips_awkward_names(store: Store) -> None:
    first = write_records(store, _records())
    assert first.results == len(AWKWARD_IDS) + 1 and first.benchmarks == 1
    again = write_records(store, _records())
    assert again.benchmarks == 0
    assert _count(store, TestResult) == len(AWKWARD_IDS) + 1
    assert _count(store, Run) == 1 and _count(store, Benchmark) == 1
    assert _count(store, ModelMeasurement) == 1 and _count(store, DeviceMeasurement) == 1
    with store.session() as s:
        stored = set(s.scalars(select(TestResult.nodeid)))
        run = s.scalars(select(Run)).one()
        mm = s.scalars(select(ModelMeasurement)).one()
    assert set(AWKWARD_IDS) <= stored
    assert run.status == "completed" and run.finished_at is not None
    assert mm.measurements == {"time_to_first_token_secs": 0.01}


def test_results_before_header_make_a_partial_run_that_the_header_completes(store: Store) -> None:
    recs = _records("run-2")
    write_records(store, recs[1:3])
    with store.session() as s:
        assert s.scalars(select(Run.status)).one() == "partial"
    write_records(store, recs)
    with store.session() as s:
        run = s.scalars(select(Run)).one()
    assert run.branch == "main" and run.status == "completed"
    assert _count(store, TestResult) == len(AWKWARD_IDS) + 1
