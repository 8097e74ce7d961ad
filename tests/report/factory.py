"""Test data for the report tests, written through the real bundle writer (`write_records`)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from harness_bisect.flaky import Flaky
from sqlalchemy import select

from harness.bundle import BenchmarkRecord, ResultRecord, RunEnd, RunRecord
from harness.store.db import Store
from harness.store.schema import Culprit, Run, nodeid_hash
from harness.store.writer import write_records
from harness.triage.flaky import record_flaky
from suites.benchmark.metrics import declare

T0 = datetime(2024, 5, 1, 12, 0, 0)
GPU = "NVIDIA A10G"


def sha(i: int, salt: str = "") -> str:
    return hashlib.sha1(f"commit-{salt}{i}".encode()).hexdigest()


def benchmark_series(store: Store, *, n: int = 40, step_at: int = 30, step: float = 0.10, noise: float = 0.01,
                     model: str = "llama", branch: str = "main", gpu: str = GPU, seed: int = 7,
                     salt: str = "", declared: bool = True, extra: dict[str, tuple[float, float]] | None = None,
                     metrics: bool = True) -> list[str]:
    """`n` benchmarked commits, one run each: time_to_first_token_secs jumps by `step` at `step_at`
    (a regression), model_load_time stays flat, roofline.decode_efficiency drops by the same
    fraction (higher is better: also a regression). `extra` adds metrics `name: (value, relative step
    at step_at)`; `metrics=False` leaves out the three above. Each measurement carries the `_meta`
    declarations the benchmark suite writes (`suites/benchmark/metrics.py`) unless `declared` is False.
    Returns the commit shas, oldest first."""
    rng = np.random.default_rng(seed)
    records, commits = [], []
    for i in range(n):
        run = RunRecord(branch=branch, commit_sha=sha(i, salt), commit_subject=f"change {i}",
                        commit_author="Ada", commit_email="ada@example.com", event="push",
                        workflow="benchmark", runner_group="single-gpu", gpu_name=gpu, gpu_count=1,
                        started_at=(T0 + timedelta(hours=i)).isoformat(), status="running")
        factor = 1.0 + (step if i >= step_at else 0.0)
        ttft = 0.5 * factor * (1 + noise * rng.standard_normal())
        eff = 0.6 / factor * (1 + noise * rng.standard_normal())
        records += [run, ResultRecord(run=run.uuid, nodeid="suites/benchmark/test_generate.py::test_llama",
                                      outcome="passed", model=model, suite="benchmark"), BenchmarkRecord(
            run=run.uuid, nodeid="suites/benchmark/test_generate.py::test_llama", model=model,
            gpu_name=gpu, created_at=(T0 + timedelta(hours=i, minutes=5)).isoformat(),
            measurements=_measurements(metrics, declared, ttft, 3.0 * (1 + noise * rng.standard_normal()), eff, {
                name: base * (1 + (rel if i >= step_at else 0.0)) * (1 + noise * rng.standard_normal())
                for name, (base, rel) in (extra or {}).items()}),
            device_samples=[{"cpu_util": 50.0, "mem_megabytes": 900.0, "gpu_util": 80.0,
                             "gpu_mem_megabytes": 12000.0, "gpu_index": 0,
                             "time": (T0 + timedelta(hours=i, minutes=5, seconds=s)).isoformat()}
                            for s in range(3)]),
            RunEnd(run=run.uuid, status="completed", finished_at=(T0 + timedelta(hours=i, minutes=9)).isoformat())]
        commits.append(run.commit_sha)
    write_records(store, records)
    return commits


def _measurements(metrics: bool, declared: bool, ttft: float, load: float, eff: float,
                  extra: dict[str, float]) -> dict:
    roofline = {"decode_efficiency": eff, "device": "A10G"} if metrics else {}
    m = {"time_to_first_token_secs": ttft, "model_load_time": load, "roofline": roofline} if metrics else {}
    m.update(extra)
    return declare(m, roofline) if declared else m


BROKEN = [f"tests/models/{m}/test_modeling_{m}.py::test_{name}" for m, names in (
    ("llama", ("generate", "logits", "batched", "cache", "rope", "sdpa", "beam")),
    ("mistral", ("generate", "logits", "batched", "cache", "window", "sdpa"))) for name in names]
FLAKY = ["tests/models/gpt2/test_modeling_gpt2.py::test_sampling", "tests/models/gpt2/test_modeling_gpt2.py::test_timing"]
STEADY = ["tests/models/gpt2/test_modeling_gpt2.py::test_forward", "tests/models/llama/test_modeling_llama.py::test_init"]


@dataclass
class CpuRegression:
    """The seeded story of one CPU run: 13 tests broken by one commit, 2 real flakes."""

    run_id: int
    earlier: list[int]
    culprit: str


def _model(nodeid: str) -> str:
    return nodeid.split("/")[2]


def cpu_regression(store: Store, earlier_runs: int = 5) -> CpuRegression:
    """Five nightly CPU runs where every test passes except one flake per run (FLAKY[0] failed in the
    2nd, FLAKY[1] in the 4th), then a run at a commit that breaks 13 tests (two messages) while both
    flakes fail again. A bisect found the culprit of all 13; `flaky_tests` holds the two flakes' mixed
    counts and an old mixed record for three of the broken tests (from a year-old run)."""
    records, runs = [], []
    for i in range(earlier_runs + 1):
        last = i == earlier_runs
        run = RunRecord(branch="main", commit_sha=sha(i, "cpu"), commit_subject=f"nightly {i}", event="schedule",
                        workflow="Nightly CI", runner_group="cpu", gpu_count=0, suites="slow",
                        started_at=(T0 + timedelta(days=i)).isoformat(), status="running")
        runs.append(run)
        records.append(run)
        for j, nodeid in enumerate(BROKEN):
            msg = ("AssertionError: logits differ at position 3 (max abs diff 0.71)" if j % 4 else
                   "RuntimeError: shape mismatch in rotary embedding")
            records.append(ResultRecord(run=run.uuid, nodeid=nodeid, outcome="failed" if last else "passed",
                                        model=_model(nodeid), suite="slow", message=msg if last else None,
                                        device="cpu"))
        for k, nodeid in enumerate(FLAKY):
            fails = last or i == 1 + 2 * k
            records.append(ResultRecord(run=run.uuid, nodeid=nodeid, outcome="failed" if fails else "passed",
                                        model="gpt2", suite="slow", device="cpu",
                                        message="AssertionError: sampled token differs" if fails else None))
        records += [ResultRecord(run=run.uuid, nodeid=n, outcome="passed", model=_model(n), suite="slow",
                                 device="cpu") for n in STEADY]
        records.append(RunEnd(run=run.uuid, status="completed",
                              finished_at=(T0 + timedelta(days=i, minutes=30)).isoformat()))
    write_records(store, records)
    with store.session() as s:
        ids = [s.execute(select(Run.id).where(Run.uuid == r.uuid)).scalar_one() for r in runs]
        culprit = sha(earlier_runs, "cpu")
        for nodeid in BROKEN:
            s.add(Culprit(run_id=ids[-1], nodeid=nodeid, nodeid_hash=nodeid_hash(nodeid), commit_sha=culprit,
                          author="Ada Lovelace", email="ada@example.com", subject="rotary: cache cos/sin", pr=7,
                          good_sha=sha(earlier_runs - 1, "cpu"), bad_sha=culprit))
    record_flaky(store, [Flaky(n, "cpu", 1, 10) for n in BROKEN[:3]], ids[0])  # a year-old story
    record_flaky(store, [Flaky(FLAKY[0], "cpu", 2, 6)], ids[1])
    record_flaky(store, [Flaky(FLAKY[1], "cpu", 1, 5)], ids[3])
    return CpuRegression(ids[-1], ids[:-1], culprit)
