"""Background sampling of CPU, memory and GPU load while a test or benchmark runs.

`DeviceSampler` polls psutil (process CPU utilisation and RSS) and, when NVML is
available, every visible GPU's utilisation and memory in use. Samples are buffered
in memory and handed back by `stop()`; nothing is written while sampling, so the
thread costs a few hundred microseconds of CPU per tick and never touches the GPU
stream (NVML queries go to the driver, not the CUDA context).

One tick yields one sample per visible GPU (keys ``time``, ``cpu_util``,
``mem_megabytes``, ``gpu_util``, ``gpu_mem_megabytes``, ``gpu_index``), or one
sample without the GPU keys when NVML is unavailable. ``gpu_index`` is the CUDA
ordinal (position in ``CUDA_VISIBLE_DEVICES``), which is what the test used.
"""

from __future__ import annotations

import os
import threading
import time
from datetime import datetime, timezone
from types import TracebackType
from typing import Any

import psutil

from harness.run.gpus import nvml, visible_handles

__all__ = ["DeviceSampler"]

_MB = 1024.0 * 1024.0


class _Nvml:
    """Thin NVML handle set; `available` is False when the library or driver is missing."""

    def __init__(self) -> None:
        self.available = False
        self.handles: list[Any] = []
        self._mod: Any = None
        pynvml = nvml()
        if pynvml is None:  # no library, no driver, no GPU: sample CPU only
            return
        self._mod = pynvml
        try:
            self.handles = visible_handles(pynvml)
            self.available = True
        except Exception:
            self.close()

    def read(self) -> list[tuple[float | None, float | None]]:
        """(utilisation %, memory used MB) per visible GPU; None for a field that failed."""
        out: list[tuple[float | None, float | None]] = []
        for h in self.handles:
            util: float | None
            mem: float | None
            try:
                util = float(self._mod.nvmlDeviceGetUtilizationRates(h).gpu)
            except Exception:
                util = None
            try:
                mem = self._mod.nvmlDeviceGetMemoryInfo(h).used / _MB
            except Exception:
                mem = None
            out.append((util, mem))
        return out

    def close(self) -> None:
        if self._mod is not None:
            try:
                self._mod.nvmlShutdown()
            except Exception:
                pass
        self._mod = None
        self.available = False
        self.handles = []


class DeviceSampler:
    """Samples CPU/RSS (psutil) and GPU util/memory (NVML) on a daemon thread.

    Use as ``with DeviceSampler(0.1) as s: ...`` then ``s.samples``, or call
    ``start()`` / ``stop()``. The first sample is taken at ``start()``; later ones on a
    fixed schedule (``start + k * interval_s``, no drift). ``max_samples`` bounds memory.
    """

    def __init__(
        self, interval_s: float = 0.1, *, use_nvml: bool = True, max_samples: int = 1_000_000
    ) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be > 0")
        self.interval_s = float(interval_s)
        self.use_nvml = use_nvml
        self.max_samples = max_samples
        self.samples: list[dict[str, Any]] = []
        self.dropped = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._proc = psutil.Process(os.getpid())
        self._nvml: _Nvml | None = None

    @property
    def gpu_available(self) -> bool:
        """True when NVML answered and at least one GPU is visible (after `start()`)."""
        return bool(self._nvml and self._nvml.available and self._nvml.handles)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> DeviceSampler:
        """Start sampling (no-op when already running); returns self."""
        if self.running:
            return self
        self.samples = []
        self.dropped = 0
        self._stop.clear()
        self._nvml = _Nvml() if self.use_nvml else None
        self._proc.cpu_percent(None)  # prime: the first call always returns 0.0
        self._thread = threading.Thread(target=self._loop, name="harness-device-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> list[dict[str, Any]]:
        """Stop sampling and return the buffered samples (safe to call twice)."""
        thread = self._thread
        if thread is not None:
            self._stop.set()
            thread.join()
            self._thread = None
        if self._nvml is not None:
            self._nvml.close()
            self._nvml = None
        return self.samples

    def _loop(self) -> None:
        t0 = time.monotonic()
        k = 0
        while True:
            self._sample()
            k += 1
            delay = t0 + k * self.interval_s - time.monotonic()
            if delay < 0:  # fell behind (e.g. suspended): skip missed ticks, keep the grid
                k += int(-delay // self.interval_s) + 1
                delay = t0 + k * self.interval_s - time.monotonic()
            if self._stop.wait(max(delay, 0.0)):
                return

    def _sample(self) -> None:
        stamp = datetime.now(timezone.utc).isoformat()
        try:
            with self._proc.oneshot():
                cpu = self._proc.cpu_percent(None)
                rss = self._proc.memory_info().rss / _MB
        except psutil.Error:
            cpu, rss = None, None
        base: dict[str, Any] = {"time": stamp, "cpu_util": cpu, "mem_megabytes": rss}
        rows: list[dict[str, Any]]
        if self._nvml is not None and self._nvml.available and self._nvml.handles:
            rows = [
                {**base, "gpu_util": util, "gpu_mem_megabytes": mem, "gpu_index": i}
                for i, (util, mem) in enumerate(self._nvml.read())
            ]
        else:
            rows = [base]
        room = self.max_samples - len(self.samples)
        if room < len(rows):
            self.dropped += len(rows) - max(room, 0)
            rows = rows[: max(room, 0)]
        self.samples.extend(rows)

    def __enter__(self) -> DeviceSampler:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
