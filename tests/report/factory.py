"""Test data for the report tests, written through the real bundle writer (`write_records`)."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

import numpy as np

from harness.bundle import BenchmarkRecord, ResultRecord, RunEnd, RunRecord
from harness.store.db import Store
from harness.store.writer import write_records
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
