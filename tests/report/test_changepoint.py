"""E-Divisive change-point detection: checked against Apache Otava's results and against the formulas."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from harness.report.changepoint import EDivisive, qhat_matrix, student_t_two_sided_p, t_test

REFERENCE = json.loads((Path(__file__).parent / "data" / "otava_reference.json").read_text())


@pytest.mark.parametrize("case", REFERENCE["cases"], ids=lambda c: f"{c['name']}-w{c['window']}")
def test_matches_apache_otava(case: dict) -> None:
    """Same change points, q-hat and p-values as Otava 0.8.0 (data/make_otava_reference.py)."""
    got = EDivisive(window=case["window"], max_pvalue=case["max_pvalue"], otava_compat=True).change_points(
        case["series"])
    expected = case["change_points"]
    assert [cp.index for cp in got] == [e["index"] for e in expected]
    for cp, e in zip(got, expected, strict=True):
        assert cp.qhat == pytest.approx(e["qhat"], rel=1e-9)
        assert cp.pvalue == pytest.approx(e["pvalue"], rel=1e-6, abs=1e-300)
        assert cp.mean_before == pytest.approx(e["mean_before"], rel=1e-12)
        assert cp.mean_after == pytest.approx(e["mean_after"], rel=1e-12)


def test_reference_has_change_points() -> None:
    """The reference is not vacuous: most cases hold change points."""
    assert sum(bool(c["change_points"]) for c in REFERENCE["cases"]) >= 10


def test_merge_recomputes_left_neighbour() -> None:
    """Otava leaves the left neighbour's stats stale after a merge; the default mode does not, which
    removes the spurious point Otava keeps at index 71 of the 5 % step series."""
    case = next(c for c in REFERENCE["cases"] if c["name"] == "step_up_5pct" and c["window"] == 50)
    assert [cp.index for cp in EDivisive(window=50).change_points(case["series"])] == [60]
    compat = EDivisive(window=50, otava_compat=True).change_points(case["series"])
    assert [cp.index for cp in compat] == [60, 71]


def naive_qhat(x: np.ndarray, y: np.ndarray) -> float:
    n, m = len(x), len(y)
    between = sum(abs(a - b) for a in x for b in y)
    wx = sum(abs(a - b) for a, b in itertools.combinations(x, 2))
    wy = sum(abs(a - b) for a, b in itertools.combinations(y, 2))
    out = 2 / (m + n) * between
    if n > 1:
        out -= 2 * m / ((m + n) * (n - 1)) * wx
    if m > 1:
        out -= 2 * n / ((m + n) * (m - 1)) * wy
    return out


def test_qhat_matrix_matches_definition() -> None:
    z = np.random.default_rng(3).normal(size=17)
    q = qhat_matrix(z)
    for t in range(1, 17):
        for k in range(2, 18):
            if k <= t:
                assert q[t - 1, k - 2] == -np.inf
            else:
                assert q[t - 1, k - 2] == pytest.approx(naive_qhat(z[:t], z[t:k]), rel=1e-10, abs=1e-12)


@pytest.mark.parametrize(("t", "df", "p"), [
    (2.228138851986, 10, 0.05), (1.959963984540, 1e7, 0.05), (0.0, 5, 1.0), (12.706204736, 1, 0.05),
    (3.169272672617, 10, 0.01), (8.610302544, 4, 0.001),
])
def test_student_t_p_values(t: float, df: float, p: float) -> None:
    assert student_t_two_sided_p(t, df) == pytest.approx(p, rel=1e-6)
    assert student_t_two_sided_p(-t, df) == pytest.approx(p, rel=1e-6)


def test_t_test_degenerate_sides() -> None:
    assert t_test(np.array([1.0, 1.0]), np.array([1.0, 1.0]))[0] == 1.0
    assert t_test(np.array([1.0, 1.0]), np.array([2.0, 2.0]))[0] == 0.0
    assert t_test(np.array([1.0]), np.array([2.0]))[0] == 1.0


def test_finds_step_and_reports_magnitude() -> None:
    rng = np.random.default_rng(11)
    series = list(100 * (1 + 0.01 * rng.standard_normal(40))) + list(110 * (1 + 0.01 * rng.standard_normal(20)))
    (cp,) = EDivisive().change_points(series)
    assert cp.index == 40
    assert cp.forward_change == pytest.approx(0.10, abs=0.01)
    assert cp.magnitude == pytest.approx(0.10, abs=0.01)
    assert cp.pvalue < 1e-10


def test_min_magnitude_drops_small_significant_changes() -> None:
    rng = np.random.default_rng(5)
    series = list(100 + 0.01 * rng.standard_normal(50)) + list(100.5 + 0.01 * rng.standard_normal(50))
    assert [cp.index for cp in EDivisive().change_points(series)] == [50]
    assert EDivisive(min_magnitude=0.01).change_points(series) == []


@pytest.mark.parametrize("series", [[], [1.0], [5.0] * 30, [1.0, float("nan"), 2.0], [1.0, 2.0]])
def test_degenerate_series_have_no_change_points(series: list[float]) -> None:
    assert EDivisive().change_points(series) == []
