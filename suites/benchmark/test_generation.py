"""Generation benchmark per model family: seed metrics, repeats, throughput, roofline."""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Callable
from typing import Any

import pytest
import torch

from .generation import plausibility_problems, run_case, weights_nbytes
from .metrics import declare
from .roofline import Ceilings
from .zoo import GRAPH_BREAKS_ALLOWED, Settings, config_for, family_module

_GIB = float(1 << 30)


def _device_name(settings: Settings) -> str:
    if settings.device == "cuda":
        return torch.cuda.get_device_name()
    return platform.processor() or platform.machine() or "cpu"


def _skip_if_too_big(family: Any, config: str, settings: Settings) -> None:
    if settings.device != "cuda":
        return
    need = weights_nbytes(family, config, settings.torch_dtype)
    free, _ = torch.cuda.mem_get_info()
    if need * 1.1 + 4 * _GIB > free:
        pytest.skip(
            f"{config} needs {need / _GIB:.1f} GiB of weights; {free / _GIB:.1f} GiB free on this card"
        )


def _emit(record: dict[str, Any]) -> None:
    path = os.environ.get("HARNESS_BENCH_JSON")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")


@pytest.mark.benchmark
def test_generation(
    model_name: str,
    batch_size: int,
    prompt_length: int,
    bench_settings: Settings,
    ceilings: Ceilings,
    record_property: Callable[[str, object], None],
    bench_summary: list[str],
) -> None:
    settings = bench_settings
    family = family_module(model_name)
    config = config_for(model_name, settings.shapes)
    if config is None:
        pytest.skip(f"no real-shape config registered for {model_name!r} (suites/benchmark/zoo.py)")
    _skip_if_too_big(family, config, settings)
    fullgraph = model_name not in GRAPH_BREAKS_ALLOWED
    measurements, roofline = run_case(
        family, config, settings, batch_size, prompt_length, ceilings, fullgraph
    )
    record = {
        "model": model_name,
        "config": config,
        "dtype": settings.dtype,
        "batch_size": batch_size,
        "prompt_length": prompt_length,
        "new_tokens": settings.new_tokens,
        "gpu_name": _device_name(settings),
        "torch_version": torch.__version__,
        "measurements": declare(measurements, roofline),  # + "_meta": direction and unit per metric
        "roofline": roofline,
        "ceilings": ceilings.as_dict(),
        "settings": settings.as_dict(),
    }
    record_property("harness_benchmark", record)
    _emit(record)
    m, r = measurements, roofline
    bench_summary.append(
        f"{model_name}/{config} {settings.dtype} b{batch_size} p{prompt_length}: "
        f"{m['time_per_token_median_secs'] * 1e3:.3f} ms/token (cv {m['time_per_token_cv']:.2%}, "
        f"eager {m['eager_time_per_token_secs'] * 1e3:.2f}), {m['tokens_per_sec']:.1f} tok/s, "
        f"decode {r['decode_efficiency']:.1%} of roofline (eager {r['eager_decode_efficiency']:.1%}), "
        f"prefill {m['prefill_tokens_per_sec']:.0f} tok/s = {r['prefill_efficiency']:.1%}, "
        f"ttft {m['time_to_first_token_secs']:.1f}s"
    )
    problems = plausibility_problems(measurements, roofline, settings)
    assert not problems, "; ".join(problems)
