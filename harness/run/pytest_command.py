"""Builds the pytest command line and environment for one suite pass of a run."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from harness.run.target import SuiteSpec, Target


@dataclass(frozen=True)
class PytestPass:
    """One pytest invocation: a suite, for some models, parallel or the multi-GPU pass."""

    suite: SuiteSpec
    models: list[str]
    multi_gpu: bool | None
    argv: list[str]
    env: dict[str, str]


def worker_specs(workers: int, gpu_count: int) -> list[str]:
    """xdist arguments: one worker per GPU, each pinned before CUDA initialises, or plain `-n`."""
    if gpu_count and workers > 1:
        specs = []
        for i in range(workers):
            gpu = i % gpu_count
            specs += ["--tx", f"popen//env:CUDA_VISIBLE_DEVICES={gpu}//env:HARNESS_DEVICE=cuda:{gpu}"]
        return ["--dist", "load", *specs]
    return ["-n", str(max(1, workers))]


def marker_expression(suite: SuiteSpec, multi_gpu: bool | None) -> str | None:
    """`-m` for a pass: the suite's markers, and `multi_gpu` (True), `not multi_gpu` (False) or
    either (None: no separate multi-GPU pass, so such tests run here and skip with their reason)."""
    parts = [f"({suite.markers})"] if suite.markers else []
    if multi_gpu is not None:
        parts.append("multi_gpu" if multi_gpu else "not multi_gpu")
    return " and ".join(parts) or None


def build_pass(target: Target, suite: SuiteSpec, models: list[str], *, run_uuid: str, bundle: Path,
               workers: int, gpu_count: int, multi_gpu: bool | None, timeout: float | None) -> PytestPass:
    """The argv and env of one pytest pass (crash isolation: always through xdist workers)."""
    sel = target.selection(suite, models)  # paths, -k and node-id globs of the models' `select` templates
    argv = [sys.executable, "-m", "pytest", *sel.paths, *(["-k", sel.keyword] if sel.keyword else []),
            f"--rootdir={target.root}", "-p", "no:cacheprovider", "-q", "-rN", "--color=no",
            "--continue-on-collection-errors",
            # `--opt=value`: pytest finds the ini file before plugins register their options, and
            # treats the value of an unknown `--opt value` as a path (an existing bundle would move
            # the ini search out of the target).
            f"--harness-bundle={bundle}", f"--harness-run-uuid={run_uuid}", f"--harness-suite={suite.name}",
            f"--harness-models={','.join(models or target.models)}", "--max-worker-restart=1000"]
    expression = marker_expression(replace(suite, markers=sel.markers), multi_gpu)
    if expression:
        argv += ["-m", expression]
    argv += ["-n", "1"] if multi_gpu else worker_specs(workers, gpu_count)
    if timeout:
        argv += ["--timeout", str(timeout), "--timeout-method", "signal"]
    env = {**os.environ, **suite.env}
    env["PYTHONPATH"] = os.pathsep.join([str(target.root), *filter(None, [os.environ.get("PYTHONPATH")])])
    env["HARNESS_ATTRIBUTION"] = target.attribution.to_json()  # read by harness.run.attribution
    if sel.globs:
        argv[3:3] = ["-p", "harness.run.selection"]
        env["HARNESS_SELECT"] = json.dumps(sel.globs)
    env.pop("HARNESS_DB_URL", None)  # the runner is the store's one writer; the plugin only writes the bundle
    if target.models_env and models:
        env[target.models_env] = ",".join(models)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return PytestPass(suite=suite, models=models, multi_gpu=multi_gpu, argv=argv, env=env)
