"""Which models, shapes and settings the benchmark suite runs; all chosen from the environment.

``HARNESS_MODELS``                comma list of families (unset: every family in ``models/``)
``HARNESS_BENCH_SHAPES``          ``tiny`` | ``real`` (default: real on CUDA, tiny on CPU)
``HARNESS_BENCH_DEVICE``          ``cuda`` | ``cpu`` (default: cuda when available)
``HARNESS_BENCH_DTYPE``           default bfloat16 on CUDA, float32 on CPU
``HARNESS_BENCH_BATCH_SIZES``     comma list, default ``1``
``HARNESS_BENCH_PROMPT_LENGTHS``  comma list, default ``128`` (real) / ``16`` (tiny)
``HARNESS_BENCH_NEW_TOKENS``      tokens per generation, default 128 (real) / 12 (tiny)
``HARNESS_BENCH_REPEATS``         measured generations after warm-up, default 8 (real) / 3 (tiny)
``HARNESS_BENCH_COMPILE_BACKEND`` default ``inductor`` on CUDA, ``eager`` (dynamo only) on CPU
``HARNESS_BENCH_COMPILE_PREFILL`` 1/0: compile the prefill too (default 1)
``HARNESS_BENCH_RECOMPILE``       1/0: ``torch.compiler.reset()`` before the compile-generate
                                  series so its first call includes compilation (default 1 on CUDA);
                                  the measured repeats then also run once before the reset
                                  (``time_per_token_median_before_recompile_secs``)
``HARNESS_BENCH_FREEZE``          1/0: inductor freezing (weights become constants, so matmuls that
                                  share an input are concatenated: q/k/v, gate/up; fusing them in the
                                  model was measured slower on H100, see docs/BENCHMARKS.md). Default 0: with
                                  torch 2.11 inductor then skips CUDA graphs ("mutated inputs": the
                                  static-input indices are not remapped after freezing)
``HARNESS_BENCH_CDT``             1/0: inductor coordinate-descent tuning (default 1 on CUDA)
``HARNESS_BENCH_MIN_DECODE_EFFICIENCY`` / ``HARNESS_BENCH_MAX_DECODE_CV``: optional gates
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from types import ModuleType
from typing import Any

import torch

__all__ = [
    "REAL_CONFIGS",
    "GRAPH_BREAKS_ALLOWED",
    "Settings",
    "load_settings",
    "model_names",
    "config_for",
    "family_module",
]

# The real shape each family is benchmarked at on a GPU.
REAL_CONFIGS: dict[str, str] = {
    "llama": "llama-2-7b",
    "mistral": "mistral-7b",
    "gemma": "gemma-2b",
    "mixtral": "mixtral-8x7b",
    "gpt2": "gpt2",
}

# Families whose forward cannot yet be captured as one graph: compiled with fullgraph=False and
# their graph breaks recorded (``graph_breaks``); every other family must compile with none.
GRAPH_BREAKS_ALLOWED: dict[str, str] = {
    "mixtral": "data-dependent expert routing (torch.where + numel per expert) in MOEFeedForward",
}


def _env(name: str, default: str) -> str:
    value = os.environ.get(name, "").strip()
    return value or default


def _ints(name: str, default: str) -> tuple[int, ...]:
    raw = _env(name, default)
    try:
        values = tuple(int(v) for v in raw.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"{name}={raw!r}: expected comma-separated integers") from None
    if not values or min(values) < 1:
        raise ValueError(f"{name}={raw!r}: expected positive integers")
    return values


def _flag(name: str, default: bool) -> bool:
    raw = _env(name, "1" if default else "0").lower()
    if raw not in ("0", "1", "true", "false", "yes", "no"):
        raise ValueError(f"{name}={raw!r}: expected 1 or 0")
    return raw in ("1", "true", "yes")


def _optional_float(name: str) -> float | None:
    raw = os.environ.get(name, "").strip()
    return float(raw) if raw else None


@dataclass(frozen=True)
class Settings:
    """Everything one benchmark session runs with (recorded alongside the results)."""

    shapes: str
    device: str
    dtype: str
    batch_sizes: tuple[int, ...]
    prompt_lengths: tuple[int, ...]
    new_tokens: int
    repeats: int
    warmup: int
    eager_decode_steps: int
    compile_backend: str
    compile_prefill: bool
    recompile: bool
    coordinate_descent_tuning: bool
    freeze: bool
    min_decode_efficiency: float | None
    max_decode_cv: float | None

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    @property
    def cudagraphs(self) -> bool:
        """The compiled decode step runs as a CUDA graph (``mode="reduce-overhead"``)."""
        return self.device == "cuda" and self.compile_backend == "inductor"

    def as_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def load_settings() -> Settings:
    """Settings from the environment (ValueError on a malformed variable)."""
    cuda = torch.cuda.is_available()
    device = _env("HARNESS_BENCH_DEVICE", "cuda" if cuda else "cpu")
    if device not in ("cuda", "cpu"):
        raise ValueError(f"HARNESS_BENCH_DEVICE={device!r}: expected cuda or cpu")
    if device == "cuda" and not cuda:
        raise ValueError("HARNESS_BENCH_DEVICE=cuda but torch sees no CUDA device")
    on_gpu = device == "cuda"
    shapes = _env("HARNESS_BENCH_SHAPES", "real" if on_gpu else "tiny")
    if shapes not in ("tiny", "real"):
        raise ValueError(f"HARNESS_BENCH_SHAPES={shapes!r}: expected tiny or real")
    real = shapes == "real"
    dtype = _env("HARNESS_BENCH_DTYPE", "bfloat16" if on_gpu else "float32")
    if not isinstance(getattr(torch, dtype, None), torch.dtype):
        raise ValueError(f"HARNESS_BENCH_DTYPE={dtype!r} is not a torch dtype")
    backend = _env("HARNESS_BENCH_COMPILE_BACKEND", "inductor" if on_gpu else "eager")
    new_tokens = _ints("HARNESS_BENCH_NEW_TOKENS", "128" if real else "12")[0]
    if new_tokens < 4:
        raise ValueError("HARNESS_BENCH_NEW_TOKENS must be >= 4 (three timed first tokens, then the rest)")
    return Settings(
        shapes=shapes,
        device=device,
        dtype=dtype,
        batch_sizes=_ints("HARNESS_BENCH_BATCH_SIZES", "1"),
        prompt_lengths=_ints("HARNESS_BENCH_PROMPT_LENGTHS", "128" if real else "16"),
        new_tokens=new_tokens,
        repeats=max(2, _ints("HARNESS_BENCH_REPEATS", "8" if real else "3")[0]),
        warmup=2 if real else 1,
        eager_decode_steps=min(new_tokens - 2, 32 if real else 8),
        compile_backend=backend,
        compile_prefill=_flag("HARNESS_BENCH_COMPILE_PREFILL", True),
        recompile=_flag("HARNESS_BENCH_RECOMPILE", on_gpu),
        coordinate_descent_tuning=_flag("HARNESS_BENCH_CDT", on_gpu),
        freeze=_flag("HARNESS_BENCH_FREEZE", False),
        min_decode_efficiency=_optional_float("HARNESS_BENCH_MIN_DECODE_EFFICIENCY"),
        max_decode_cv=_optional_float("HARNESS_BENCH_MAX_DECODE_CV"),
    )


def available_families() -> list[str]:
    from models import list_families

    return list_families()


def model_names() -> list[str]:
    """``HARNESS_MODELS`` (comma-separated) or every family of the zoo."""
    raw = os.environ.get("HARNESS_MODELS", "").strip()
    if raw and raw != "all":
        return [m.strip() for m in raw.split(",") if m.strip()]
    return available_families()


def family_module(name: str) -> ModuleType:
    """``models.<name>``; ValueError naming the known families for an unknown one."""
    from models import load_family

    return load_family(name)


def config_for(family: str, shapes: str) -> str | None:
    """The config name benchmarked for ``family`` (None: no real shape registered)."""
    return "tiny" if shapes == "tiny" else REAL_CONFIGS.get(family)
