"""`harness targets check`: validate a target's description and say what a run would execute, and why."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.run.pytest_command import build_pass
from harness.run.target import load_target


@dataclass
class SuitePlan:
    """What one suite would run."""

    suite: str
    paths: list[str]
    markers: str | None
    env: dict[str, str]
    runner_groups: list[str]
    command: list[str]
    why: str


@dataclass
class TargetPlan:
    """A target's description as understood, and the passes `harness run` would make."""

    root: str
    source: str
    models_known: list[str]
    models_selected: list[str]
    install: str | None
    important: list[str]
    suites: list[SuitePlan] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def explain(repo: str, models: str = "all", suites: str | None = None, runner_group: str = "cpu") -> TargetPlan:
    """Load and validate the target at `repo` (HarnessError on bad config) and plan its passes."""
    from harness.run.metadata import open_repo

    root = Path(open_repo(repo).working_tree_dir)
    target = load_target(root)
    selected = target.resolve_models(models)
    plan = TargetPlan(root=str(root), source=target.source, models_known=target.models,
                      models_selected=selected, install=target.install, important=target.important)
    for suite in target.resolve_suites(suites, runner_group):
        p = build_pass(target, suite, selected, run_uuid="<run>", bundle=Path("<bundle>"), workers=1,
                       gpu_count=0, multi_gpu=None, timeout=None)
        paths = target.pytest_paths(suite, selected)
        why = (f"suite paths {suite.paths}" if suite.paths else
               f"model pattern {target.model_paths!r}" if target.model_paths else
               "test files whose path names the model" if target.generic and selected else "every test")
        if target.models_env and selected:
            why += f"; models narrowed by {target.models_env}={','.join(selected)}"
        if suite.markers:
            why += f"; marker expression {suite.markers!r}"
        plan.suites.append(SuitePlan(suite=suite.name, paths=paths, markers=suite.markers, env=suite.env,
                                     runner_groups=suite.runner_groups,
                                     command=["python", *p.argv[1:p.argv.index("-p")], *(["-m", suite.markers] if suite.markers else [])],
                                     why=why))
    return plan
