"""The generation benchmark of one (model, dtype, batch size, prompt length).

Follows the seed's sequence (load, two eager forwards, two eager generates, compiled first /
second / third token, the rest of the tokens, four compiled generates) and adds measured
repeats after warm-up (median, p90, CV), throughput, peak memory and roofline efficiency.
Every token is greedy (argmax): the token stream is deterministic and needs no host sync.
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import resource
import sys
import time
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import torch
from torch import nn

from . import roofline as rl
from .decode import Decoder
from .metrics import SEED_METRICS
from .stats import summarize
from .timing import EventTimer, synchronize, timed
from .zoo import Settings

__all__ = ["SEED_METRICS", "run_case", "plausibility_problems", "weights_nbytes"]

_ORDINALS = ("first", "second", "third", "fourth")
_MB = 1024.0 * 1024.0


def _log(msg: str) -> None:
    """Progress line on stderr when ``HARNESS_BENCH_VERBOSE=1`` (shown with ``pytest -s``)."""
    if os.environ.get("HARNESS_BENCH_VERBOSE") == "1":
        print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def kv_bytes_per_position(model: nn.Module) -> int:
    """Bytes of K and V, all layers and batch rows, of one sequence position."""
    total = 0
    for m in model.modules():
        k, v = getattr(m, "k_cache", None), getattr(m, "v_cache", None)
        if isinstance(k, torch.Tensor) and isinstance(v, torch.Tensor):
            total += (k.numel() * k.element_size() + v.numel() * v.element_size()) // k.shape[2]
    return total


def _cfg(config: Any, *names: str, default: int = 0) -> int:
    for n in names:
        value = getattr(config, n, None)
        if isinstance(value, int) and value:
            return value
    return default


def cost_of(model: nn.Module) -> rl.ModelCost:
    """Roofline accounting of ``model`` (after ``setup_caches``), from its ``config``."""
    c = getattr(model, "config", None)
    heads = _cfg(c, "n_heads", "n_head", "num_attention_heads")
    dim = _cfg(c, "dim", "n_embd", "hidden_size")
    head_dim = _cfg(c, "head_dim", default=dim // heads if heads else 0)
    return rl.model_cost(
        model,
        n_layers=_cfg(c, "n_layers", "n_layer", "num_hidden_layers"),
        attn_width=heads * head_dim,
        num_experts=_cfg(c, "num_experts", "n_experts", "num_local_experts"),
        top_k=_cfg(c, "num_experts_per_tok", "top_k", "n_active_experts"),
        kv_bytes_per_position=kv_bytes_per_position(model),
    )


def weights_nbytes(family: ModuleType, config: str, dtype: torch.dtype) -> int:
    """Parameter bytes of ``config`` (built on the meta device: no memory, no init)."""
    model = family.build(config, device="meta", dtype=dtype, seed=0)
    return sum(p.numel() * p.element_size() for p in {id(p): p for p in model.parameters()}.values())


@contextlib.contextmanager
def _inductor_options(settings: Settings) -> Iterator[None]:
    if settings.compile_backend != "inductor":
        yield
        return
    import torch._inductor.config as inductor_config

    with inductor_config.patch(
        coordinate_descent_tuning=settings.coordinate_descent_tuning, freezing=settings.freeze
    ):
        yield


def _counter(group: str, name: str) -> int:
    from torch._dynamo.utils import counters

    return int(counters[group].get(name, 0))


def _graph_breaks() -> int:
    from torch._dynamo.utils import counters

    return int(sum(counters["graph_break"].values()))


def run_case(
    family: ModuleType,
    config: str,
    settings: Settings,
    batch: int,
    prompt_len: int,
    ceilings: rl.Ceilings,
    fullgraph: bool = True,
) -> tuple[dict[str, float], dict[str, float]]:
    """Run the whole sequence for one case; returns (measurements, roofline).

    ``fullgraph=False`` lets dynamo break graphs (counted in ``graph_breaks``).
    """
    dev = torch.device(settings.device)
    cuda = dev.type == "cuda"
    n_new = settings.new_tokens
    m: dict[str, float] = {}
    torch.compiler.reset()
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
        # > 0 means an earlier case left memory behind (caught here, not in its own numbers)
        m["gpu_memory_allocated_at_start_mb"] = torch.cuda.memory_allocated(dev) / _MB
    skips0 = _counter("inductor", "cudagraph_skips")
    breaks0 = _graph_breaks()
    model = None
    try:
        model, m["model_load_time"] = timed(
            lambda: family.build(config, device=dev, dtype=settings.torch_dtype, seed=0), dev
        )
        _log(f"{config}: built in {m['model_load_time']:.1f}s")
        model.setup_caches(batch, prompt_len + n_new, static=True)
        gen = torch.Generator(device=dev).manual_seed(1234)
        prompt = torch.randint(0, model.config.vocab_size, (batch, prompt_len), device=dev, generator=gen)
        with torch.no_grad(), _inductor_options(settings):
            _eager_phase(model, prompt, settings, m)
            eager_tokens = m.pop("_eager_tokens")  # type: ignore[assignment]
            dec = Decoder(model, settings, batch, prompt_len, n_new)
            _eager_decode_rate(dec, prompt, settings, m)
            _log(f"{config}: eager done, {m['eager_time_per_token_secs'] * 1e3:.2f} ms/token; compiling")
            dec.compile(fullgraph)
            compiled_tokens = _first_tokens(dec, prompt, n_new, dev, m)
            _log(
                f"{config}: ttft {m['time_to_first_token_secs']:.1f}s, 2nd {m['time_to_second_token_secs']:.1f}s"
            )
            if settings.recompile:  # the same repeats before the cache-served recompile, to compare
                _, before = _measured(dec, prompt, settings, dev)
                _summary_before_recompile(m, before)
            _compile_generates(dec, prompt, settings, dev, m)
            _log(f"{config}: compile-generate {m['first_compile_generate_time_secs']:.1f}s; measuring")
            prefill_s, per_token_s = _measured(dec, prompt, settings, dev)
        m["greedy_prefix_agreement"] = _prefix_agreement(eager_tokens, compiled_tokens)  # type: ignore[arg-type]
        m["cudagraph_skips"] = float(_counter("inductor", "cudagraph_skips") - skips0)
        m["graph_breaks"] = float(_graph_breaks() - breaks0)
        _summaries(m, prefill_s, per_token_s, batch, prompt_len)
        _memory(m, dev)
        roof = _roofline(model, m, ceilings, batch, prompt_len, n_new)
    finally:
        if model is not None and hasattr(model, "clear_caches"):
            model.clear_caches()
        del model
        torch.compiler.reset()
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
    return m, roof


def _eager_phase(model: nn.Module, prompt: torch.Tensor, settings: Settings, m: dict[str, Any]) -> None:
    from models.generate import generate

    dev = prompt.device
    pos = torch.arange(prompt.shape[1], device=dev)
    for ordinal in _ORDINALS[:2]:
        _, m[f"{ordinal}_eager_forward_pass_time_secs"] = timed(lambda: model(prompt, pos), dev)
    for ordinal in _ORDINALS[:2]:
        out, m[f"{ordinal}_eager_generate_time_secs"] = timed(
            lambda: generate(model, prompt, settings.new_tokens), dev
        )
    m["_eager_tokens"] = out[:, prompt.shape[1] :]


def _eager_decode_rate(dec: Decoder, prompt: torch.Tensor, settings: Settings, m: dict[str, float]) -> None:
    """Eager time per decode step, through the same loop the compiled step is timed in."""
    dec.prefill(prompt)
    dec.step()  # warm-up
    steps = settings.eager_decode_steps
    with EventTimer(prompt.device) as t:
        for _ in range(steps):
            dec.step()
    m["eager_time_per_token_secs"] = t.elapsed_s / steps


def _first_tokens(dec: Decoder, prompt: torch.Tensor, n_new: int, dev: torch.device, m: dict[str, float]):
    """Seed's compiled sequence: token 1 (prefill), 2 and 3 (compile, graph capture), the rest."""
    _, m["time_to_first_token_secs"] = timed(lambda: dec.prefill(prompt), dev)
    _, m["time_to_second_token_secs"] = timed(dec.step, dev)
    _, m["time_to_third_token_secs"] = timed(dec.step, dev)
    rest = n_new - 3
    with EventTimer(dev) as t:
        for _ in range(rest):
            dec.step()
    m["time_to_next_token_mean_secs"] = t.elapsed_s / rest
    return dec.tokens().clone()


def _compile_generates(dec: Decoder, prompt: torch.Tensor, settings: Settings, dev: torch.device, m) -> None:
    if settings.recompile:  # first call of the series compiles again (caches on disk may help)
        torch.compiler.reset()
        dec.compile(dec.fullgraph)
    for ordinal in _ORDINALS:
        _, m[f"{ordinal}_compile_generate_time_secs"] = timed(
            lambda: dec.generate(prompt, settings.new_tokens), dev
        )


def _measured(dec: Decoder, prompt: torch.Tensor, settings: Settings, dev: torch.device):
    """Repeats after warm-up: prefill seconds and decode seconds per step, one sync per repeat."""
    for _ in range(settings.warmup):
        dec.generate(prompt, settings.new_tokens)
    synchronize(dev)
    prefill_s: list[float] = []
    per_token_s: list[float] = []
    steps = settings.new_tokens - 1
    for _ in range(settings.repeats):
        with EventTimer(dev) as tp:
            dec.prefill(prompt)
        with EventTimer(dev) as td:
            for _ in range(steps):
                dec.step()
        prefill_s.append(tp.elapsed_s)
        per_token_s.append(td.elapsed_s / steps)
    return prefill_s, per_token_s


def _prefix_agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    """Share of generated tokens before the first eager / compiled mismatch (mean over rows)."""
    n = min(a.shape[1], b.shape[1])
    same = (a[:, :n] == b[:, :n]).long().cumprod(dim=1).sum(dim=1).float() / max(n, 1)
    return float(same.mean())


def _summaries(m: dict[str, float], prefill_s, per_token_s, batch: int, prompt_len: int) -> None:
    tok = summarize(per_token_s)
    pre = summarize(prefill_s)
    for key in ("median", "p90", "mean", "min", "max"):
        m[f"time_per_token_{key}_secs"] = tok[key]
        m[f"prefill_time_{key}_secs"] = pre[key]
    m["time_per_token_cv"] = tok["cv"]
    m["prefill_time_cv"] = pre["cv"]
    m["measured_repeats"] = tok["n"]
    m["tokens_per_sec"] = batch / tok["median"]
    m["prefill_tokens_per_sec"] = batch * prompt_len / pre["median"]
    m["compile_speedup"] = m["eager_time_per_token_secs"] / tok["median"]


def _summary_before_recompile(m: dict[str, float], per_token_s: list[float]) -> None:
    tok = summarize(per_token_s)
    m["time_per_token_median_before_recompile_secs"] = tok["median"]
    m["time_per_token_cv_before_recompile"] = tok["cv"]


def _memory(m: dict[str, float], dev: torch.device) -> None:
    if dev.type == "cuda":
        m["peak_gpu_memory_allocated_mb"] = torch.cuda.max_memory_allocated(dev) / _MB
        m["peak_gpu_memory_reserved_mb"] = torch.cuda.max_memory_reserved(dev) / _MB
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    m["peak_rss_mb"] = rss / (_MB if sys.platform == "darwin" else 1024.0)


def _roofline(model, m, ceilings: rl.Ceilings, batch: int, prompt_len: int, n_new: int) -> dict[str, float]:
    cost = cost_of(model)
    context = prompt_len + (n_new - 2) / 2.0  # mean position read by the timed decode steps
    step_bytes = rl.decode_bytes_per_step(cost, batch, context)
    decode_floor = step_bytes / ceilings.copy_bytes_per_s
    flops = rl.prefill_flops(cost, batch, prompt_len)
    prefill_floor = flops / ceilings.matmul_flops_per_s
    all_params = cost.dense_weight_bytes + cost.expert_weight_bytes + cost.embedding_table_bytes
    return {
        "copy_bandwidth_bytes_per_sec": ceilings.copy_bytes_per_s,
        "matmul_flops_per_sec": ceilings.matmul_flops_per_s,
        "weight_bytes": float(cost.dense_weight_bytes + cost.expert_weight_bytes),
        "expert_weight_bytes": float(cost.expert_weight_bytes),
        "decode_bytes_per_step": step_bytes,
        "decode_floor_secs": decode_floor,
        "decode_efficiency": rl.efficiency(decode_floor, m["time_per_token_median_secs"]),
        "eager_decode_efficiency": rl.efficiency(decode_floor, m["eager_time_per_token_secs"]),
        # the usual shortcut (every parameter byte once per step), for comparison with others' figures
        "decode_efficiency_all_params": rl.efficiency(
            all_params / ceilings.copy_bytes_per_s, m["time_per_token_median_secs"]
        ),
        "achieved_bandwidth_bytes_per_sec": step_bytes / m["time_per_token_median_secs"],
        **(
            {"decode_efficiency_before_recompile": rl.efficiency(decode_floor, before)}
            if (before := m.get("time_per_token_median_before_recompile_secs"))
            else {}
        ),
        "prefill_flops": flops,
        "prefill_floor_secs": prefill_floor,
        "prefill_efficiency": rl.efficiency(prefill_floor, m["prefill_time_median_secs"]),
        "achieved_prefill_flops_per_sec": flops / m["prefill_time_median_secs"],
    }


def plausibility_problems(m: dict[str, float], roof: dict[str, float], settings: Settings) -> list[str]:
    """Reasons the numbers cannot be right (empty: plausible)."""
    bad = [f"{k} missing" for k in SEED_METRICS if k not in m]
    bad += [
        f"{k}={v!r} is not a finite number >= 0"
        for k, v in {**m, **roof}.items()
        if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0
    ]
    if bad:
        return bad
    timings = [k for k in SEED_METRICS if k.endswith(("_secs", "_time"))]
    bad += [f"{k} is zero" for k in timings if m[k] <= 0]
    if m["time_to_first_token_secs"] < m["time_per_token_median_secs"]:
        bad.append("the first compiled token (prefill + compile) beat a warm decode step")
    if settings.recompile and m["first_compile_generate_time_secs"] < m["second_compile_generate_time_secs"]:
        bad.append("first compile-generate (compiles) was faster than the second (warm)")
    if settings.cudagraphs and not m["graph_breaks"]:
        if m["cudagraph_skips"]:
            bad.append(f"inductor skipped CUDA graphs {int(m['cudagraph_skips'])} time(s)")
        if m["time_per_token_median_secs"] > m["eager_time_per_token_secs"]:
            bad.append("compiled decode is slower than eager")
    if settings.device == "cuda" and settings.shapes == "real":
        for key in ("decode_efficiency", "prefill_efficiency"):
            if roof[key] > 1.05:
                bad.append(f"{key}={roof[key]:.2f} is above the roofline: bytes/FLOPs miscounted")
    if (
        settings.min_decode_efficiency is not None
        and roof["decode_efficiency"] < settings.min_decode_efficiency
    ):
        bad.append(f"decode_efficiency {roof['decode_efficiency']:.3f} < {settings.min_decode_efficiency}")
    if settings.max_decode_cv is not None and m["time_per_token_cv"] > settings.max_decode_cv:
        bad.append(f"time_per_token_cv {m['time_per_token_cv']:.4f} > {settings.max_decode_cv}")
    return bad
