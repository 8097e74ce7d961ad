"""Decode speed of a real-shape model on a GPU: bf16 vs weight-only int8 / int4 (and bitnet).

Not a test (pytest collects ``test_*.py`` only): ``python -m suites.quantization.bench_decode
--family llama --config llama-2-7b --out results.json``. Each method builds the model on the GPU
(seeded random weights), quantizes it there, fills a static KV cache with a prompt, then times
single-token decode steps replayed from a CUDA graph (no Python launch overhead) and eagerly;
``--compile`` also times ``torch.compile``d steps (captured the same way), ``--cdt`` turns on
inductor's coordinate-descent tuning, without which compiled int8 decode is slow (docs/GPU_RUNS.md).
"""

from __future__ import annotations

import argparse
import gc
import json
import time

import torch

from models import load_family
from models._base import param_bytes
from models.quantize import quantize


def _time_steps(step, n: int) -> float:
    """Milliseconds per call of ``step`` (CUDA events, after one warm-up call)."""
    step()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(n):
        step()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / n


def _graph(fn) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
    """Warm ``fn`` up on a side stream, then capture one call of it as a CUDA graph."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn()
    return graph, out


def bench(family: str, config: str, method: str, prompt: int, steps: int, compile_: bool = False) -> dict:
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    model = load_family(family).build(config, device="cuda", dtype=torch.bfloat16, seed=0)
    if method != "bf16":
        quantize(model, method)
    torch.cuda.synchronize()
    build_s = time.perf_counter() - t0
    weights = param_bytes(model)
    total = prompt + steps + 8
    model.setup_caches(1, total, static=True)
    ids = torch.randint(0, 259, (1, prompt), device="cuda")
    tok = torch.zeros(1, 1, dtype=torch.long, device="cuda")
    pos = torch.full((1,), prompt, dtype=torch.long, device="cuda")
    with torch.no_grad():
        model(ids, torch.arange(prompt, device="cuda"))
        eager_ms = _time_steps(lambda m=model: m(tok, pos), steps)
        graph, logits = _graph(lambda m=model: m(tok, pos))
        graph_ms = _time_steps(graph.replay, steps)
        finite = bool(torch.isfinite(logits).all())
        compiled_ms = compile_s = None
        if compile_:
            t0 = time.perf_counter()
            compiled = torch.compile(model, fullgraph=True, dynamic=False)
            compiled(tok, pos)
            torch.cuda.synchronize()
            compile_s = time.perf_counter() - t0
            cgraph, clogits = _graph(lambda c=compiled: c(tok, pos))
            compiled_ms = _time_steps(cgraph.replay, steps)
            finite = finite and bool(torch.isfinite(clogits).all())
            del cgraph, clogits, compiled
    kernels = sorted({m.kernel for m in model.modules() if hasattr(m, "kernel")})
    out = dict(
        family=family,
        config=config,
        method=method,
        weight_gib=weights / 2**30,
        build_s=build_s,
        eager_ms_per_token=eager_ms,
        graph_ms_per_token=graph_ms,
        compiled_graph_ms_per_token=compiled_ms,
        compile_s=compile_s,
        tokens_per_s=1000 / graph_ms,
        achieved_gbps=weights / (graph_ms / 1000) / 1e9,
        peak_mem_gib=torch.cuda.max_memory_allocated() / 2**30,
        kernels=kernels,
        finite=finite,
    )
    del model, graph, logits
    gc.collect()
    torch.cuda.empty_cache()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", default="llama")
    ap.add_argument("--config", default="llama-2-7b")
    ap.add_argument("--methods", default="bf16,int8,int4")
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--compile", action="store_true", help="also time torch.compile'd steps (inductor)")
    ap.add_argument("--cdt", action="store_true", help="inductor coordinate-descent tuning (int8 needs it)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.cdt:
        import torch._inductor.config as inductor_config

        inductor_config.coordinate_descent_tuning = True
    rows = []
    for method in args.methods.split(","):
        row = bench(args.family, args.config, method, args.prompt, args.steps, args.compile)
        rows.append(row)
        print(json.dumps(row), flush=True)
    base = rows[0]["graph_ms_per_token"]
    print(
        f"{'method':8} {'GiB':>6} {'eager ms':>9} {'graph ms':>9} {'compiled':>9} {'tok/s':>7} {'speedup':>7} kernels"
    )
    for r in rows:
        comp = r["compiled_graph_ms_per_token"]
        best = min(r["graph_ms_per_token"], comp or float("inf"))
        print(
            f"{r['method']:8} {r['weight_gib']:6.2f} {r['eager_ms_per_token']:9.2f} {r['graph_ms_per_token']:9.2f} "
            f"{comp if comp is not None else float('nan'):9.2f} {1000 / best:7.1f} {base / best:7.2f} "
            f"{','.join(r['kernels'])}"
        )
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(
                {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": rows},
                fh,
                indent=1,
            )


if __name__ == "__main__":
    main()
