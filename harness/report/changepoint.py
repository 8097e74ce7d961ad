"""E-Divisive means change-point detection with a Student's t significance test (Hunter / Apache Otava).

The algorithm of Matteson & James ("A Nonparametric Approach for Multiple Change Point Analysis of
Multivariate Data", 2014) recursively splits a series where the energy statistic q-hat between the
two sides is largest, as long as the split is significant. Following Fleming et al. ("Hunter: Using
Change Point Detection to Hunt for Performance Regressions", ICPE 2023), as implemented in Apache
Otava, significance is a two-sided Student's t-test, the series is scanned in overlapping windows
at a relaxed p-value ("weak" change points), and a merge step then drops the weakest points until
every remaining one meets `max_pvalue` and `min_magnitude`.

Apache Otava itself is not a dependency (it pins numpy 2.2 and pulls in BigQuery clients);
`tests/report/test_changepoint.py` checks this implementation against results Otava 0.8.0 produced.
Only numpy is needed; the t distribution is computed here (no scipy).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

__all__ = ["ChangePoint", "ChangeDetector", "EDivisive", "qhat_matrix", "t_test", "student_t_two_sided_p"]


@dataclass(frozen=True)
class ChangePoint:
    """A change at `index` (the first point of the new regime) and the statistics around it."""

    index: int
    qhat: float
    pvalue: float
    mean_before: float
    mean_after: float
    std_before: float
    std_after: float

    @property
    def forward_change(self) -> float:
        """Relative change of the mean, after vs before (0.05 = 5 % higher)."""
        return self.mean_after / self.mean_before - 1.0 if self.mean_before else 0.0

    @property
    def magnitude(self) -> float:
        """The larger of the forward and backward relative changes, as Otava defines it."""
        back = self.mean_before / self.mean_after - 1.0 if self.mean_after else 0.0
        return max(abs(self.forward_change), abs(back))


class ChangeDetector(Protocol):
    """A strategy that finds change points in one metric series (oldest point first)."""

    def change_points(self, series: Sequence[float]) -> list[ChangePoint]: ...


# ---- statistics ---------------------------------------------------------------------------------


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b  # symmetry: faster convergence


def student_t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with `df` degrees of freedom."""
    if math.isnan(t):
        return 1.0
    if math.isinf(t):
        return 0.0
    return min(1.0, _betainc(df / 2.0, 0.5, df / (df + t * t)))


def t_test(left: np.ndarray, right: np.ndarray) -> tuple[float, float, float, float, float]:
    """Pooled two-sample t-test as Otava runs it: (p, mean_l, mean_r, std_l, std_r), stds with ddof 0."""
    n1, n2 = len(left), len(right)
    m1, m2 = float(np.mean(left)), float(np.mean(right))
    s1 = float(np.std(left)) if n1 >= 2 else 0.0
    s2 = float(np.std(right)) if n2 >= 2 else 0.0
    if n1 + n2 <= 2:
        return 1.0, m1, m2, s1, s2
    df = n1 + n2 - 2
    pooled = ((n1 - 1) * s1 * s1 + (n2 - 1) * s2 * s2) / df
    denom = math.sqrt(pooled * (1.0 / n1 + 1.0 / n2))
    if denom == 0.0:
        return (1.0 if m1 == m2 else 0.0), m1, m2, s1, s2
    return student_t_two_sided_p((m1 - m2) / denom, df), m1, m2, s1, s2


# ---- q-hat --------------------------------------------------------------------------------------


def qhat_matrix(z: np.ndarray) -> np.ndarray:
    """Q[t-1, k-2] = q-hat(z[:t], z[t:k]) for 1 <= t < k <= len(z); -inf where k <= t.

    q-hat(X, Y) = 2/(m+n) sum|X-Y| - 2m/((m+n)(n-1)) sum_{i<k}|Xi-Xk| - 2n/((m+n)(m-1)) sum_{j<k}|Yj-Yk|
    with n = |X|, m = |Y|; every block sum comes from one 2-D prefix sum of the distance matrix.
    """
    n_all = len(z)
    dist = np.abs(z[:, None] - z[None, :])
    prefix = np.zeros((n_all + 1, n_all + 1))
    prefix[1:, 1:] = dist.cumsum(0).cumsum(1)
    t = np.arange(1, n_all)[:, None]  # split: X = z[:t]
    k = np.arange(2, n_all + 1)[None, :]  # end: Y = z[t:k]
    valid = k > t
    kk = np.where(valid, k, t + 1)
    between = prefix[t, kk] - prefix[0, kk] - prefix[t, t] + prefix[0, t]
    within_x = prefix[t, t] / 2.0
    within_y = (prefix[kk, kk] - prefix[t, kk] - prefix[kk, t] + prefix[t, t]) / 2.0
    n = t.astype(float)
    m = (kk - t).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        wx = np.where(n > 1, 2.0 * m / ((m + n) * (n - 1)) * within_x, 0.0)
        wy = np.where(m > 1, 2.0 * n / ((m + n) * (m - 1)) * within_y, 0.0)
    q = 2.0 / (m + n) * between - wx - wy
    return np.where(valid, q, -np.inf)


def _best_split(z: np.ndarray, start: int, stop: int) -> tuple[int, float]:
    """(index, q-hat) of the best split of z[start:stop]."""
    q = qhat_matrix(z[start:stop])
    i, _ = np.unravel_index(int(np.argmax(q)), q.shape)
    return start + int(i) + 1, float(q.max())


def _intervals(cuts: Sequence[int], n: int) -> list[tuple[int, int]]:
    bounds = [0, *sorted(cuts), n]
    return [(a, b) for a, b in zip(bounds, bounds[1:], strict=False) if a != b]


def _stats(z: np.ndarray, index: int, qhat: float, lo: int, hi: int) -> ChangePoint:
    p, m1, m2, s1, s2 = t_test(z[lo:index], z[index:hi])
    return ChangePoint(index, qhat, p, m1, m2, s1, s2)


def _split_at(z: np.ndarray, index: int, qhat: float, cuts: Sequence[int]) -> ChangePoint:
    """Stats of a candidate inside the interval that contains it (split step)."""
    for lo, hi in _intervals(cuts, len(z)):
        if lo < index < hi:
            return _stats(z, index, qhat, lo, hi)
    raise ValueError(f"index {index} is not inside any interval")  # pragma: no cover - internal


def _between_neighbours(z: np.ndarray, cps: list[ChangePoint], i: int) -> ChangePoint:
    """Stats of existing change point `cps[i]` between its neighbours (merge step)."""
    lo = cps[i - 1].index if i > 0 else 0
    hi = cps[i + 1].index if i + 1 < len(cps) else len(z)
    return _stats(z, cps[i].index, cps[i].qhat, lo, hi)


def _divisive(z: np.ndarray, max_pvalue: float) -> list[ChangePoint]:
    """Matteson & James's recursion on one window, with the t-test as the stopping rule."""
    found: list[ChangePoint] = []
    while True:
        cuts = [cp.index for cp in found]
        candidates = [_best_split(z, lo, hi) for lo, hi in _intervals(cuts, len(z)) if hi - lo > 1]
        if not candidates:
            return found
        index, qhat = max(candidates, key=lambda c: c[1])
        cp = _split_at(z, index, qhat, cuts)
        if not cp.pvalue <= max_pvalue:
            return found
        found = sorted([*found, cp], key=lambda c: c.index)


@dataclass(frozen=True)
class EDivisive:
    """Hunter's windowed E-Divisive: split in overlapping windows, then merge weak points.

    `window`: points per window (Otava's default 50); `max_pvalue`: final significance level;
    `min_magnitude`: a relative change below this is dropped even when significant (0.02 = 2 %).
    After dropping a point the merge step recomputes both neighbours; Otava 0.8.0 recomputes the
    right neighbour and the one after it, leaving the left one stale (a bug its maintainers noted in
    apache/otava#96). `otava_compat=True` reproduces that exactly, for the reference test.
    """

    window: int = 50
    max_pvalue: float = 0.001
    min_magnitude: float = 0.0
    otava_compat: bool = False

    def change_points(self, series: Sequence[float]) -> list[ChangePoint]:
        z = np.asarray(series, dtype=np.float64)
        if z.ndim != 1 or len(z) < 2 or not np.all(np.isfinite(z)):
            return []
        weak = self._split(z, self._first_pass_pvalue())
        return self._merge(z, weak)

    def _first_pass_pvalue(self) -> float:
        p = self.max_pvalue
        return p * 10 if p < 0.05 else (p * 2 if p < 0.5 else p)

    def _split(self, z: np.ndarray, pvalue: float) -> list[ChangePoint]:
        if self.window < 2:
            raise ValueError("window must be at least 2")
        step, start, n = self.window // 2, 0, len(z)
        indexes: dict[int, float] = {}
        while start < n:
            end = min(start + self.window, n)
            found = _divisive(z[start:end], pvalue)
            for cp in found:
                indexes.setdefault(cp.index + start, cp.qhat)
            last = found[-1].index + start if found else 0
            start = max(last, start + step)
        order = sorted(indexes)
        cps = [ChangePoint(i, indexes[i], 1.0, 0, 0, 0, 0) for i in order]
        return [_between_neighbours(z, cps, i) for i in range(len(cps))]

    def _merge(self, z: np.ndarray, cps: list[ChangePoint]) -> list[ChangePoint]:
        cps = list(cps)
        while cps:
            weakest = max(cps, key=lambda c: c.pvalue)
            if weakest.pvalue < self.max_pvalue:
                weakest = min(cps, key=lambda c: c.magnitude)
                if weakest.magnitude > self.min_magnitude:
                    return cps
            i = cps.index(weakest)
            del cps[i]
            for j in ((i, i + 1) if self.otava_compat else (i - 1, i)):  # neighbours' intervals grew
                if 0 <= j < len(cps):
                    cps[j] = _between_neighbours(z, cps, j)
        return cps
