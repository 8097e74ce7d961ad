"""The GPUs this process may use: NVML (nvidia-ml-py) only, never CUDA, so nothing here initialises a
CUDA context or needs torch.

One `CUDA_VISIBLE_DEVICES` rule (`visible_nvml_indices`), the way CUDA reads the variable: unset, every
device; set but empty, none; else a comma-separated list of device indices or GPU UUIDs (`GPU-…`, any
unique prefix), in CUDA ordinal order. The list ends at the first entry that is empty, negative, out of
range, not a unique UUID prefix (MIG ids included: MIG instances are not enumerated) or a repeat.
Without the NVML library or driver (a CPU machine) there are no GPUs, and no error.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["GpuInfo", "gpu_info", "nvml", "visible_handles", "visible_nvml_indices"]


def visible_nvml_indices(device_count: int, visible: str | None, uuids: list[str] | None = None) -> list[int]:
    """NVML indices of the devices `CUDA_VISIBLE_DEVICES=visible` leaves, in CUDA ordinal order (see the
    module docstring); `uuids` are the devices' NVML UUIDs by index, needed for the UUID form."""
    if visible is None:
        return list(range(device_count))
    out: list[int] = []
    for raw in visible.split(","):
        entry = raw.strip()
        if not entry:
            break
        if entry.lstrip("-").isdigit():
            idx = int(entry)
            if idx < 0 or idx >= device_count:
                break
        else:
            matches = [i for i, u in enumerate(uuids or []) if u.startswith(entry)]
            if len(matches) != 1:
                break
            idx = matches[0]
        if idx in out:
            break
        out.append(idx)
    return out


def nvml() -> Any | None:
    """The `pynvml` module, initialised (the caller calls `nvmlShutdown`), or None without library or driver."""
    try:
        import pynvml  # nvidia-ml-py

        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no library, no driver, no GPU: a CPU machine
        return None
    return pynvml


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _visible(nv: Any, environ: Mapping[str, str] | None) -> tuple[list[Any], list[str]]:
    env = os.environ if environ is None else environ
    handles = [nv.nvmlDeviceGetHandleByIndex(i) for i in range(nv.nvmlDeviceGetCount())]
    uuids = [_text(nv.nvmlDeviceGetUUID(h)) for h in handles]
    order = visible_nvml_indices(len(handles), env.get("CUDA_VISIBLE_DEVICES"), uuids)
    return [handles[i] for i in order], [uuids[i] for i in order]


def visible_handles(nv: Any, environ: Mapping[str, str] | None = None) -> list[Any]:
    """NVML handles of the visible devices (CUDA ordinal order), from an initialised `nv` (see `nvml`)."""
    return _visible(nv, environ)[0]


@dataclass(frozen=True)
class GpuInfo:
    """The visible GPUs: how many, the first one's name, the driver's CUDA version, and their UUIDs
    (CUDA ordinal order; each is a valid `CUDA_VISIBLE_DEVICES` value that pins one of them)."""

    count: int
    name: str | None
    driver_cuda: str | None
    uuids: tuple[str, ...] = ()


def gpu_info(environ: Mapping[str, str] | None = None) -> GpuInfo:
    """The GPUs this process may use (`environ`: default the process environment); zero without NVML."""
    nv = nvml()
    if nv is None:
        return GpuInfo(0, None, None)
    try:
        handles, uuids = _visible(nv, environ)
        name = _text(nv.nvmlDeviceGetName(handles[0])) if handles else None
        version = nv.nvmlSystemGetCudaDriverVersion()
        return GpuInfo(len(handles), name, f"{version // 1000}.{(version % 1000) // 10}", tuple(uuids))
    finally:
        nv.nvmlShutdown()
