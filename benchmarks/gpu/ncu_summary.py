"""Summarise an ``ncu --csv`` log of one decode step: per kernel name, count, time, DRAM bytes, bandwidth.

Input: the stdout of ``ncu --profile-from-start off --graph-profiling node --clock-control none
--metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum --csv python3
benchmarks/gpu/profile_decode.py --ncu`` (non-CSV lines are skipped). ncu serialises kernels and
flushes caches between them, so its durations are longer than in a CUDA-graph replay; the bytes
are what each kernel moved through DRAM.

Usage: ``python3 benchmarks/gpu/ncu_summary.py ncu.csv [--top 20]``.
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from typing import Any

_TIME, _READ, _WRITE = "gpu__time_duration.sum", "dram__bytes_read.sum", "dram__bytes_write.sum"


def load(path: str) -> list[dict[str, Any]]:
    """One dict per profiled kernel launch: name, block, grid and the three metrics."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        rows = list(csv.reader(line for line in fh if line.startswith('"')))
    if not rows:
        return []
    header, kernels = rows[0], {}
    for row in rows[1:]:
        d = dict(zip(header, row, strict=False))
        k = kernels.setdefault(
            d["ID"], {"name": d["Kernel Name"], "block": d["Block Size"], "grid": d["Grid Size"]}
        )
        k[d["Metric Name"]] = float(d["Metric Value"].replace(",", ""))
    return list(kernels.values())


def summarize(kernels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per kernel name: launches, mean ns, mean MB read / written, GB/s, share of all kernel time."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for k in kernels:
        groups[k["name"]].append(k)
    total = sum(k.get(_TIME, 0.0) for k in kernels) or 1.0
    out = []
    for name, ks in groups.items():
        t = sum(k.get(_TIME, 0.0) for k in ks)
        rd = sum(k.get(_READ, 0.0) for k in ks)
        wr = sum(k.get(_WRITE, 0.0) for k in ks)
        out.append(
            {
                "kernel": name,
                "launches": len(ks),
                "mean_us": t / len(ks) / 1e3,
                "read_mb": rd / len(ks) / 1e6,
                "write_mb": wr / len(ks) / 1e6,
                "gb_per_s": (rd + wr) / t if t else 0.0,  # bytes per ns = GB/s
                "share": t / total,
                "launch_shape": f"block {ks[0]['block']} grid {ks[0]['grid']}",
            }
        )
    return sorted(out, key=lambda r: -r["share"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv")
    ap.add_argument("--top", type=int, default=20)
    args = ap.parse_args(argv)
    kernels = load(args.csv)
    total_us = sum(k.get(_TIME, 0.0) for k in kernels) / 1e3
    print(f"{len(kernels)} kernels, {total_us:.1f} us of kernel time under ncu")
    print(f"{'share':>6} {'n':>3} {'mean us':>8} {'read MB':>8} {'wr MB':>6} {'GB/s':>6}  launch / kernel")
    for r in summarize(kernels)[: args.top]:
        print(
            f"{r['share']:6.1%} {r['launches']:3d} {r['mean_us']:8.2f} {r['read_mb']:8.2f} {r['write_mb']:6.2f} "
            f"{r['gb_per_s']:6.0f}  {r['launch_shape']}  {r['kernel'][:80]}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
