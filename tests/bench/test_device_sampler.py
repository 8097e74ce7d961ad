"""DeviceSampler: real psutil samples, scheduling, and NVML present / absent / failing."""

from __future__ import annotations

import sys
import threading
import time
from datetime import datetime, timezone

import pytest

from harness.run.device_sampler import DeviceSampler
from harness.run.gpus import visible_nvml_indices
from tests.fake_nvml import FakeNvml as _FakeNvml


def test_real_samples_have_seed_fields() -> None:
    with DeviceSampler(0.02, use_nvml=False) as s:
        end = time.perf_counter() + 0.3  # busy for 15 intervals, whatever the machine's speed
        while time.perf_counter() < end:
            sum(i * i for i in range(2_000))
        time.sleep(0.05)
    assert s.samples, "no samples taken"
    for row in s.samples:
        assert {"time", "cpu_util", "mem_megabytes"} <= row.keys()
        assert "gpu_util" not in row
        stamp = datetime.fromisoformat(row["time"])
        assert stamp.tzinfo is not None and stamp.utcoffset() == timezone.utc.utcoffset(None)
        assert row["cpu_util"] >= 0.0
        assert 1.0 < row["mem_megabytes"] < 1e6  # this process's RSS in MB
    assert any(r["cpu_util"] > 0 for r in s.samples[1:])  # the busy loop shows up


def test_start_stop_lifecycle() -> None:
    s = DeviceSampler(0.01, use_nvml=False)
    assert not s.running
    assert s.start() is s and s.running
    s.start()  # idempotent
    time.sleep(0.05)
    first = s.stop()
    assert not s.running and first
    assert s.stop() is first  # second stop is harmless
    assert not any(t.name == "harness-device-sampler" for t in threading.enumerate())
    s.start()
    time.sleep(0.02)
    second = s.stop()
    assert second is not first and second  # a restart begins a fresh buffer


def test_interval_honoured() -> None:
    interval, span = 0.05, 0.6
    with DeviceSampler(interval, use_nvml=False) as s:
        time.sleep(span)
    n = len(s.samples)
    assert span / interval / 2 <= n <= span / interval + 2, n  # a loaded CI machine may delay a tick
    times = [datetime.fromisoformat(r["time"]).timestamp() for r in s.samples]
    gaps = sorted(b - a for a, b in zip(times, times[1:], strict=False))
    assert abs(gaps[len(gaps) // 2] - interval) < 0.03, gaps


def test_rejects_bad_interval() -> None:
    with pytest.raises(ValueError):
        DeviceSampler(0)


def test_no_nvml_library(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails
    with DeviceSampler(0.01) as s:
        time.sleep(0.03)
    assert s.samples and not any("gpu_util" in r for r in s.samples)


def test_nvml_init_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", _FakeNvml(fail_init=True))
    with DeviceSampler(0.01) as s:
        assert not s.gpu_available
        time.sleep(0.03)
    assert s.samples and not any("gpu_index" in r for r in s.samples)


def test_fake_gpus_every_visible_device(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _FakeNvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with DeviceSampler(0.01) as s:
        assert s.gpu_available
        time.sleep(0.03)
    rows = s.samples
    assert {r["gpu_index"] for r in rows} == {0, 1}
    for r in rows:
        assert r["gpu_util"] == 10.0 * r["gpu_index"]
        assert r["gpu_mem_megabytes"] == 1024.0 * (r["gpu_index"] + 1)
    assert fake.shutdowns == 1


def test_fake_gpus_respect_cuda_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", _FakeNvml())
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    with DeviceSampler(0.01) as s:
        time.sleep(0.03)
    assert {r["gpu_index"] for r in s.samples} == {0}  # CUDA ordinal
    assert {r["gpu_util"] for r in s.samples} == {10.0}  # ... of NVML device 1


@pytest.mark.parametrize(
    ("visible", "expected"),
    [
        (None, [0, 1, 2]),
        ("", []),
        ("2,0", [2, 0]),
        ("1,7,0", [1]),
        ("GPU-0002", [2]),
        ("0,0", [0]),
        ("-1", []),
    ],
)
def test_visible_nvml_indices(visible: str | None, expected: list[int]) -> None:
    uuids = ["GPU-0000-x", "GPU-0001-x", "GPU-0002-x"]
    assert visible_nvml_indices(3, visible, uuids) == expected


def test_max_samples_bounds_memory() -> None:
    with DeviceSampler(0.005, use_nvml=False, max_samples=3) as s:
        time.sleep(0.08)
    assert len(s.samples) == 3 and s.dropped > 0
