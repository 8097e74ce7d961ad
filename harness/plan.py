"""`harness plan`: the GitHub Actions matrix for an event and its changed files.

Selection (which models, which suites) comes from the event, the changed files and the PR labels,
mapped through the target's description (rules in harness/plan_rules.py, keys in docs/TARGETS.md);
placement (which Actions runner group runs what) comes from `harness/runner_groups.toml` through
`load_runner_groups`, never from the workflows. The matrix is cut into slices of at most `max_jobs`
entries (GitHub caps one matrix at 256 jobs); a workflow runs one reusable-workflow call per slice.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.config import RUNNER_GROUPS
from harness.errors import HarnessError
from harness.plan_rules import (  # noqa: F401 - classify/select/labels are part of this module's API
    BENCHMARK_LABEL,
    SLOW_LABEL,
    SUITE_LABELS,
    Selection,
    classify,
    event_rule,
    plan_models,
    pr_label,
    select,
    suite_groups,
)
from harness.run.runner_groups import RunnerGroupSpec, default_runner, load_runner_groups
from harness.run.target import Target, load_target

GITHUB_MATRIX_CAP = 256
EVENTS = ("schedule", "workflow_dispatch", "push", "pull_request")


def split_list(values: Iterable[str] | str | None) -> list[str]:
    """Flatten repeated / comma / whitespace separated option values, keeping order."""
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    out: list[str] = []
    for value in values:
        for item in re.split(r"[\s,]+", value):
            if item and item not in out:
                out.append(item)
    return out


def _runners_for(group_or_name: str, specs: list[RunnerGroupSpec]) -> tuple[str, RunnerGroupSpec | None]:
    """A harness group (use its default runner) or an Actions runner-group name (use that one)."""
    if group_or_name in RUNNER_GROUPS:
        return group_or_name, None
    spec = next((s for s in specs if s.name == group_or_name), None)
    if spec is None:
        known = ", ".join(list(RUNNER_GROUPS) + [s.name for s in specs])
        raise HarnessError(f"unknown runner group {group_or_name!r} (known: {known})")
    return spec.group, spec


def place(suite: str, group: str, pinned: RunnerGroupSpec | None, specs: list[RunnerGroupSpec]) -> RunnerGroupSpec:
    """The Actions runner group for one suite in one harness group (FA2 prefers an Ampere+ GPU)."""
    if pinned is not None:
        return pinned
    default = default_runner(group)
    if suite == "fa2" and not default.supports_fa2():  # compute capability from runner_groups.toml
        capable = [s for s in specs if s.group == group and s.supports_fa2()]
        if capable:
            return capable[0]
    return default


def _entry(spec: RunnerGroupSpec, suites: list[str], models: list[str], tag: str, event: str) -> dict[str, Any]:
    label = models[0] if len(models) == 1 else f"{models[0]}-and-{len(models) - 1}-more"
    return {
        "id": f"{label}-{spec.machine_type}-{'-'.join(suites)}",
        "models": ",".join(models),
        "suites": ",".join(suites),
        "runner": spec.name,
        "runner_group": spec.group,
        "machine_type": spec.machine_type,
        "gpu_name": spec.gpu_name,
        "gpu_count": spec.gpu_count,
        "container_options": spec.container_options,
        "artifact": f"{spec.machine_type}_{tag}_{'-'.join(suites)}_{label}",
        "event": event,
    }


@dataclass
class PlanRequest:
    """Inputs of `make_plan`; lists accept comma/whitespace separated strings too."""

    event: str
    changed_files: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    suites: list[str] = field(default_factory=list)
    runner_groups: list[str] = field(default_factory=list)
    important_only: bool = False
    models_per_job: int = 0  # 0: every model of a (runner, suites) cell in one job
    max_jobs: int = GITHUB_MATRIX_CAP
    repo: str = "."


def _validate(req: PlanRequest, target: Target) -> None:
    if req.event not in EVENTS:
        raise HarnessError(f"unknown event {req.event!r} (known: {', '.join(EVENTS)})")
    if not 1 <= req.max_jobs <= GITHUB_MATRIX_CAP:
        raise HarnessError(f"--max-jobs must be between 1 and {GITHUB_MATRIX_CAP}, got {req.max_jobs}")
    if req.models_per_job < 0:
        raise HarnessError(f"--models-per-job must be 0 (all in one job) or more, got {req.models_per_job}")
    for suite in req.suites:
        if suite not in target.suites:
            raise HarnessError(f"unknown suite {suite!r} (known: {', '.join(target.suites)})")


def make_plan(req: PlanRequest) -> dict[str, Any]:
    """The plan object: selection, reasons and the matrix slices (see module docstring)."""
    from harness.run.metadata import open_repo

    if req.event not in EVENTS:
        raise HarnessError(f"unknown event {req.event!r} (known: {', '.join(EVENTS)})")
    target = load_target(open_repo(req.repo).working_tree_dir)
    _validate(req, target)
    specs = load_runner_groups()
    rule = event_rule(target, req.event)
    suites = [s for s in (req.suites or rule.suites or ()) if s in target.suites]
    reasons: list[str] = [f"{req.event}: suites {', '.join(suites) or '-'} ({target.source})"]
    if req.event == "pull_request":
        gated = [s for s in suites if pr_label(target, s) is None or pr_label(target, s) in req.labels]
        if len(gated) < len(suites):
            missing = sorted({pr_label(target, s) or "" for s in suites if s not in gated})
            reasons.append(f"pull request without label {', '.join(missing)}: "
                           f"skipping {', '.join(s for s in suites if s not in gated)}")
        suites = gated

    all_models = plan_models(target)
    if req.models:
        models = target.resolve_models(",".join(req.models))
        reasons.append(f"--models {','.join(req.models)}")
        per_suite_models = {s: list(models) for s in suites}
    elif rule.all_models:
        reasons.append(f"{req.event}: every model")
        per_suite_models = {s: list(all_models) for s in suites}
    else:
        sel = select(req.changed_files, target)
        per_suite_models = {s: sel.models_for(s, all_models) for s in suites}
        reasons.extend(sel.reasons or ["no changed file selects a model (docs or platform code only)"])
    if req.important_only and target.important:
        per_suite_models = {s: [m for m in ms if m in target.important] for s, ms in per_suite_models.items()}
        reasons.append(f"important models only: {', '.join(target.important)}")

    explicit = [_runners_for(g, specs) for g in req.runner_groups]
    # Group (runner, models) → suites so one job runs every suite its machine is right for.
    cells: dict[tuple[str, str], tuple[RunnerGroupSpec, list[str]]] = {}
    for suite, models_for_suite in per_suite_models.items():
        spec_suite = target.suites[suite]
        groups = explicit or [(g, None) for g in suite_groups(target, suite, rule)]
        for group, pinned in groups:
            if group not in spec_suite.runner_groups:
                continue
            runner = place(suite, group, pinned, specs)
            for model in models_for_suite:
                cell = cells.setdefault((runner.name, model), (runner, []))
                cell[1].append(suite)
    jobs: dict[tuple[str, tuple[str, ...]], tuple[RunnerGroupSpec, list[str]]] = {}
    for (_, model), (runner, cell_suites) in cells.items():
        key = (runner.name, tuple(cell_suites))
        jobs.setdefault(key, (runner, []))[1].append(model)

    tag = {"schedule": "daily", "workflow_dispatch": "manual", "push": "push", "pull_request": "pr"}[req.event]
    entries = []
    for (_, cell_suites), (runner, models) in jobs.items():
        step = req.models_per_job or len(models)
        for i in range(0, len(models), step):
            entries.append(_entry(runner, list(cell_suites), models[i:i + step], tag, req.event))
    slices = [entries[i:i + req.max_jobs] for i in range(0, len(entries), req.max_jobs)]
    if len(slices) > GITHUB_MATRIX_CAP:
        raise HarnessError(f"{len(entries)} jobs need {len(slices)} slices, over GitHub's {GITHUB_MATRIX_CAP}: "
                           f"raise --models-per-job")
    chosen = {m for e in entries for m in e["models"].split(",")}
    selected = [m for m in all_models if m in chosen] + sorted(chosen - set(all_models))
    return {
        "event": req.event,
        "models": selected,
        "suites": sorted({s for e in entries for s in e["suites"].split(",")}),
        "runners": sorted({e["runner"] for e in entries}),
        "jobs": len(entries),
        "max_jobs": req.max_jobs,
        "empty": not entries,
        "reasons": reasons,
        "slice_ids": list(range(len(slices))),
        "slices": [{"include": s} for s in slices],
    }


def github_outputs(plan: dict[str, Any]) -> dict[str, str]:
    """The `key=value` pairs a workflow step writes to `$GITHUB_OUTPUT` (compact JSON values)."""
    return {
        "empty": "true" if plan["empty"] else "false",
        "jobs": str(plan["jobs"]),
        "models": ",".join(plan["models"]),
        "slice_ids": json.dumps(plan["slice_ids"], separators=(",", ":")),
        "slices": json.dumps(plan["slices"], separators=(",", ":")),
    }


def write_github_output(plan: dict[str, Any], path: str | Path) -> None:
    """Append the plan's outputs to a `$GITHUB_OUTPUT` file (values are single-line JSON)."""
    lines = "".join(f"{k}={v}\n" for k, v in github_outputs(plan).items())
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(lines)


def read_paths(source: str | Path) -> list[str]:
    """Changed paths, one per line, from a file or '-' (stdin)."""
    import sys

    if str(source) == "-":
        text = sys.stdin.read()
    else:
        try:
            text = Path(source).read_text(encoding="utf-8")
        except OSError as exc:
            raise HarnessError(f"cannot read changed files from {source}: {exc.strerror}") from None
    return [line.strip() for line in text.splitlines() if line.strip()]
