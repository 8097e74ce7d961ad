"""Profile the benchmark suite's compiled decode step on a GPU and time variants side by side.

Builds a real-shape model the way ``suites/benchmark`` does (seeded weights, static KV cache, the
suite's :class:`Decoder` with ``mode="reduce-overhead"`` and coordinate-descent tuning), then for
each variant: compiles the decode step, times ``--repeats`` generations (ms/token median and CV,
share of the measured copy roofline, as the suite counts it) and, with ``--profile``, records
``--steps`` decode steps with ``torch.profiler``: per-kernel time per step and its share of the
step, and how much of the step no kernel ran (launch gaps). The prefill stays eager (it is not
what is profiled, and its compile would double the time).

Variants (``--variants``, comma list): ``base`` (the suite's settings), ``pdl`` (inductor's
programmatic dependent launch on Hopper), ``combo`` (inductor combo kernels), ``eager_attn`` (the
zoo's explicit attention backend), ``nocdt`` (no coordinate-descent tuning: cuBLAS GEMVs),
``mask1x`` (static-cache sdpa mask built once per forward instead of once per layer), ``dattn``
(decode attention as fp32 reductions inductor generates, instead of sdpa), ``wide``
(coordinate descent looks in all directions, radius 2), ``mapw`` (``max_autotune_pointwise``: a
broad first set of reduction configs before the descent); ``+`` joins several (``wide+dattn``).
``--fresh`` turns inductor's caches off, so each variant's kernels are tuned independently.

With ``--ncu`` the script only compiles ``--variants``' first entry and runs one decode step
between ``cudaProfilerStart`` / ``Stop``, for ``ncu --profile-from-start off --graph-profiling node
--clock-control none --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum
--csv python3 benchmarks/gpu/profile_decode.py --ncu > ncu.csv`` (summarised by
``benchmarks/gpu/ncu_summary.py``).

Device machine: ``python3 benchmarks/gpu/profile_decode.py --out $OUT --profile --variants base,pdl``.
A 7B decode compile with coordinate-descent tuning takes about 60-70 s per variant on an H100;
``wide`` took over 4 minutes (docs/BENCHMARKS.md, "Profile of the compiled decode step").
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import statistics
import sys
import tarfile
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from models import attention as zoo_attention  # noqa: E402
from suites.benchmark import roofline as rl  # noqa: E402
from suites.benchmark.decode import Decoder  # noqa: E402
from suites.benchmark.generation import _measured, cost_of  # noqa: E402
from suites.benchmark.stats import summarize  # noqa: E402
from suites.benchmark.timing import EventTimer, synchronize  # noqa: E402
from suites.benchmark.zoo import Settings, family_module, load_settings  # noqa: E402

# inductor config patches per variant name
_INDUCTOR: dict[str, dict[str, Any]] = {
    "base": {},
    "pdl": {"triton.enable_pdl": True},
    "combo": {"combo_kernels": True},
    "eager_attn": {},
    "nocdt": {"coordinate_descent_tuning": False},
    "mask1x": {},
    "dattn": {},
    "wide": {"coordinate_descent_check_all_directions": True, "coordinate_descent_search_radius": 2},
    "mapw": {"max_autotune_pointwise": True},
}


def decode_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor, scale: float):
    """One query per row (decode) as fp32 broadcast-multiply reductions that inductor fuses itself."""
    b, h, _, d = q.shape
    hk, s = k.shape[1], k.shape[2]
    qf = q.float().reshape(b, hk, h // hk, d)
    scores = (qf[:, :, :, None, :] * k.float()[:, :, None, :, :]).sum(-1) * scale  # (B, Hkv, rep, S)
    keep = allowed.reshape(b, 1, 1, s)
    p = torch.softmax(scores.masked_fill(~keep, float("-inf")), dim=-1)
    out = (p[..., None] * v.float()[:, :, None, :, :]).sum(-2)  # (B, Hkv, rep, D)
    row_ok = keep.any(dim=-1, keepdim=True)
    return out.masked_fill(~row_ok, 0.0).reshape(b, h, 1, d).to(q.dtype)


@contextlib.contextmanager
def decode_attn() -> Iterator[None]:
    """Static-cache decode steps (one query) attend through :func:`decode_attention`, not sdpa."""
    import math

    from models import kv_cache

    original = kv_cache.AttnContext.attend

    def attend(self, q, k, v, cache, scale=None):  # type: ignore[no-untyped-def]
        if (
            self.mask is None
            or self.mask.dim() != 4
            or q.shape[2] != 1
            or self.causal
            or self.window is not None
        ):
            return original(self, q, k, v, cache, scale)
        if cache is not None:
            k, v = cache.update(self.input_pos, k, v, self.start)
        scale = scale if scale is not None else 1.0 / math.sqrt(q.shape[-1])
        return decode_attention(q, k, v, self.mask, scale)

    kv_cache.AttnContext.attend = attend
    try:
        yield
    finally:
        kv_cache.AttnContext.attend = original


@contextlib.contextmanager
def mask_once() -> Iterator[None]:
    """Static-cache sdpa: the additive mask and the empty-row flags built once per forward, not per layer."""
    import torch.nn.functional as F

    from models import kv_cache

    original = kv_cache.AttnContext.attend

    def attend(self, q, k, v, cache, scale=None):  # type: ignore[no-untyped-def]
        if (
            self.mask is None
            or self.mask.dim() != 4
            or self.causal
            or self.window is not None
            or zoo_attention.get_attention_backend() != "sdpa"
        ):
            return original(self, q, k, v, cache, scale)
        if cache is not None:
            k, v = cache.update(self.input_pos, k, v, self.start)
        prep = getattr(self, "_sdpa_prep", None)
        if prep is None:
            row_ok = self.mask.any(dim=-1, keepdim=True)
            allowed = (self.mask | ~row_ok).expand(q.shape[0], q.shape[1], q.shape[2], k.shape[2])
            bias = torch.zeros(allowed.shape, dtype=q.dtype, device=q.device).masked_fill(
                ~allowed, float("-inf")
            )
            prep = self._sdpa_prep = (bias, ~row_ok)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=prep[0], scale=scale, enable_gqa=q.shape[1] != k.shape[1]
        )
        return out.masked_fill(prep[1], 0.0)

    kv_cache.AttnContext.attend = attend
    try:
        yield
    finally:
        kv_cache.AttnContext.attend = original


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


@contextlib.contextmanager
def variant_context(name: str, settings: Settings) -> Iterator[None]:
    """Inductor options (the suite's, then the variant's) and the attention backend of ``name``."""
    import torch._inductor.config as ic

    patch: dict[str, Any] = {
        "coordinate_descent_tuning": settings.coordinate_descent_tuning,
        "freezing": settings.freeze,
    }
    parts = name.split("+")
    for part in parts:
        if part not in _INDUCTOR:
            raise ValueError(f"unknown variant {part!r}; known: {', '.join(_INDUCTOR)}")
        patch.update(_INDUCTOR[part])
    if "triton.enable_pdl" in patch and not hasattr(ic.triton, "enable_pdl"):
        raise RuntimeError("this torch's inductor has no triton.enable_pdl")
    backend = "eager" if "eager_attn" in parts else zoo_attention.get_attention_backend()
    if args_fresh():
        patch["force_disable_caches"] = True  # every variant tunes its kernels afresh
    patched = contextlib.ExitStack()
    if "mask1x" in parts:
        patched.enter_context(mask_once())
    if "dattn" in parts:
        patched.enter_context(decode_attn())
    with ic.patch(patch), zoo_attention.attention_backend(backend), patched:
        yield


def args_fresh() -> bool:
    return os.environ.get("PROFILE_DECODE_FRESH") == "1"


def _wrapper_files(since: float) -> list[str]:
    """Inductor output-code files (those defining ``call``) written since ``since``."""
    try:
        from torch._inductor.runtime.cache_dir_utils import cache_dir
    except ImportError:  # older layout
        from torch._inductor.runtime.runtime_utils import cache_dir
    found = []
    for path in glob.glob(os.path.join(cache_dir(), "**", "*.py"), recursive=True):
        if os.path.getmtime(path) >= since:
            with open(path, encoding="utf-8", errors="replace") as fh:
                text = fh.read()
            if "def call(" in text and "triton" in text:
                found.append(path)
    return found


def profile_steps(dec: Decoder, prompt: torch.Tensor, steps: int) -> dict[str, Any]:
    """Per-kernel device time of ``steps`` decode steps (torch.profiler, CUDA activity)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    dec.prefill(prompt)
    for _ in range(3):
        dec.step()
    synchronize(prompt.device)
    with EventTimer(prompt.device) as t:
        for _ in range(steps):
            dec.step()
    step_ms = t.elapsed_s * 1e3 / steps
    dec.prefill(prompt)
    for _ in range(3):
        dec.step()
    synchronize(prompt.device)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            dec.step()
        synchronize(prompt.device)
    kernels = [e for e in prof.events() if e.device_type == DeviceType.CUDA]
    per: dict[str, list[float]] = defaultdict(list)
    for e in kernels:
        per[e.name].append(e.time_range.elapsed_us())
    busy_us = sum(sum(v) for v in per.values())
    span_us = (
        max(e.time_range.end for e in kernels) - min(e.time_range.start for e in kernels) if kernels else 0.0
    )
    rows = sorted(
        (
            {
                "kernel": name,
                "per_step": len(v) / steps,
                "mean_us": statistics.fmean(v),
                "us_per_step": sum(v) / steps,
                "share_of_step": sum(v) / steps / (step_ms * 1e3),
            }
            for name, v in per.items()
        ),
        key=lambda r: -r["us_per_step"],
    )
    return {
        "steps": steps,
        "step_ms_events": step_ms,
        "kernels_per_step": len(kernels) / steps,
        "kernel_busy_ms_per_step": busy_us / steps / 1e3,
        "span_ms_per_step": span_us / steps / 1e3,
        "kernels": rows,
    }


def format_profile(name: str, prof: dict[str, Any], top: int = 30) -> str:
    lines = [
        f"== {name}: {prof['step_ms_events']:.3f} ms/step (events), {prof['kernels_per_step']:.0f} kernels/step, "
        f"kernel busy {prof['kernel_busy_ms_per_step']:.3f} ms, span {prof['span_ms_per_step']:.3f} ms "
        f"(idle {1 - prof['kernel_busy_ms_per_step'] / prof['step_ms_events']:.1%} of the step)",
        f"{'share':>7} {'us/step':>9} {'n/step':>6} {'mean us':>8}  kernel",
    ]
    for r in prof["kernels"][:top]:
        lines.append(
            f"{r['share_of_step']:7.1%} {r['us_per_step']:9.1f} {r['per_step']:6.1f} {r['mean_us']:8.2f}  "
            f"{r['kernel'][:110]}"
        )
    return "\n".join(lines)


def run_variant(
    name: str,
    model: torch.nn.Module,
    prompt: torch.Tensor,
    settings: Settings,
    ceilings: rl.Ceilings,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Compile the decode step under variant ``name``, time it, optionally profile it."""
    dev = prompt.device
    torch.compiler.reset()
    t0 = time.time()
    with torch.no_grad(), variant_context(name, settings):
        dec = Decoder(model, settings, prompt.shape[0], prompt.shape[1], settings.new_tokens)
        dec.compile()
        start = time.perf_counter()
        dec.generate(prompt, settings.new_tokens)
        synchronize(dev)
        compile_s = time.perf_counter() - start
        tokens = dec.tokens().clone()
        _, per_token = _measured(dec, prompt, settings, dev)
        prof = profile_steps(dec, prompt, args.steps) if args.profile else None
    tok = summarize(per_token)
    step_bytes = rl.decode_bytes_per_step(
        cost_of(model), prompt.shape[0], prompt.shape[1] + (settings.new_tokens - 2) / 2
    )
    floor = step_bytes / ceilings.copy_bytes_per_s
    out = {
        "variant": name,
        "compile_and_first_generate_s": compile_s,
        "ms_per_token_median": tok["median"] * 1e3,
        "cv": tok["cv"],
        "decode_efficiency": rl.efficiency(floor, tok["median"]),
        "decode_bytes_per_step": step_bytes,
        "tokens": tokens.tolist(),
        "profile": prof,
        "wrapper_files": _wrapper_files(t0),
    }
    log(
        f"{name}: {out['ms_per_token_median']:.4f} ms/token (cv {tok['cv']:.3%}), "
        f"{out['decode_efficiency']:.1%} of copy roofline; compile+generate {compile_s:.0f}s"
    )
    if prof:
        print(format_profile(name, prof), flush=True)
    return out


def save(out: Path, device_name: str, ceilings: rl.Ceilings, results: list[dict[str, Any]]) -> None:
    """``profile_decode.json`` and ``inductor_code.tar.gz`` (each variant's output code) under ``out``."""
    ok = [r for r in results if "error" not in r]
    for r in ok:  # greedy tokens against the first variant
        ref = ok[0]["tokens"][0]
        same = next((i for i, (a, b) in enumerate(zip(ref, r["tokens"][0], strict=True)) if a != b), len(ref))
        r["token_prefix_agreement_with_first"] = same / len(ref)
    with tarfile.open(out / "inductor_code.tar.gz", "w:gz") as tar:
        for r in ok:
            for i, path in enumerate(r["wrapper_files"]):
                if os.path.exists(path):
                    tar.add(path, arcname=f"{r['variant']}_{i}.py")
    doc = {
        "device": device_name,
        "torch": torch.__version__,
        "ceilings": ceilings.as_dict(),
        "results": results,
    }
    (out / "profile_decode.json").write_text(json.dumps(doc, indent=1))


def summary_table(results: list[dict[str, Any]]) -> str:
    lines = ["", "variant              ms/token      cv  copy-roofline  tokens-agree"]
    for r in results:
        if "error" in r:
            lines.append(f"{r['variant']:<18} ERROR {r['error'][:80]}")
        else:
            lines.append(
                f"{r['variant']:<18} {r['ms_per_token_median']:9.4f} {r['cv']:7.3%} {r['decode_efficiency']:10.1%} "
                f"{r['token_prefix_agreement_with_first']:10.2f}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", default="llama")
    ap.add_argument("--config", default="llama-2-7b")
    ap.add_argument("--variants", default="base")
    ap.add_argument("--profile", action="store_true", help="torch.profiler kernel table per variant")
    ap.add_argument("--steps", type=int, default=20, help="decode steps profiled")
    ap.add_argument("--ncu", action="store_true", help="one decode step inside cudaProfilerStart/Stop")
    ap.add_argument("--out", default=".")
    ap.add_argument("--fresh", action="store_true", help="no inductor caches: each variant tunes afresh")
    args = ap.parse_args(argv)
    if args.fresh:
        os.environ["PROFILE_DECODE_FRESH"] = "1"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = replace(load_settings(), compile_prefill=False)
    dev = torch.device(settings.device)
    device_name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    log(f"{device_name}, torch {torch.__version__}, settings {settings.as_dict()}")
    family = family_module(args.family)
    model = family.build(args.config, device=dev, dtype=settings.torch_dtype, seed=0)
    batch, prompt_len = settings.batch_sizes[0], settings.prompt_lengths[0]
    model.setup_caches(batch, prompt_len + settings.new_tokens, static=True)
    gen = torch.Generator(device=dev).manual_seed(1234)
    prompt = torch.randint(0, model.config.vocab_size, (batch, prompt_len), device=dev, generator=gen)
    if args.ncu:
        name = args.variants.split(",")[0]
        with torch.no_grad(), variant_context(name, settings):
            dec = Decoder(model, settings, batch, prompt_len, settings.new_tokens)
            dec.compile()
            dec.generate(prompt, settings.new_tokens)
            dec.prefill(prompt)
            for _ in range(3):
                dec.step()
            synchronize(dev)
            torch.cuda.cudart().cudaProfilerStart()
            dec.step()
            synchronize(dev)
            torch.cuda.cudart().cudaProfilerStop()
        log("ncu step done")
        return 0
    ceilings = rl.measure_ceilings(dev, dtype=settings.torch_dtype)
    log(
        f"ceilings: copy {ceilings.copy_bytes_per_s / 1e12:.3f} TB/s, matmul {ceilings.matmul_flops_per_s / 1e12:.0f} TFLOP/s"
    )
    results: list[dict[str, Any]] = []
    for name in args.variants.split(","):
        try:
            results.append(run_variant(name, model, prompt, settings, ceilings, args))
        except Exception as exc:  # keep the other variants' numbers
            log(f"{name}: FAILED {type(exc).__name__}: {exc}")
            results.append({"variant": name, "error": f"{type(exc).__name__}: {exc}"})
        save(out, device_name, ceilings, results)  # after each variant: a cut run keeps what it measured
    print(summary_table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
