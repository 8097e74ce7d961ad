"""Declared direction and unit of every metric the benchmark records.

The declarations travel with the numbers: ``declare()`` adds a ``"_meta"`` entry to the
``measurements`` object of each record, in plain JSON::

    "_meta": {"metrics": {"tokens_per_sec": {"better": "higher", "unit": "tokens/s"},
                          "roofline.decode_efficiency": {"better": "higher", "unit": "ratio"},
                          "measured_repeats": {"better": null, "unit": "count"}, ...}}

``better`` is ``"higher"`` or ``"lower"`` (which way is an improvement), or ``null`` for a number
that is recorded but is not a performance figure (never alerted on). Roofline keys are named
``roofline.<key>``, as the perf-alert series are. A metric missing from this table is undeclared:
the platform does not guess its direction and does not alert on it.

Imports nothing (no torch, no platform), so tests and tools can read the table cheaply.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DECLARED", "META_KEY", "declare", "declarations"]

META_KEY = "_meta"

_S, _MB, _B, _RATIO, _COUNT = "s", "MiB", "bytes", "ratio", "count"
SEED_METRICS = (  # the seed benchmark's 13 metrics, in its order (generation.py records them)
    "model_load_time",
    "first_eager_forward_pass_time_secs",
    "second_eager_forward_pass_time_secs",
    "first_eager_generate_time_secs",
    "second_eager_generate_time_secs",
    "time_to_first_token_secs",
    "time_to_second_token_secs",
    "time_to_third_token_secs",
    "time_to_next_token_mean_secs",
    "first_compile_generate_time_secs",
    "second_compile_generate_time_secs",
    "third_compile_generate_time_secs",
    "fourth_compile_generate_time_secs",
)
_LOWER_SECONDS = (
    *SEED_METRICS,
    "eager_time_per_token_secs",
    "time_per_token_median_before_recompile_secs",
    *(f"time_per_token_{k}_secs" for k in ("median", "p90", "mean", "min", "max")),
    *(f"prefill_time_{k}_secs" for k in ("median", "p90", "mean", "min", "max")),
    "roofline.decode_floor_secs",
    "roofline.prefill_floor_secs",
)

# name -> (better, unit); better is "higher", "lower" or None (recorded, never alerted on)
DECLARED: dict[str, tuple[str | None, str]] = {
    **{name: ("lower", _S) for name in _LOWER_SECONDS},
    "time_per_token_cv": ("lower", _RATIO),
    "prefill_time_cv": ("lower", _RATIO),
    "time_per_token_cv_before_recompile": ("lower", _RATIO),
    "measured_repeats": (None, _COUNT),
    "tokens_per_sec": ("higher", "tokens/s"),
    "prefill_tokens_per_sec": ("higher", "tokens/s"),
    "compile_speedup": ("higher", "x"),
    "greedy_prefix_agreement": ("higher", _RATIO),
    "cudagraph_skips": ("lower", _COUNT),
    "graph_breaks": ("lower", _COUNT),
    "gpu_memory_allocated_at_start_mb": ("lower", _MB),
    "peak_gpu_memory_allocated_mb": ("lower", _MB),
    "peak_gpu_memory_reserved_mb": ("lower", _MB),
    "peak_rss_mb": ("lower", _MB),
    "roofline.copy_bandwidth_bytes_per_sec": ("higher", "bytes/s"),
    "roofline.matmul_flops_per_sec": ("higher", "FLOP/s"),
    "roofline.weight_bytes": ("lower", _B),
    "roofline.expert_weight_bytes": ("lower", _B),
    "roofline.decode_bytes_per_step": ("lower", _B),
    "roofline.decode_efficiency": ("higher", _RATIO),
    "roofline.eager_decode_efficiency": ("higher", _RATIO),
    "roofline.decode_efficiency_all_params": ("higher", _RATIO),
    "roofline.decode_efficiency_before_recompile": ("higher", _RATIO),
    "roofline.achieved_bandwidth_bytes_per_sec": ("higher", "bytes/s"),
    "roofline.prefill_flops": ("lower", "FLOP"),
    "roofline.prefill_efficiency": ("higher", _RATIO),
    "roofline.achieved_prefill_flops_per_sec": ("higher", "FLOP/s"),
}


def declarations(names: list[str]) -> dict[str, dict[str, Any]]:
    """The declarations of `names` that the table knows (JSON-plain)."""
    return {n: {"better": DECLARED[n][0], "unit": DECLARED[n][1]} for n in names if n in DECLARED}


def declare(measurements: dict[str, Any], roofline: dict[str, Any] | None = None) -> dict[str, Any]:
    """A copy of `measurements` with the `_meta` entry declaring each recorded metric (and the
    numeric `roofline` keys, as `roofline.<key>`)."""
    names = [k for k in measurements if k != META_KEY]
    names += [f"roofline.{k}" for k in (roofline or {})]
    return {**measurements, META_KEY: {"metrics": declarations(names)}}
