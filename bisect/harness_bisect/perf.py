"""Timing-regression bisect (`--perf METRIC --threshold X`), after Chromium's Pinpoint.

Each probe measures the metric several times (one pytest process, the first attempt dropped as
warm-up). Samples are compared with a Mann-Whitney U test and a three-way verdict: `different`
(p < alpha), `same` (p > beta) or `unsure`, which means measure more: the sample count doubles, up to
`max_samples`, after which the commit is a skip (it cannot be told apart, so it can only end up in a
reported range). METRIC is `duration` (the test's call time) or a number the test records with
`record_property(NAME, value)` or inside a `harness_benchmark` property's `measurements`.

X is either a metric value (``--threshold 0.25``: good is on one side of it, bad on the other, as
`harness perf-alerts` hands it over) or a relative change (``--threshold 10%``: bad differs from good
by at least that much, and a probe is bad when it sits past the midpoint). A probe is `fail` when its
median is on bad's side of that split and its samples differ from good's, `pass` when on good's side
and different from bad's, and otherwise measured again.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from functools import lru_cache

from harness_bisect.probe import PASS, Attempt
from harness_bisect.search import FAIL as V_FAIL
from harness_bisect.search import PASS as V_PASS
from harness_bisect.search import SKIP as V_SKIP
from harness_bisect.search import UNSURE

DIFFERENT, SAME, UNKNOWN = "different", "same", "unsure"
REGRESSION, NONE = "regression", "none"


@dataclass(frozen=True)
class Threshold:
    """A metric value separating good from bad (`relative` False) or a minimum relative change."""

    value: float
    relative: bool


def parse_threshold(text: str | float) -> Threshold:
    """`0.25` -> the value 0.25; `10%` -> a relative change of 0.1. ValueError on anything else."""
    s = str(text).strip()
    try:
        value = float(s[:-1]) / 100 if s.endswith("%") else float(s)
    except ValueError:
        raise ValueError(f"expected a number (a metric value) or a percentage (a relative change), got {text!r}") \
            from None
    if not math.isfinite(value) or (s.endswith("%") and value <= 0):
        raise ValueError(f"expected a finite value or a positive percentage, got {text!r}")
    return Threshold(value, s.endswith("%"))


@lru_cache(maxsize=4096)
def _u_counts(n1: int, n2: int) -> tuple[int, ...]:
    """Number of orderings giving each U statistic value, for samples of sizes n1 and n2 (no ties)."""
    if n1 == 0 or n2 == 0:
        return (1,)
    a, b = _u_counts(n1 - 1, n2), _u_counts(n1, n2 - 1)
    out = [0] * (n1 * n2 + 1)
    for u, c in enumerate(a):
        out[u + n2] += c
    for u, c in enumerate(b):
        out[u] += c
    return tuple(out)


def mann_whitney_p(a: list[float], b: list[float]) -> float:
    """Two-sided Mann-Whitney U p-value: exact for small tie-free samples, else normal with tie correction."""
    n1, n2 = len(a), len(b)
    if n1 == 0 or n2 == 0:
        return 1.0
    pooled = sorted([(v, 0) for v in a] + [(v, 1) for v in b])
    ranks = [0.0] * len(pooled)
    ties: list[int] = []
    i = 0
    while i < len(pooled):
        j = i
        while j + 1 < len(pooled) and pooled[j + 1][0] == pooled[i][0]:
            j += 1
        for k in range(i, j + 1):
            ranks[k] = (i + j) / 2 + 1
        ties.append(j - i + 1)
        i = j + 1
    r1 = sum(r for r, (_, side) in zip(ranks, pooled, strict=True) if side == 0)
    u1 = r1 - n1 * (n1 + 1) / 2
    u = min(u1, n1 * n2 - u1)
    n = n1 + n2
    if all(t == 1 for t in ties) and n <= 40:
        counts = _u_counts(n1, n2)
        tail = sum(counts[: int(u) + 1]) / math.comb(n, n1)
        return min(1.0, 2 * tail)
    tie_term = sum(t ** 3 - t for t in ties) / (n * (n - 1))
    sigma = math.sqrt(n1 * n2 / 12 * ((n + 1) - tie_term))
    if sigma == 0:
        return 1.0
    z = (abs(u1 - n1 * n2 / 2) - 0.5) / sigma
    return math.erfc(max(z, 0.0) / math.sqrt(2))


def compare(a: list[float], b: list[float], alpha: float = 0.01, beta: float = 0.1) -> str:
    """Three-way verdict on two samples: different, same, or unsure (measure more)."""
    p = mann_whitney_p(a, b)
    if p < alpha:
        return DIFFERENT
    if p > beta:
        return SAME
    return UNKNOWN


class PerfOracle:
    """Samples per (test, position) and the verdicts drawn from them."""

    def __init__(self, metric: str, threshold: Threshold, bad_position: int, samples: int = 6,
                 max_samples: int = 48, warmup: int = 1, alpha: float = 0.01, beta: float = 0.1) -> None:
        self.metric = metric
        self.threshold = threshold
        self.bad = bad_position
        self.initial = max(3, samples)
        self.max_samples = max(self.initial, max_samples)
        self.warmup = warmup
        self.alpha, self.beta = alpha, beta
        self.samples: dict[tuple[str, int], list[float]] = {}

    def value(self, attempt: Attempt) -> float | None:
        if attempt.status != PASS or attempt.outcome != "passed":
            return None
        return attempt.duration_s if self.metric == "duration" else attempt.metric

    def repeat(self, test: str, position: int) -> int:
        """Attempts to ask for: the initial count, then as many again as already taken (doubling)."""
        have = len(self.samples.get((test, position), []))
        return self.warmup + (self.initial if have == 0 else have)

    def add(self, test: str, position: int, attempts: list[Attempt]) -> None:
        values = [v for a in attempts[self.warmup:] if (v := self.value(a)) is not None]
        self.samples.setdefault((test, position), []).extend(values)

    def _sample(self, test: str, position: int) -> list[float]:
        return self.samples.get((test, position), [])

    def change(self, test: str) -> tuple[float, float]:
        """Median at good and at bad."""
        return statistics.median(self._sample(test, 0)), statistics.median(self._sample(test, self.bad))

    def split(self, test: str) -> float:
        """The metric value between good and bad: the absolute threshold, or the midpoint of the medians."""
        good, bad = self.change(test)
        return (good + bad) / 2 if self.threshold.relative else self.threshold.value

    def verify(self, test: str) -> str:
        """regression / none / unsure, from the samples at good (position 0) and bad."""
        good, bad = self._sample(test, 0), self._sample(test, self.bad)
        if not good or not bad:
            return NONE
        mg, mb = self.change(test)
        if self.threshold.relative:
            big_enough = abs(mb - mg) >= self.threshold.value * abs(mg) and mb != mg
        else:
            big_enough = (mg - self.threshold.value) * (mb - self.threshold.value) < 0
        if not big_enough:
            return NONE
        verdict = compare(bad, good, self.alpha, self.beta)
        if verdict == DIFFERENT:
            return REGRESSION
        if verdict == SAME or min(len(good), len(bad)) >= self.max_samples:
            return NONE
        return UNKNOWN

    def judge(self, test: str, position: int, attempts: list[Attempt]) -> str:
        """pass (like good), fail (like bad), skip (cannot tell) or unsure (measure again)."""
        self.add(test, position, attempts)
        here = self._sample(test, position)
        if not here:
            return V_SKIP
        mg, mb = self.change(test)
        bad_side = (statistics.median(here) - self.split(test)) * (1 if mb > mg else -1) >= 0
        if bad_side and compare(here, self._sample(test, 0), self.alpha, self.beta) == DIFFERENT:
            return V_FAIL
        if not bad_side and compare(here, self._sample(test, self.bad), self.alpha, self.beta) == DIFFERENT:
            return V_PASS
        return V_SKIP if len(here) >= self.max_samples else UNSURE
