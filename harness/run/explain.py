"""`harness targets check`: validate a target's description, collect its tests (pytest --collect-only,
nothing runs) and say per model and suite how many tests a run would select and attribute, and why."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.run.pytest_command import build_pass
from harness.run.target import SKIP_DIRS, SuiteSpec, Target, load_target

MARKER_WORDS = {"and", "or", "not", "True", "False"}


@dataclass
class ModelCount:
    """One model in one suite: tests selected, and how many of them are attributed to it."""

    model: str
    selected: int
    attributed: int


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
    collected: int | None = None
    unattributed: int | None = None
    counts: list[ModelCount] = field(default_factory=list)
    collect_errors: list[str] = field(default_factory=list)


@dataclass
class TargetPlan:
    """A target's description as understood, the passes `harness run` would make, and the problems."""

    root: str
    source: str
    models_known: list[str]
    models_selected: list[str]
    install: str | None
    important: list[str]
    suites: list[SuitePlan] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def reads_variable(root: Path, name: str) -> bool:
    """Whether any Python file or ini/toml config of the repository mentions `name`."""
    pattern = re.compile(rb"\b" + re.escape(name.encode()) + rb"\b")
    for path in root.rglob("*"):
        if path.suffix not in (".py", ".cfg", ".ini") or set(path.relative_to(root).parts) & SKIP_DIRS:
            continue
        try:
            if pattern.search(path.read_bytes()):
                return True
        except OSError:
            continue
    return False


def static_problems(target: Target, suites: list[SuiteSpec]) -> list[str]:
    """Paths that do not exist, an environment variable the repository never reads."""
    out = []
    for suite in suites:
        for pattern in target.path_patterns(suite):
            if "{model}" in pattern:
                if target.models and not target.pytest_paths(SuiteSpec(suite.name, paths=[pattern]), target.models):
                    out.append(f"suite {suite.name}: path {pattern!r} exists for no model")
            elif not (target.root / pattern.split("::", 1)[0]).exists():
                out.append(f"suite {suite.name}: path {pattern!r} does not exist in {target.root}")
    if target.models_env and not reads_variable(target.root, target.models_env):
        out.append(f"models_env {target.models_env!r}: no file of the repository reads it, so it narrows nothing "
                   f"(use 'select' or remove models_env)")
    return out


def explain(repo: str, models: str = "all", suites: str | None = None, runner_group: str = "cpu") -> TargetPlan:
    """Load and validate the target at `repo` (HarnessError on bad config) and plan its passes."""
    from harness.run.metadata import open_repo

    root = Path(open_repo(repo).working_tree_dir)
    target = load_target(root)
    selected = target.resolve_models(models)
    plan = TargetPlan(root=str(root), source=target.source, models_known=target.models,
                      models_selected=selected, install=target.install, important=target.important)
    chosen = target.resolve_suites(suites, runner_group)
    plan.problems = static_problems(target, chosen)
    for suite in chosen:
        p = build_pass(target, suite, selected, run_uuid="<run>", bundle=Path("<bundle>"), workers=1,
                       gpu_count=0, multi_gpu=None, timeout=None)
        sel = target.selection(suite, selected)
        why = (f"suite paths {suite.paths}" if suite.paths else
               f"model pattern {target.model_paths!r}" if target.model_paths else
               "test files whose path names the model" if target.generic and selected else "every test")
        if target.models_env and selected and reads_variable(root, target.models_env):
            why += f"; models narrowed by {target.models_env}={','.join(selected)}"
        if sel.keyword:
            why += f"; keyword expression {sel.keyword!r}"
        if sel.globs:
            why += f"; node ids matching {sel.globs}"
        if sel.markers:
            why += f"; marker expression {sel.markers!r}"
        args = " ".join(p.argv[3:]).replace("-p harness.run.selection ", "").split(" ")
        command = ["python", "-m", "pytest", *[a for a in args if not a.startswith("--harness-")]]
        plan.suites.append(SuitePlan(suite=suite.name, paths=sel.paths, markers=sel.markers, env=suite.env,
                                     runner_groups=suite.runner_groups, command=command, why=why))
    return plan


def _collect(target: Target, suite: SuiteSpec, models: list[str]) -> dict[str, Any]:
    """One `pytest --collect-only` over every selected model's paths, with the check plugin."""
    per_model = {}
    for m in models or [""]:
        sel = target.selection(suite, [m] if m else [])
        per_model[m] = {"paths": sel.paths, "keyword": sel.keyword, "markers": sel.markers, "globs": sel.globs}
    paths = list(dict.fromkeys(p for s in per_model.values() for p in s["paths"]))
    with tempfile.TemporaryDirectory(prefix="harness-check-") as tmp:
        spec, out = Path(tmp) / "spec.json", Path(tmp) / "out.json"
        spec.write_text(json.dumps({"models": target.models, "per_model": per_model, "out": str(out),
                                    "attribution": json.loads(target.attribution.to_json())}))
        env = {**os.environ, **suite.env, "HARNESS_CHECK_SPEC": str(spec)}
        env["PYTHONPATH"] = os.pathsep.join([str(target.root), *filter(None, [os.environ.get("PYTHONPATH")])])
        env.pop("HARNESS_DB_URL", None)
        if target.models_env and models:
            env[target.models_env] = ",".join(models)
        argv = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                "-p", "harness.run.collect_check", f"--rootdir={target.root}", "--continue-on-collection-errors",
                *(["-n", "0"] if importlib.util.find_spec("xdist") else []), *paths]
        proc = subprocess.run(argv, cwd=target.root, env=env, capture_output=True, text=True)
        if not out.exists():
            tail = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()][-1:] or ["no output"]
            raise HarnessError(f"suite {suite.name}: pytest --collect-only could not run (exit {proc.returncode}): "
                               f"{tail[0]}")
        return json.loads(out.read_text())


def _merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Collections of one suite made once per model, as one."""
    items: dict[str, dict[str, Any]] = {}
    for part in parts:
        for row in part["items"]:
            have = items.setdefault(row["nodeid"], {**row, "selected_by": []})
            have["selected_by"] = sorted(set(have["selected_by"]) | set(row["selected_by"]))
    return {"items": list(items.values()),
            "markers_used": sorted({m for p in parts for m in p["markers_used"]}),
            "markers_registered": sorted({m for p in parts for m in p["markers_registered"]}),
            "collect_errors": sorted({e for p in parts for e in p["collect_errors"]})}


def marker_names(expression: str | None) -> set[str]:
    return {w for w in re.findall(r"[A-Za-z_][\w]*", expression or "") if w not in MARKER_WORDS}


def check(repo: str, models: str = "all", suites: str | None = None, runner_group: str = "cpu") -> TargetPlan:
    """`explain`, then collect each suite and count per model; problems make `targets check` exit 2."""
    plan = explain(repo, models, suites, runner_group)
    if plan.problems:  # a missing path or an unread variable: collecting would only repeat it
        return plan
    target = load_target(plan.root)
    selected = plan.models_selected
    totals = {m: 0 for m in selected}
    narrowed = bool(target.models_env and selected and reads_variable(target.root, target.models_env))
    for sp in plan.suites:
        suite = target.suites[sp.suite]
        if narrowed:  # the repository itself narrows by the variable: one collection per model
            with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
                data = _merge(list(pool.map(lambda m, s=suite: _collect(target, s, [m]), selected)))
        else:
            data = _collect(target, suite, selected)
        items = data["items"]
        sp.collected = len(items)
        sp.collect_errors = data["collect_errors"]
        picked_any = [r for r in items if r["selected_by"]]
        sp.unattributed = sum(1 for r in picked_any if r["model"] is None)
        for m in selected:
            mine = [r for r in items if m in r["selected_by"]]
            sp.counts.append(ModelCount(m, len(mine), sum(1 for r in mine if r["model"] == m)))
            totals[m] += len(mine)
            others = sorted({r["model"] for r in mine if r["model"] not in (None, m)})
            if len(selected) > 1 and others and len(mine) == len(items):
                plan.problems.append(f"suite {sp.suite}: model {m!r} selects every collected test ({len(items)}), "
                                     f"tests of {', '.join(others)} too: add a 'select' template (docs/TARGETS.md)")
        unknown = marker_names(sp.markers) - set(data["markers_used"]) - set(data["markers_registered"]) - {
            "multi_gpu"}
        if unknown:
            plan.problems.append(f"suite {sp.suite}: marker {sorted(unknown)[0]!r} is neither registered nor "
                                 f"used by any collected test")
        if sp.collect_errors:
            plan.problems.append(f"suite {sp.suite}: {len(sp.collect_errors)} collection error(s), first in "
                                 f"{sp.collect_errors[0]}")
    for m, n in totals.items():
        if not n and plan.suites:
            plan.problems.append(f"model {m!r} selects no test in any suite ({', '.join(s.suite for s in plan.suites)})")
    if not selected and plan.suites and not any(s.collected for s in plan.suites):
        plan.problems.append("the target collects no test")
    return plan


def describe(plan: TargetPlan) -> list[str]:
    """The human-readable lines of `targets check`."""
    lines = [f"target {plan.root}", f"  described by: {plan.source}",
             f"  models: {', '.join(plan.models_known) or '-'}",
             f"  selected: {', '.join(plan.models_selected) or 'all tests'}", f"  install: {plan.install or '-'}"]
    for s in plan.suites:
        lines += [f"suite {s.suite}: {shlex.join(s.command)}",
                  f"  env: {s.env or '-'}; runner groups: {', '.join(s.runner_groups)}", f"  why: {s.why}"]
        if s.collected is not None:
            lines.append(f"  collected {s.collected}; selected by a model but unattributed: {s.unattributed}")
            lines += [f"  {c.model:<20} {c.selected:>6} selected {c.attributed:>6} attributed" for c in s.counts]
    lines += [f"problem: {p}" for p in plan.problems]
    return lines
