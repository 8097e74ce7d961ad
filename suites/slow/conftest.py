"""The ``expect`` fixture: compare against (or, in update mode, record) device-keyed expectations."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from suites import expectations as ex


def _compare(expected: Any, actual: Any, atol: float, rtol: float) -> str | None:
    """None if equal within tolerance, else a short reason."""
    if atol == 0 and rtol == 0:
        return None if expected == actual else f"expected {expected}\n     got {actual}"
    e, a = torch.tensor(expected, dtype=torch.float64), torch.tensor(actual, dtype=torch.float64)
    if e.shape != a.shape:
        return f"shape {tuple(e.shape)} expected, got {tuple(a.shape)}"
    if torch.allclose(a, e, atol=atol, rtol=rtol):
        return None
    worst = (a - e).abs().max().item()
    return f"max |diff| {worst:.3g} > atol {atol} + rtol {rtol}\nexpected {expected}\n     got {actual}"


@pytest.fixture
def expect(model_name: str, device: torch.device) -> Callable[..., None]:
    """``expect(check, actual, atol=0, rtol=0)``: assert ``actual`` matches the best-matching
    expectation of this device, or record it when ``HARNESS_UPDATE_EXPECTATIONS=1``."""
    key = ex.device_key(device)

    def check(name: str, actual: Any, atol: float = 0.0, rtol: float = 0.0) -> None:
        if ex.update_mode():
            print(ex.record(model_name, name, key, actual))
            return
        found = ex.expectations(model_name, name).find(key)
        if found is None:
            pytest.skip(
                f"no expectation for {model_name}/{name} on {key}: record one with "
                f"HARNESS_UPDATE_EXPECTATIONS=1 RUN_SLOW=1 (harness expectations update)"
            )
        used, expected = found
        problem = _compare(expected, actual, atol, rtol)
        assert problem is None, f"{model_name}/{name} vs expectation [{used}] on {key}: {problem}"

    return check
