"""What `harness plan` selects: changed files mapped through the target description to models and
suites, and the event rules (which suites, runner groups and models an event runs by default).

Changed file → effect, first rule that matches (globs: docs/TARGETS.md):
  1. a dependency file (`install_files`, e.g. pyproject.toml, requirements*.txt): every model, every suite;
  2. a model source (`model_sources`, with `{model}`): that model, every suite;
  3. a shared core file (`core`): the important models (`core_selects = "important"`) or every model;
  4. a test path of a suite (its `paths`, else `model_paths`): with `{model}`, that model in that suite;
     without, the models its path names (e.g. suites/slow/expectations/gpt2.json), else every model
     in that suite; a conftest.py above or inside a suite's paths: every model in those suites;
  5. anything else (docs, workflows, platform code): nothing.
A target without models (generic) plans the pseudo-model `all`; there any `.py` file selects it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from harness.run.attribution import match_model
from harness.run.target import EventRule, Target

SLOW_LABEL = "run-slow"
BENCHMARK_LABEL = "run-benchmark"
# On a pull request a suite runs only when the PR carries its label (`label` in the suite overrides).
SUITE_LABELS = {"slow": SLOW_LABEL, "fa2": SLOW_LABEL, "quantization": SLOW_LABEL, "benchmark": BENCHMARK_LABEL}
SHARED_SUITE_FILES = ("conftest.py", "__init__.py")
GENERIC_MODEL = "all"

# Default event rules; `[tool.harness.events.<event>]` overrides any field. suites=None: every suite of
# the target but those in `DEFAULT_EXCLUDED`; runner_groups=None: every group each suite allows.
DEFAULT_EVENTS = {
    "schedule": EventRule(None, ("single-gpu", "multi-gpu"), True),
    "workflow_dispatch": EventRule(None, ("single-gpu", "multi-gpu"), True),
    "push": EventRule(None, ("single-gpu",), False),
    "pull_request": EventRule(None, None, False),
}
DEFAULT_EXCLUDED = {"schedule": {"benchmark"}, "workflow_dispatch": {"benchmark"}, "pull_request": {"benchmark"},
                    "push": {"benchmark", "quantization"}}


def event_rule(target: Target, event: str) -> EventRule:
    """The event's rule: the target's override, field by field, over the default."""
    base, override = DEFAULT_EVENTS[event], target.events.get(event, EventRule())
    suites = override.suites if override.suites is not None else tuple(
        s for s in target.suites if s not in DEFAULT_EXCLUDED[event])
    groups = override.runner_groups if override.runner_groups is not None else base.runner_groups
    all_models = override.all_models if override.all_models is not None else base.all_models
    return EventRule(suites, groups, all_models)


def suite_groups(target: Target, suite: str, rule: EventRule) -> list[str]:
    """Runner groups of one suite under an event: the suite's allowed groups the event prefers, or, when
    it prefers none of them (a cpu-only suite on a GPU schedule), all the suite allows."""
    allowed = target.suites[suite].runner_groups
    if rule.runner_groups is None:
        return list(allowed)
    both = [g for g in rule.runner_groups if g in allowed]
    return both or list(allowed)


def pr_label(target: Target, suite: str) -> str | None:
    """The label a pull request needs to run `suite` (None: none needed)."""
    label = target.suites[suite].label
    if label is not None:
        return label or None
    return SUITE_LABELS.get(suite)


def plan_models(target: Target) -> list[str]:
    return list(target.models) or [GENERIC_MODEL]


def _matches(patterns: Iterable[str], path: str) -> str | None:
    for pattern in patterns:
        got = match_model(pattern, path)
        if got is not None:
            return got
    return None


def _under(path: str, base: str) -> bool:
    base = base.split("::", 1)[0].rstrip("/")
    return base in ("", ".") or path == base or path.startswith(base + "/")


Effect = tuple[set[str] | None, set[str] | None]


def classify(path: str, target: Target) -> list[Effect]:
    """What one changed file selects: (models or None=all, suites or None=all) effects, [] for nothing."""
    p = path.strip().removeprefix("./")
    if not p:
        return []
    models = plan_models(target)
    name = PurePosixPath(p).name
    if "/" not in p and any(PurePosixPath(name).match(g) for g in target.install_files):
        return [(None, None)]
    got = _matches(target.model_sources, p)
    if got and got in models:
        return [({got}, None)]
    if _matches(target.core, p) is not None:
        important = set(target.important) if target.core_selects == "important" and target.important else None
        return [(important, None)]
    effects: list[Effect] = []
    for suite in target.suites.values():
        patterns = target.path_patterns(suite)
        if not patterns:
            if p.endswith(".py"):
                effects.append((None, {suite.name}))
            continue
        for pattern in patterns:
            if "{model}" in pattern:
                got = match_model(pattern.split("::", 1)[0], p)
                if got and got in models:
                    effects.append(({got}, {suite.name}))
                    break
                prefix = pattern.split("{model}", 1)[0].rstrip("/")
                if name == "conftest.py" and _under(prefix, str(PurePosixPath(p).parent)):
                    effects.append((None, {suite.name}))
                    break
            elif _under(p, pattern):
                named = {PurePosixPath(x).stem for x in PurePosixPath(p).relative_to(
                    pattern.split("::", 1)[0].rstrip("/") or ".").parts} & set(models) \
                    if pattern not in (".", "") else set()
                effects.append((named if named and name not in SHARED_SUITE_FILES else None, {suite.name}))
                break
            elif name == "conftest.py" and _under(pattern, str(PurePosixPath(p).parent)):
                effects.append((None, {suite.name}))
                break
    return effects


@dataclass
class Selection:
    """Per suite, the models picked by changed files (`None`: every model), and why."""

    per_suite: dict[str, set[str] | None] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)

    def models_for(self, suite: str, models: Sequence[str]) -> list[str]:
        """The picked models of one suite, in the target's order."""
        if suite not in self.per_suite:
            return []
        picked = self.per_suite[suite]
        return list(models) if picked is None else [m for m in models if m in picked]


def select(changed: Iterable[str], target: Target) -> Selection:
    """Fold `classify` over the changed files, keeping each file's suite granularity."""
    sel = Selection()
    for path in changed:
        for picked, picked_suites in classify(path, target):
            for suite in sorted(picked_suites) if picked_suites is not None else list(target.suites):
                current = sel.per_suite.get(suite, set())
                sel.per_suite[suite] = None if picked is None or current is None else current | picked
            what = "every model" if picked is None else ",".join(sorted(picked))
            sel.reasons.append(f"{path}: {what} "
                               f"({'all suites' if picked_suites is None else ','.join(sorted(picked_suites))})")
    return sel
