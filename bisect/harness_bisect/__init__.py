"""Culprit finding over git history: batched, parallel, flake-aware bisection of failing tests.

Import name `harness_bisect` (never `bisect`, which is the standard library). An engine that imports
nothing of the `harness` platform: it takes a repository, a range, tests, how to probe them (pytest
command, environment, install command) and a results sink, and returns a `BisectResult`; the platform's
glue (target description, store, CLI) lives in `harness/triage/bisect_glue.py`. This package stays
cheap to import: the probe plugin loaded into every pytest probe lives here too, so the public API is
resolved lazily.

    from harness_bisect import BisectRequest, run_bisect
    result = run_bisect(BisectRequest(repo=path, good="v1", bad="HEAD", tests=["tests/t.py::test_x"]))
"""

from __future__ import annotations

from typing import Any

__all__ = ["BisectError", "BisectRequest", "BisectResult", "ResultSink", "probe_at", "run_bisect"]


def __getattr__(name: str) -> Any:
    if name in ("BisectRequest", "run_bisect", "probe_at"):
        from harness_bisect import api

        return getattr(api, name)
    if name in ("BisectResult", "ResultSink"):
        from harness_bisect import report

        return getattr(report, name)
    if name == "BisectError":
        from harness_bisect.gitops import BisectError

        return BisectError
    raise AttributeError(name)
