"""A stand-in for the NVML library (`pynvml` of nvidia-ml-py) on machines without an NVIDIA driver.

Put it in `sys.modules["pynvml"]`; device `h` has utilisation 10 * h %, (h + 1) GiB in use, the name
"Card h" and the UUID given. Tests of the real library run where a driver is present.
"""

from __future__ import annotations

import types

DEFAULT_UUIDS = ("GPU-0000-aaaa", "GPU-0001-aaaa")


class FakeNvml(types.ModuleType):
    """NVML with `len(uuids)` devices; `fail_init`: nvmlInit fails as without a driver."""

    def __init__(self, fail_init: bool = False, uuids: tuple[str, ...] | list[str] = DEFAULT_UUIDS,
                 uuid_bytes: bool = False) -> None:
        super().__init__("pynvml")
        self.fail_init = fail_init
        self.uuids = list(uuids)
        self.uuid_bytes = uuid_bytes  # older bindings return bytes
        self.shutdowns = 0

    def nvmlInit(self) -> None:  # noqa: N802 - NVML's names
        if self.fail_init:
            raise RuntimeError("NVML Shared Library Not Found")

    def nvmlShutdown(self) -> None:  # noqa: N802
        self.shutdowns += 1

    def nvmlDeviceGetCount(self) -> int:  # noqa: N802
        return len(self.uuids)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:  # noqa: N802
        return i

    def nvmlDeviceGetUUID(self, h: int) -> str | bytes:  # noqa: N802
        return self.uuids[h].encode() if self.uuid_bytes else self.uuids[h]

    def nvmlDeviceGetName(self, h: int) -> str:  # noqa: N802
        return f"Card {h}"

    def nvmlSystemGetCudaDriverVersion(self) -> int:  # noqa: N802
        return 12040

    def nvmlDeviceGetUtilizationRates(self, h: int) -> types.SimpleNamespace:  # noqa: N802
        return types.SimpleNamespace(gpu=10 * h, memory=0)

    def nvmlDeviceGetMemoryInfo(self, h: int) -> types.SimpleNamespace:  # noqa: N802
        return types.SimpleNamespace(used=(h + 1) << 30, total=80 << 30, free=0)
