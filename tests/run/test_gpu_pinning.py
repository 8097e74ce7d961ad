"""One GPU per xdist worker, set before the worker starts (so before CUDA can initialise).

The pinning is plain process environment, so it is checked here on CPU by asking for two "GPUs" and
reading back what each worker saw; docs/GPU_RUNS.md has the same run on a 2-GPU machine."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from harness.run.pytest_command import build_pass, marker_expression, worker_specs
from harness.run.target import SuiteSpec, load_target
from tests.run.test_run_cli import make_repo

PROBE = '''
import os
import pytest

@pytest.mark.parametrize("i", range(8))
def test_sees_one_gpu(i, record_property):
    record_property("seen", os.environ.get("CUDA_VISIBLE_DEVICES"))
    assert os.environ["CUDA_VISIBLE_DEVICES"] in ("0", "1")

@pytest.mark.multi_gpu
def test_multi_gpu_pass_sees_all():
    assert os.environ.get("CUDA_VISIBLE_DEVICES") is None
'''


def test_worker_specs_pin_one_gpu_each() -> None:
    assert worker_specs(2, 2) == ["--dist", "load",
                                  "--tx", "popen//env:CUDA_VISIBLE_DEVICES=0//env:HARNESS_DEVICE=cuda:0",
                                  "--tx", "popen//env:CUDA_VISIBLE_DEVICES=1//env:HARNESS_DEVICE=cuda:1"]
    assert worker_specs(3, 0) == ["-n", "3"]
    assert worker_specs(1, 4) == ["-n", "1"]


def test_marker_expressions() -> None:
    suite = SuiteSpec(name="fa2", markers="flash_attn_test")
    assert marker_expression(suite, None) == "(flash_attn_test)"
    assert marker_expression(suite, False) == "(flash_attn_test) and not multi_gpu"
    assert marker_expression(SuiteSpec(name="slow"), True) == "multi_gpu"


def test_each_worker_gets_its_own_gpu_and_multi_gpu_tests_run_apart(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    repo = tmp_path / "t"
    make_repo(repo, {"tests/test_probe.py": PROBE,
                     "conftest.py": "def pytest_configure(config):\n"
                                    "    config.addinivalue_line('markers', 'multi_gpu: needs 2 GPUs')\n"})
    target = load_target(repo)
    bundle = tmp_path / "b.jsonl"
    suite = target.suites["all"]
    for multi in (False, True):
        p = build_pass(target, suite, [], run_uuid="u", bundle=bundle, workers=2, gpu_count=2, multi_gpu=multi,
                       timeout=None)
        assert subprocess.run(p.argv, env=p.env, cwd=repo, capture_output=True).returncode == 0
    results = [json.loads(line) for line in bundle.read_text().splitlines()]
    single = [r for r in results if "sees_one_gpu" in r["nodeid"]]
    assert len(single) == 8 and all(r["outcome"] == "passed" for r in single)
    assert {(r["worker"], r["device"]) for r in single} == {("gw0", "cuda:0"), ("gw1", "cuda:1")}
    (multi,) = [r for r in results if "multi_gpu_pass" in r["nodeid"]]
    assert multi["outcome"] == "passed" and multi["device"] == "cpu"
