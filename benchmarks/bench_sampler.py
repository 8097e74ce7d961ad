"""Does DeviceSampler disturb what it measures?  Times workloads with and without it.

Each workload runs ``--repeats`` times with the sampler on and off, interleaved (off, on,
on, off, ...) so drift in clocks or thermals hits both alike; the table gives the median of
each and the ratio on/off (1.00 = no effect). Workloads: a pure-Python loop (competes for
the GIL with the sampler thread), small torch matmuls on the CPU and, when CUDA is present,
a launch-bound loop of tiny kernels and a bandwidth-bound copy on the GPU.

    .venv/bin/python benchmarks/bench_sampler.py --interval 0.1 0.01 --repeats 7
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from harness.run.device_sampler import DeviceSampler  # noqa: E402


def _python_loop() -> None:
    acc = 0
    for i in range(5_000_000):
        acc += i * i % 7


def _cpu_matmul() -> None:
    a = torch.randn(256, 256)
    for _ in range(1000):
        a = torch.tanh(a @ a * 1e-2)


def _gpu_launches() -> None:
    x = torch.ones(1024, device="cuda")
    for _ in range(50_000):
        x.mul_(1.0001)
    torch.cuda.synchronize()


def _gpu_copy() -> None:
    src = _GPU_BUF["src"]
    dst = _GPU_BUF["dst"]
    for _ in range(1000):
        dst.copy_(src)
    torch.cuda.synchronize()


_GPU_BUF: dict[str, torch.Tensor] = {}


def workloads() -> dict[str, Callable[[], None]]:
    out: dict[str, Callable[[], None]] = {"python_loop": _python_loop, "cpu_matmul": _cpu_matmul}
    if torch.cuda.is_available():
        _GPU_BUF["src"] = torch.randn(64 << 20, device="cuda")  # 256 MiB
        _GPU_BUF["dst"] = torch.empty_like(_GPU_BUF["src"])
        out["gpu_launches"] = _gpu_launches
        out["gpu_copy"] = _gpu_copy
    return out


def _time(fn: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure(fn: Callable[[], None], interval_s: float, repeats: int) -> dict[str, float]:
    """Median seconds without / with a running sampler, interleaved ABBA."""
    fn()  # warm up
    off: list[float] = []
    on: list[float] = []
    samples = 0
    for r in range(repeats):
        order = (False, True) if r % 2 == 0 else (True, False)
        for sampled in order:
            if sampled:
                with DeviceSampler(interval_s) as s:
                    on.append(_time(fn))
                samples += len(s.samples)
            else:
                off.append(_time(fn))
    m_off, m_on = statistics.median(off), statistics.median(on)
    spread = statistics.stdev(off) / statistics.fmean(off) if len(off) > 1 else 0.0
    return {
        "interval_s": interval_s,
        "off_s": m_off,
        "on_s": m_on,
        "ratio": m_on / m_off,
        "off_cv": spread,
        "samples": samples,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--interval", type=float, nargs="+", default=[0.1, 0.01])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = ap.parse_args(argv)
    rows = []
    for name, fn in workloads().items():
        for interval in args.interval:
            row = {"workload": name, **measure(fn, interval, args.repeats)}
            rows.append(row)
            print(
                f"{name:14s} interval={interval:<5g} off={row['off_s'] * 1e3:8.2f} ms "
                f"on={row['on_s'] * 1e3:8.2f} ms ratio={row['ratio']:.3f} "
                f"(off cv {row['off_cv']:.1%}, {row['samples']} samples)",
                flush=True,
            )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
