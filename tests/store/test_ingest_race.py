"""8 `harness ingest` processes of one bundle at once, into a brand-new database (real Postgres and
SQLite), repeated: exactly one copy of every record, and exactly one process reports each as new."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select

from harness.bundle import BenchmarkRecord, BundleWriter, ResultRecord, RunEnd, RunRecord
from harness.store.schema import Benchmark, DeviceMeasurement, ModelMeasurement, PerfAlert, Run, TestResult

PROCESSES = 8
RESULTS = 5000
BENCHMARKS = 6
SAMPLES = 3


def make_bundle(path: Path, uuid: str = "race-run") -> Path:
    with BundleWriter(path) as w:
        w.write(RunRecord(uuid=uuid, branch="main", commit_sha="c" * 40, runner_group="cpu",
                          started_at="2026-12-01T00:00:00+00:00"))
        for i in range(RESULTS):
            w.write(ResultRecord(run=uuid, nodeid=f"tests/m{i % 9}/test_x.py::test_{i}", model=f"m{i % 9}",
                                 suite="slow", outcome="failed" if i % 50 == 0 else "passed", duration_s=0.01,
                                 attempt=1 + (i % 3 == 0)))
        for b in range(BENCHMARKS):
            w.write(BenchmarkRecord(run=uuid, nodeid=f"suites/benchmark/test_b.py::test_b[m{b}]", model=f"m{b}",
                                    config="tiny", dtype="float32", batch_size=1, prompt_length=8,
                                    measurements={"latency_secs": 0.1 * (b + 1)},
                                    device_samples=[{"cpu_util": 10.0 * s} for s in range(SAMPLES)]))
        w.write(RunEnd(run=uuid, status="completed", finished_at="2026-12-01T00:10:00+00:00"))
    return path


def ingest_at_once(bundle: Path, url: str, n: int = PROCESSES) -> list[dict]:
    procs = [subprocess.Popen([sys.executable, "-m", "harness.cli", "ingest", str(bundle), "--db", url, "--json"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(n)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        assert "Traceback" not in err, err
        outs.append(json.loads(out))
    return outs


def counts(url: str) -> dict[str, int]:
    engine = create_engine(url)
    with engine.connect() as conn:
        got = {e.__tablename__: conn.execute(select(func.count()).select_from(e)).scalar()
               for e in (Run, TestResult, Benchmark, ModelMeasurement, DeviceMeasurement, PerfAlert)}
    engine.dispose()
    return got


@pytest.mark.parametrize("round_", range(3))
def test_eight_ingests_of_one_bundle_store_one_copy(round_: int, db_url: str, tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "bundle.jsonl")
    reports = ingest_at_once(bundle, db_url)
    added = [r["added"] for r in reports]
    assert sorted(a["runs"] for a in added) == [0] * (PROCESSES - 1) + [1]
    assert sum(a["results"] for a in added) == RESULTS
    assert sum(a["benchmarks"] for a in added) == BENCHMARKS
    assert counts(db_url) == {"runs": 1, "test_results": RESULTS, "benchmarks": BENCHMARKS,
                              "model_measurements": BENCHMARKS, "device_measurements": BENCHMARKS * SAMPLES,
                              "perf_alerts": 0}
