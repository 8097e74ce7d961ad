"""The suites as the harness runs them: model selection, skip reasons, expectation record/compare."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _pytest(*args: str, **env: str) -> subprocess.CompletedProcess:
    full = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RUN_SLOW", "HARNESS_MODELS", "HARNESS_UPDATE_EXPECTATIONS", "PYTEST_ADDOPTS")
    }
    full.update(env, PYTHONPATH=str(ROOT), CUDA_VISIBLE_DEVICES="")
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args],
        cwd=ROOT,
        env=full,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_harness_models_selects_the_parametrisation() -> None:
    res = _pytest(
        "suites/quantization", "suites/slow", "suites/fa2", "--collect-only", HARNESS_MODELS="gpt2,llama"
    )
    assert res.returncode == 0, res.stdout + res.stderr
    ids = [line for line in res.stdout.splitlines() if "::" in line and "[" in line]
    assert len(ids) > 100
    assert any("gpt2" in i for i in ids) and any("llama" in i for i in ids)
    assert not any(name in i for i in ids for name in ("mistral", "gemma", "mixtral"))


def test_gates_skip_with_their_reasons() -> None:
    res = _pytest(
        "suites/slow", "suites/fa2", "-rs", "-k", "greedy or kernel_ran or two_gpu", HARNESS_MODELS="llama"
    )
    out = res.stdout
    assert res.returncode == 0, out + res.stderr
    assert "slow test: set RUN_SLOW=1 to run it" in out
    assert "FlashAttention-2 needs a CUDA GPU" in out
    assert " passed" not in out, "without RUN_SLOW and CUDA everything here must skip"


def test_expectations_record_then_compare(tmp_path: Path) -> None:
    common = dict(HARNESS_MODELS="gpt2", RUN_SLOW="1", HARNESS_EXPECTATIONS_DIR=str(tmp_path))
    sel = ("suites/slow", "-k", "matches_expectations", "-rs")
    res = _pytest(*sel, **common)
    assert "no expectation for gpt2/greedy_tokens/float32 on cpu" in res.stdout, res.stdout
    res = _pytest(*sel, "-s", HARNESS_UPDATE_EXPECTATIONS="1", **common)
    assert res.returncode == 0 and "gpt2/greedy_tokens/float32[cpu]: recorded" in res.stdout, res.stdout
    res = _pytest(*sel, **common)
    assert res.returncode == 0 and "3 passed" in res.stdout, res.stdout
    data = (tmp_path / "gpt2.json").read_text()
    (tmp_path / "gpt2.json").write_text(data.replace('"cpu": [', '"cpu": [1, ', 1))
    res = _pytest(*sel, **common)
    assert res.returncode == 1 and "vs expectation [cpu] on cpu" in res.stdout, res.stdout
