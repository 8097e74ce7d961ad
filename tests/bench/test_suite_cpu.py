"""Runs ``pytest suites/benchmark`` with tiny shapes on the CPU, as ``harness run`` would."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from models import list_families
from suites.benchmark.generation import SEED_METRICS

ROOT = Path(__file__).resolve().parents[2]
EXTRA = (
    "time_per_token_median_secs",
    "time_per_token_p90_secs",
    "time_per_token_cv",
    "tokens_per_sec",
    "prefill_tokens_per_sec",
    "eager_time_per_token_secs",
    "graph_breaks",
)


@pytest.fixture(scope="module")
def suite_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], Path, Path]:
    out = tmp_path_factory.mktemp("bench")
    records, junit = out / "records.jsonl", out / "junit.xml"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HARNESS_", "PYTEST_"))}
    env.update(
        HARNESS_BENCH_SHAPES="tiny",
        HARNESS_BENCH_DEVICE="cpu",
        HARNESS_BENCH_NEW_TOKENS="8",
        HARNESS_BENCH_REPEATS="2",
        HARNESS_BENCH_JSON=str(records),
    )
    cmd = [sys.executable, "-m", "pytest", "suites/benchmark", "-q", "-p", "no:cacheprovider",
           "-p", "no:logging", f"--junitxml={junit}"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    return proc, records, junit


def test_suite_passes_for_every_family(suite_run) -> None:
    proc, records, _ = suite_run
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    rows = [json.loads(line) for line in records.read_text().splitlines()]
    assert sorted(r["model"] for r in rows) == list_families()


def test_records_hold_seed_metrics_and_sane_values(suite_run) -> None:
    _, records, _ = suite_run
    for row in map(json.loads, records.read_text().splitlines()):
        assert {"model", "config", "dtype", "batch_size", "prompt_length", "gpu_name"} <= row.keys()
        assert (row["config"], row["dtype"], row["batch_size"], row["prompt_length"]) == (
            "tiny",
            "float32",
            1,
            16,
        )
        m, roof = row["measurements"], row["roofline"]
        missing = [k for k in SEED_METRICS + EXTRA if k not in m]
        assert not missing, f"{row['model']}: missing {missing}"
        meta = m.pop("_meta")["metrics"]  # direction + unit per metric (suites/benchmark/metrics.py)
        assert set(meta) == set(m) | {f"roofline.{k}" for k in roof}, row["model"]
        for key, value in {**m, **roof}.items():
            assert isinstance(value, (int, float)) and math.isfinite(value) and value >= 0, (key, value)
        for key in SEED_METRICS:
            assert 0 < m[key] < 120, (row["model"], key, m[key])
        assert m["measured_repeats"] == 2
        assert m["time_per_token_min_secs"] <= m["time_per_token_median_secs"] <= m["time_per_token_max_secs"]
        assert m["time_to_first_token_secs"] > m["time_per_token_median_secs"]
        assert m["tokens_per_sec"] == pytest.approx(1 / m["time_per_token_median_secs"])
        assert 0 < roof["decode_efficiency"] and 0 < roof["prefill_efficiency"]
        # every dense weight is read each step; MoE experts only when routed to
        assert roof["decode_bytes_per_step"] >= roof["weight_bytes"] - roof["expert_weight_bytes"] > 0


def test_junit_carries_the_property(suite_run) -> None:
    _, _, junit = suite_run
    cases = ET.parse(junit).getroot().iter("testcase")
    props = [p for case in cases for p in case.iter("property") if p.get("name") == "harness_benchmark"]
    assert len(props) == len(list_families())
