"""Change-point detection on synthetic benchmark series: detection delay and false alarms.

Targets (issue 5): a 5 % step under 2 % Gaussian noise is found within 5 points after it; at most 1
false alarm per 100 points of a stationary series. Compared side by side, on the same series, with a
fixed-percentage threshold (a point more than T % away from the mean of the 10 before it).

Detection is measured the way `harness perf-alerts` meets data: online. After each new point the
detector sees the whole prefix; the delay is the number of points after the step when an alert at
the step (within +-3 points: the range perf-alerts hands to bisect is widened by 3 points either
side, so such an alert still leads to the culprit) first appears. False alarms are counted online too: every distinct
alert position (merged within 3 points, as perf-alerts dedupes) ever raised on a stationary series,
per 100 points; the batch count (the full series analysed once) is shown beside it.

    .venv/bin/python benchmarks/bench_changepoint.py [--trials 200] [--seed 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.report.changepoint import EDivisive  # noqa: E402

PRE, MAX_DELAY, TOL, NEARBY = 50, 10, 3, 3  # TOL: perf-alerts widens the bisect range by 3 points
Finder = Callable[[np.ndarray], list[int]]  # series -> change indexes it reports on this prefix


def edivisive(detector: EDivisive) -> Finder:
    return lambda z: [cp.index for cp in detector.change_points(z)]


def fixed_threshold(pct: float, lookback: int = 10) -> Finder:
    """Flag point i when |z[i] / mean(z[i-lookback:i]) - 1| > pct (the usual dashboard alert)."""

    def find(z: np.ndarray) -> list[int]:
        i = len(z) - 1  # online: judge the newest point only; earlier flags were raised earlier
        if i < lookback:
            return []
        base = float(np.mean(z[i - lookback:i]))
        return [i] if abs(z[i] / base - 1.0) > pct else []

    find.cumulative = True  # type: ignore[attr-defined]
    return find


def online_flags(find: Finder, z: np.ndarray, start: int) -> list[int]:
    """Distinct alert positions raised while the series grows from `start` points to all of it."""
    seen: list[int] = []
    for n in range(start, len(z) + 1):
        for idx in find(z[:n]):
            if all(abs(idx - s) > NEARBY for s in seen):
                seen.append(idx)
    return seen


def delay(find: Finder, z: np.ndarray) -> int | None:
    """Points after the step (at PRE) until an alert at the step; None if not within MAX_DELAY."""
    for k in range(1, MAX_DELAY + 1):
        if any(abs(idx - PRE) <= TOL for idx in find(z[:PRE + k])):
            return k
    return None


def step_series(rng: np.random.Generator, step: float, noise: float) -> np.ndarray:
    z = 1.0 + noise * rng.standard_normal(PRE + MAX_DELAY)
    z[PRE:] += step
    return z


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--stationary-len", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    finders: dict[str, Finder] = {
        "E-Divisive p<0.001, min 2 % (default)": edivisive(EDivisive(min_magnitude=0.02)),
        "E-Divisive p<0.001, no min magnitude": edivisive(EDivisive()),
        "E-Divisive p<0.001, Otava 0.8.0 merge": edivisive(EDivisive(otava_compat=True)),
        "fixed threshold 3 %": fixed_threshold(0.03),
        "fixed threshold 5 %": fixed_threshold(0.05),
        "fixed threshold 8 %": fixed_threshold(0.08),
    }
    print(f"{args.trials} trials per row; step +5 % at point {PRE}, noise sd 2 %; stationary series of "
          f"{args.stationary_len} points, noise sd 2 %\n")
    print("| detector | found within 5 points | median delay (points) | false alarms / 100 points, online "
          "| same, batch | ms per analysis of 100 points |")
    print("|---|---|---|---|---|---|")
    for name, find in finders.items():
        rng = np.random.default_rng(args.seed)
        delays = [delay(find, step_series(rng, 0.05, 0.02)) for _ in range(args.trials)]
        within = sum(d is not None and d <= 5 for d in delays) / len(delays)
        found = [d for d in delays if d is not None]
        med = statistics.median(found) if found else float("nan")
        rng = np.random.default_rng(args.seed + 1)
        online = batch = 0
        points = 0
        t_total, t_calls = 0.0, 0
        for _ in range(args.trials):
            z = 1.0 + 0.02 * rng.standard_normal(args.stationary_len)
            online += len(online_flags(find, z, start=10))
            t0 = time.perf_counter()
            if getattr(find, "cumulative", False):
                batch += len(online_flags(find, z, start=10))
            else:
                batch += len(find(z))
            t_total += time.perf_counter() - t0
            t_calls += 1
            points += len(z)
        per100 = 100.0 * online / points
        print(f"| {name} | {within:.1%} | {med:g} | {per100:.2f} | {100.0 * batch / points:.2f} "
              f"| {1000 * t_total / t_calls:.2f} |")


if __name__ == "__main__":
    main()
