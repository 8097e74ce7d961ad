"""Shared wiring of the model suites: which models run, on which device, and the skip gates.

* ``model_name`` is parametrised from env ``HARNESS_MODELS`` (comma list; unset or ``all``: every
  family in ``models/``). Suites that parametrise it themselves (``benchmark``) are left alone.
* ``HARNESS_MODEL_CONFIG`` picks the config each family is built at (default ``tiny``).
* Gates, each skip with its reason: ``slow`` needs ``RUN_SLOW=1``; ``flash_attn_test`` needs CUDA;
  ``multi_gpu`` needs two GPUs.
Tests run on CUDA when torch sees a GPU, else on CPU.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

SUITES = Path(__file__).resolve().parent
if str(SUITES.parent) not in sys.path:
    sys.path.insert(0, str(SUITES.parent))

import torch  # noqa: E402

from models import list_families, load_family  # noqa: E402

SELF_PARAMETRISED = {"benchmark"}
NO_FLASH_GPU = "FlashAttention-2 needs a CUDA GPU; torch.cuda.is_available() is False here"  # suites with their own model_name parametrisation


def truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def selected_models() -> list[str]:
    """``HARNESS_MODELS`` (comma list) or every registered family."""
    raw = os.environ.get("HARNESS_MODELS", "").strip()
    if not raw or raw == "all":
        return list_families()
    return [m.strip() for m in raw.split(",") if m.strip()]


def model_config() -> str:
    return os.environ.get("HARNESS_MODEL_CONFIG", "").strip() or "tiny"


def pytest_configure(config: pytest.Config) -> None:
    for line in (
        "slow: slow test, runs with RUN_SLOW=1",
        "flash_attn_test: needs CUDA FlashAttention-2",
        "multi_gpu: needs two or more GPUs; run in a separate non-parallel pass",
    ):
        config.addinivalue_line("markers", line)
    if not torch.cuda.is_available():
        # Tiny CPU models gain nothing from intra-op threads, and on a shared or xdist-loaded
        # machine thread barriers make each op tens of times slower.
        torch.set_num_threads(int(os.environ.get("HARNESS_TORCH_THREADS", "1")))


def _suite_of(path: Path) -> str | None:
    try:
        rel = Path(path).resolve().relative_to(SUITES)
    except ValueError:
        return None
    return rel.parts[0] if len(rel.parts) > 1 else None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "model_name" not in metafunc.fixturenames:
        return
    if _suite_of(metafunc.definition.path) in SELF_PARAMETRISED:
        return
    for mark in metafunc.definition.iter_markers("parametrize"):
        names = mark.args[0] if mark.args else ""
        if "model_name" in (names.split(",") if isinstance(names, str) else names):
            return
    metafunc.parametrize("model_name", selected_models())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    run_slow = truthy("RUN_SLOW")
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    capability = torch.cuda.get_device_capability() if gpus else None
    for item in items:
        if _suite_of(item.path) is None:
            continue
        if item.get_closest_marker("slow") and not run_slow:
            item.add_marker(pytest.mark.skip(reason="slow test: set RUN_SLOW=1 to run it"))
        if item.get_closest_marker("flash_attn_test"):
            if gpus == 0:
                item.add_marker(pytest.mark.skip(reason=NO_FLASH_GPU))
            elif capability < (8, 0):
                item.add_marker(
                    pytest.mark.skip(
                        reason=f"FlashAttention-2 needs compute capability >= 8.0; "
                        f"this GPU has {capability[0]}.{capability[1]}"
                    )
                )
        if item.get_closest_marker("multi_gpu") and gpus < 2:
            item.add_marker(pytest.mark.skip(reason=f"needs 2 or more CUDA GPUs; this machine has {gpus}"))


@pytest.fixture(scope="session")
def device() -> torch.device:
    """cuda when torch sees a GPU (the harness pins one per worker), else cpu."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.fixture(scope="session")
def native_dtype(device: torch.device) -> torch.dtype:
    """The dtype models are usually run in on this device: bf16 on CUDA, fp32 on CPU."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


@pytest.fixture
def family(model_name: str) -> ModuleType:
    """The ``models.<model_name>`` module."""
    return load_family(model_name)


@pytest.fixture
def make_model(family: ModuleType, device: torch.device) -> Callable[..., torch.nn.Module]:
    """``make_model(dtype=fp32, seed=0, device=None)`` builds the family at ``HARNESS_MODEL_CONFIG``."""

    def make(
        dtype: torch.dtype = torch.float32,
        seed: int = 0,
        device_: torch.device | None = None,
        config: str | None = None,
    ) -> torch.nn.Module:
        return family.build(config or model_config(), device=device_ or device, dtype=dtype, seed=seed)

    return make
