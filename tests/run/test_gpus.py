"""The one GPU inventory (`harness.run.gpus`): the CUDA_VISIBLE_DEVICES rule as a pure function, a CPU
machine (no NVML) that cleanly has no GPUs, and the real NVML where a driver is present."""

from __future__ import annotations

import sys

import pytest

from harness.run import metadata
from harness.run.gpus import GpuInfo, gpu_info, nvml, visible_handles, visible_nvml_indices
from tests.fake_nvml import FakeNvml

UUIDS = ["GPU-0a00-x", "GPU-0b11-x", "GPU-0b22-x"]


@pytest.mark.parametrize(("visible", "expected"), [
    (None, [0, 1, 2]),  # unset: every device
    ("", []),  # set but empty: none
    (" ", []),
    ("0", [0]),
    ("2,0", [2, 0]),  # CUDA ordinal order is the list's order
    (" 1 , 2 ", [1, 2]),
    ("1,7,0", [1]),  # out of range ends the list
    ("0,-1,1", [0]),  # negative ends it ("-1" alone: no GPU)
    ("-1", []),
    ("0,,1", [0]),  # an empty entry ends it
    ("0,0", [0]),  # a repeat ends it
    ("GPU-0a00-x", [0]),  # full UUID
    ("GPU-0b22,GPU-0a", [2, 0]),  # unique prefixes
    ("GPU-0b", []),  # ambiguous prefix
    ("GPU-ffff", []),  # no such device
    ("GPU-0b11,GPU-0b11-x", [1]),  # the same device twice
    ("MIG-0a00-x", []),  # MIG instances are not enumerated
    ("1,GPU-0a00", [1, 0]),
])
def test_visibility_rule(visible: str | None, expected: list[int]) -> None:
    assert visible_nvml_indices(3, visible, UUIDS) == expected


def test_uuid_form_needs_the_uuids() -> None:
    assert visible_nvml_indices(3, "GPU-0a00", None) == []
    assert visible_nvml_indices(0, None) == []


def test_no_nvml_library_means_no_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails, as on a machine without the package
    assert nvml() is None
    assert gpu_info() == GpuInfo(0, None, None, ())
    assert metadata.gpu_info is gpu_info  # the run header reads the same inventory


def test_this_machine_answers_cleanly() -> None:
    """Whatever this machine has (none on a CPU box: the driver is missing), the answer is clean and an
    empty CUDA_VISIBLE_DEVICES always hides every GPU."""
    info = gpu_info()
    assert info.count == len(info.uuids) >= 0
    assert (info.name is None) == (info.count == 0)
    assert gpu_info({"CUDA_VISIBLE_DEVICES": ""}).count == 0


@pytest.mark.parametrize(("visible", "count", "name", "uuids"), [
    (None, 3, "Card 0", UUIDS),
    ("2,0", 2, "Card 2", [UUIDS[2], UUIDS[0]]),
    ("GPU-0b11", 1, "Card 1", [UUIDS[1]]),
    ("", 0, None, []),
])
def test_inventory_through_nvml(monkeypatch: pytest.MonkeyPatch, visible: str | None, count: int,
                                name: str | None, uuids: list[str]) -> None:
    driver = FakeNvml(uuids=UUIDS, uuid_bytes=True)  # stands in for the driver this machine may lack
    monkeypatch.setitem(sys.modules, "pynvml", driver)
    env = {} if visible is None else {"CUDA_VISIBLE_DEVICES": visible}
    assert gpu_info(env) == GpuInfo(count, name, "12.4", tuple(uuids))
    assert driver.shutdowns == 1
    assert visible_handles(driver, env) == [UUIDS.index(u) for u in uuids]


def test_real_nvml_pins_by_index_and_by_uuid() -> None:
    """On a machine with a driver: each visible GPU's UUID, used as CUDA_VISIBLE_DEVICES, pins that GPU."""
    info = gpu_info({})
    if info.count == 0:
        pytest.skip("no NVIDIA driver on this machine")
    for index, uuid in enumerate(info.uuids):
        assert gpu_info({"CUDA_VISIBLE_DEVICES": uuid}).uuids == (uuid,)
        assert gpu_info({"CUDA_VISIBLE_DEVICES": uuid[:12]}).uuids == (uuid,)
        assert gpu_info({"CUDA_VISIBLE_DEVICES": str(index)}).uuids == (uuid,)
    assert gpu_info({"CUDA_VISIBLE_DEVICES": f"0,{info.count}"}).count == 1
