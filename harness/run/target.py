"""The target under test: a git repo whose tests pytest runs, described by one typed `Target`.

The description is read by `load_target` (harness/run/target_load.py) from `harness.toml` (keys at
top level, or under `[tool.harness]`) or else `[tool.harness]` of `pyproject.toml`, else a preset,
else the generic target (any test file; `--models NAME` matches test paths). `run`, `targets check`,
`plan`, `new-failures --confirm` and `bisect` all read it through `load_target`. Every key is listed
in docs/TARGETS.md.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from harness.config import RUNNER_GROUPS
from harness.errors import HarnessError
from harness.run.attribution import AttributionRules

MODEL_CLASS = re.compile(r"^class ModelArgs\b", re.MULTILINE)
SKIP_DIRS = {".git", ".venv", "venv", "node_modules", ".harness", "__pycache__", "build", "dist", ".tox"}
DEFAULT_INSTALL_FILES = ("pyproject.toml", "setup.py", "setup.cfg", "requirements*.txt", "harness.toml")


class TargetConfigError(HarnessError):
    """A target description that cannot be used."""


@dataclass(frozen=True)
class SuiteSpec:
    """How to select one suite: test paths, a marker expression, environment, runner groups."""

    name: str
    paths: list[str] = field(default_factory=list)
    markers: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    runner_groups: list[str] = field(default_factory=lambda: list(RUNNER_GROUPS))
    select: str | None = None  # per-suite selection template: "-k EXPR" or a node-id glob, with {model}
    label: str | None = None  # PR label that runs this suite ("" : none needed; None: the default rule)


@dataclass(frozen=True)
class EventRule:
    """What an event runs when nothing narrows it (see harness/plan.py for the defaults)."""

    suites: tuple[str, ...] | None = None
    runner_groups: tuple[str, ...] | None = None
    all_models: bool | None = None


@dataclass(frozen=True)
class Selection:
    """pytest arguments that pick some models' tests of one suite."""

    paths: list[str]
    keyword: str | None
    markers: str | None
    globs: list[str]


@dataclass(frozen=True)
class Target:
    """A repository under test and how its models and suites map onto pytest."""

    root: Path
    models: list[str]
    suites: dict[str, SuiteSpec]
    models_env: str | None = None
    model_paths: str | None = None
    model_sources: list[str] = field(default_factory=list)
    core: list[str] = field(default_factory=list)
    core_selects: str = "all"  # "all" | "important": what a change to a `core` file runs
    select: str | None = None
    model_select: dict[str, str] = field(default_factory=dict)
    attribution: AttributionRules = field(default_factory=AttributionRules)
    install: str | None = None
    install_files: list[str] = field(default_factory=lambda: list(DEFAULT_INSTALL_FILES))
    important: list[str] = field(default_factory=list)
    events: dict[str, EventRule] = field(default_factory=dict)
    source: str = "defaults"
    generic: bool = False  # no config, no preset: models are names found in test file paths

    def resolve_models(self, spec: str | list[str]) -> list[str]:
        """`all` or a comma list to known model names; unknown names are bad input."""
        names = spec.split(",") if isinstance(spec, str) else list(spec)
        names = [n.strip() for n in names if n.strip()]
        if not names:
            raise HarnessError("--models is empty: name models (e.g. --models llama) or use --models all")
        if names == ["all"]:
            return list(self.models)
        if self.generic:
            for n in names:
                if not generic_test_files(self.root, n):
                    raise HarnessError(f"unknown model {n!r}: no test file path under {self.root} names it "
                                       f"(describe the target: docs/TARGETS.md)")
            return names
        unknown = [n for n in names if n not in self.models]
        if unknown:
            known = ", ".join(self.models) or "none registered"
            raise HarnessError(f"unknown model {unknown[0]!r} (known: {known})")
        return names

    def resolve_suites(self, spec: str | None, runner_group: str) -> list[SuiteSpec]:
        """Named suites, or by default every suite that applies to `runner_group`."""
        if not spec:
            return [s for s in self.suites.values() if runner_group in s.runner_groups]
        out = []
        for name in (n.strip() for n in spec.split(",") if n.strip()):
            if name not in self.suites:
                raise HarnessError(f"unknown suite {name!r} (known: {', '.join(self.suites)})")
            out.append(self.suites[name])
        if not out:
            raise HarnessError("--suite is empty: name suites (e.g. --suite slow,fa2)")
        return out

    def select_template(self, model: str, suite: SuiteSpec) -> str | None:
        """How one model's tests are picked inside shared files: per model, else per suite, else top."""
        return self.model_select.get(model) or suite.select or self.select

    def path_patterns(self, suite: SuiteSpec) -> list[str]:
        """The suite's paths, else the target's `model_paths`, else none (every test)."""
        return suite.paths or ([self.model_paths] if self.model_paths else [])

    def pytest_paths(self, suite: SuiteSpec, models: list[str]) -> list[str]:
        """Test paths (or node ids) for one suite and some models.

        A path may hold `{model}` (one path per model; missing ones are dropped); a suite with no
        paths uses the target's `model_paths` pattern; a target with neither runs the test files whose
        path names the model (generic target) or everything."""
        patterns = self.path_patterns(suite)
        if not patterns:
            if not models or not self.generic:
                return ["."]
            return [p for m in models for p in generic_test_files(self.root, m)]
        out: list[str] = []
        for pattern in patterns:
            if "{model}" in pattern:
                for q in (pattern.replace("{model}", m) for m in models):
                    if (self.root / q.split("::", 1)[0]).exists():
                        out.append(q)
            else:
                out.append(pattern)
        return list(dict.fromkeys(out))

    def markers_for(self, suite: SuiteSpec, models: list[str]) -> str | None:
        """The suite's marker expression; a `{model}` template becomes one expression per model."""
        if not suite.markers or "{model}" not in suite.markers:
            return suite.markers
        names = models or self.models
        return " or ".join(f"({suite.markers.replace('{model}', m)})" for m in names) or None

    def selection(self, suite: SuiteSpec, models: list[str]) -> Selection:
        """The pytest arguments of one pass: paths, `-k` (templates OR-ed), `-m`, node-id globs."""
        keywords: list[str] = []
        globs: list[str] = []
        for m in models:
            template = self.select_template(m, suite)
            if not template:
                continue
            if template.startswith("-k"):
                keywords.append(f"({template[2:].strip().replace('{model}', m)})")
            else:
                globs.append(template.replace("{model}", m))
        return Selection(paths=self.pytest_paths(suite, models), keyword=" or ".join(dict.fromkeys(keywords)) or None,
                         markers=self.markers_for(suite, models), globs=list(dict.fromkeys(globs)))

    def suite_env(self, suites: Iterable[str | None]) -> dict[str, str]:
        """The environment of some suites, merged (e.g. RUN_SLOW=1 for `slow`)."""
        env: dict[str, str] = {}
        for name in suites:
            spec = self.suites.get(name or "")
            if spec is not None:
                env.update(spec.env)
        return env


def suite_environment(root: str | Path, suites: Iterable[str | None]) -> dict[str, str]:
    """The environment the target's suites set (e.g. RUN_SLOW=1 for `slow`): reruns of a run's tests
    (confirmation, bisect probes) must see what the run saw, or a gated test merely skips."""
    return load_target(root).suite_env(suites)


def probe_settings(root: str | Path, suites: Iterable[str | None]) -> dict[str, object]:
    """What a bisect's probes need from the description (for `BisectRequest`): the install command
    (presets included), the suites' environment and the dependency files whose change means a reinstall."""
    target = load_target(root)
    return {"install": target.install, "env": target.suite_env(suites), "install_files": list(target.install_files)}


def discover_models(root: Path, models_dir: str | None, model_paths: str | None) -> list[str]:
    """Model families: files with `class ModelArgs` in `models_dir`, or folders matching a pattern."""
    if models_dir and (root / models_dir).is_dir():
        found = []
        for path in sorted((root / models_dir).glob("*.py")):
            if not path.name.startswith("_") and MODEL_CLASS.search(path.read_text(errors="replace")):
                found.append(path.stem)
        return found
    if model_paths and "{model}" in model_paths:
        prefix, _, rest = model_paths.partition("{model}")
        base = root / prefix
        if base.is_dir():
            return sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))
    return []


def generic_test_files(root: Path, name: str) -> list[str]:
    """Test files (`test_*.py`, `*_test.py`) whose path relative to `root` contains `name`."""
    found = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root)
        if set(rel.parts) & SKIP_DIRS:
            continue
        if (path.name.startswith("test_") or path.name.endswith("_test.py")) and name in rel.as_posix():
            found.append(rel.as_posix())
    return sorted(found)


def load_target(root: str | Path) -> Target:
    """Read the target description of the repository at `root` (see harness/run/target_load.py)."""
    from harness.run.target_load import load

    return load(Path(root).resolve())
