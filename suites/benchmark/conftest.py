"""Benchmark suite wiring: the ``benchmark`` marker, parametrisation, session-wide ceilings.

Imports only ``models`` and torch (never the platform). Results leave through pytest's
``record_property("harness_benchmark", {...})``; ``HARNESS_BENCH_JSON=PATH`` also appends
each record as a JSON line to PATH.
"""

from __future__ import annotations

import pytest
import torch

from .roofline import Ceilings, measure_ceilings
from .zoo import Settings, load_settings, model_names

_SUMMARY = pytest.StashKey[list[str]]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "benchmark: performance benchmark (the harness samples CPU/GPU load around it)"
    )
    config.stash[_SUMMARY] = []


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    names = metafunc.fixturenames
    if "model_name" in names:
        metafunc.parametrize("model_name", model_names())
    if "batch_size" in names or "prompt_length" in names:
        settings = load_settings()
        if "batch_size" in names:
            metafunc.parametrize("batch_size", settings.batch_sizes, ids=lambda b: f"b{b}")
        if "prompt_length" in names:
            metafunc.parametrize("prompt_length", settings.prompt_lengths, ids=lambda p: f"p{p}")


@pytest.fixture(scope="session")
def bench_settings() -> Settings:
    """Settings of this session (from the environment)."""
    return load_settings()


@pytest.fixture(scope="session")
def ceilings(bench_settings: Settings) -> Ceilings:
    """Copy bandwidth and matmul rate of this device, measured once per session (worker)."""
    dtype = bench_settings.torch_dtype if bench_settings.device == "cuda" else torch.float32
    return measure_ceilings(bench_settings.device, dtype=dtype)


@pytest.fixture
def bench_summary(request: pytest.FixtureRequest) -> list[str]:
    """Lines printed in the terminal summary (one per benchmarked case)."""
    return request.config.stash[_SUMMARY]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    lines = config.stash.get(_SUMMARY, [])
    if lines:
        terminalreporter.section("benchmark")
        for line in lines:
            terminalreporter.write_line(line)
