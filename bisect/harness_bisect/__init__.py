"""Culprit finding over git history: batched, parallel, flake-aware bisection of failing tests.

Import name `harness_bisect` (never `bisect`, which is the standard library). This package stays cheap
to import: the probe plugin loaded into every pytest probe lives here too, so the public API is
resolved lazily.

    from harness_bisect import BisectRequest, run_bisect
    result = run_bisect(BisectRequest(repo=path, good="v1", bad="HEAD", tests=["tests/t.py::test_x"]))
"""

from __future__ import annotations

from typing import Any

__all__ = ["BisectError", "BisectRequest", "BisectResult", "bisect_run", "run_bisect"]


def __getattr__(name: str) -> Any:
    if name in ("BisectRequest", "run_bisect"):
        from harness_bisect import api

        return getattr(api, name)
    if name == "bisect_run":
        from harness_bisect.command import bisect_run

        return bisect_run
    if name == "BisectResult":
        from harness_bisect.report import BisectResult

        return BisectResult
    if name == "BisectError":
        from harness_bisect.gitops import BisectError

        return BisectError
    raise AttributeError(name)
