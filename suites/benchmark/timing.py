"""Device-aware timers: CUDA events on GPU, ``perf_counter`` after a sync elsewhere."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import torch

__all__ = ["synchronize", "timed", "EventTimer", "time_repeats"]

T = TypeVar("T")


def synchronize(device: torch.device | str) -> None:
    """Wait for all queued work on ``device`` (no-op on CPU)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def timed(fn: Callable[[], T], device: torch.device | str) -> tuple[T, float]:
    """Run ``fn`` between two device syncs; return (result, wall seconds).

    Includes host overhead (Python, compilation, launches), as the seed's one-shot
    timings (``first_eager_forward_pass_time_secs`` ...) do.
    """
    synchronize(device)
    start = time.perf_counter()
    out = fn()
    synchronize(device)
    return out, time.perf_counter() - start


class EventTimer:
    """Times a region of device work with CUDA events (perf_counter + sync on CPU).

    Recording events does not block the host, so a loop of launches stays asynchronous;
    ``elapsed_s`` synchronises once, on the end event.
    """

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self._cuda = self.device.type == "cuda"
        self._start: Any = None
        self._end: Any = None
        self._t0 = 0.0
        self._t1 = 0.0

    def __enter__(self) -> EventTimer:
        if self._cuda:
            self._start = torch.cuda.Event(enable_timing=True)
            self._end = torch.cuda.Event(enable_timing=True)
            self._start.record()
        else:
            self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._cuda:
            self._end.record()
        else:
            self._t1 = time.perf_counter()

    @property
    def elapsed_s(self) -> float:
        if self._cuda:
            self._end.synchronize()
            return self._start.elapsed_time(self._end) / 1000.0
        return self._t1 - self._t0


def time_repeats(
    fn: Callable[[], Any], device: torch.device | str, repeats: int, warmup: int = 1
) -> list[float]:
    """Seconds per call of ``fn`` for ``repeats`` timed calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    out: list[float] = []
    for _ in range(repeats):
        with EventTimer(device) as t:
            fn()
        out.append(t.elapsed_s)
    return out
