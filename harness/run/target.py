"""The target under test: a git repo whose tests pytest runs, described by `[tool.harness]`.

The table lives in the target's `pyproject.toml` (or a `harness.toml` holding the same keys at top
level). With none, every `python -m pytest` collectable test of the repo is the target and
`--models NAME` selects test paths that match the name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from harness.config import RUNNER_GROUPS
from harness.errors import HarnessError

MODEL_CLASS = re.compile(r"^class ModelArgs\b", re.MULTILINE)


class TargetConfigError(HarnessError):
    """A `[tool.harness]` table that cannot be used."""


@dataclass(frozen=True)
class SuiteSpec:
    """How to select one suite: test paths, a marker expression, environment, runner groups."""

    name: str
    paths: list[str] = field(default_factory=list)
    markers: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    runner_groups: list[str] = field(default_factory=lambda: list(RUNNER_GROUPS))


@dataclass(frozen=True)
class Target:
    """A repository under test and how its models and suites map onto pytest."""

    root: Path
    models: list[str]
    suites: dict[str, SuiteSpec]
    models_env: str | None = None
    model_paths: str | None = None
    install: str | None = None
    important: list[str] = field(default_factory=list)
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
                    raise HarnessError(f"unknown model {n!r}: no test file path under {self.root} names it")
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

    def pytest_paths(self, suite: SuiteSpec, models: list[str]) -> list[str]:
        """Test paths for one suite and some models.

        A suite path may hold `{model}` (one path per model; missing ones are dropped); a suite with no
        paths uses the target's `model_paths` pattern; a target with neither runs the test files whose
        path names the model (or everything when no model is named)."""
        patterns = suite.paths or ([self.model_paths] if self.model_paths else [])
        if not patterns:
            if not models or not self.generic:
                return ["."]
            return [p for m in models for p in generic_test_files(self.root, m)]
        out: list[str] = []
        for pattern in patterns:
            if "{model}" in pattern:
                out += [q for q in (pattern.format(model=m) for m in models) if (self.root / q).exists()]
            else:
                out.append(pattern)
        return list(dict.fromkeys(out))


def suite_environment(root: str | Path, suites: Iterable[str | None]) -> dict[str, str]:
    """The environment the target's suites set (e.g. RUN_SLOW=1 for `slow`): reruns of a run's tests
    (confirmation, bisect probes) must see what the run saw, or a gated test merely skips."""
    target = load_target(root)
    env: dict[str, str] = {}
    for name in suites:
        spec = target.suites.get(name or "")
        if spec is not None:
            env.update(spec.env)
    return env


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


SKIP_DIRS = {".git", ".venv", "venv", "node_modules", ".harness", "__pycache__", "build", "dist", ".tox"}


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


def _read_table(root: Path) -> tuple[dict[str, Any], str]:
    harness_toml = root / "harness.toml"
    pyproject = root / "pyproject.toml"
    for path, pick in ((harness_toml, lambda d: d), (pyproject, lambda d: d.get("tool", {}).get("harness"))):
        if path.is_file():
            try:
                with open(path, "rb") as fh:
                    table = pick(tomllib.load(fh))
            except tomllib.TOMLDecodeError as exc:
                raise TargetConfigError(f"{path}: not valid TOML ({exc})") from None
            if table is not None:
                if not isinstance(table, dict):
                    raise TargetConfigError(f"{path}: [tool.harness] must be a table")
                return table, str(path)
    return {}, "defaults"


def _str_list(value: Any, key: str, source: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TargetConfigError(f"{source}: key '{key}' must be a string or a list of strings")
    return value


def _suite(name: str, raw: Any, source: str) -> SuiteSpec:
    key = f"suites.{name}"
    if not isinstance(raw, dict):
        raise TargetConfigError(f"{source}: key '{key}' must be a table")
    allowed = {"paths", "markers", "env", "runner_groups"}
    extra = set(raw) - allowed
    if extra:
        raise TargetConfigError(f"{source}: unknown key '{key}.{sorted(extra)[0]}' (known: {', '.join(sorted(allowed))})")
    env = raw.get("env", {})
    if not isinstance(env, dict):
        raise TargetConfigError(f"{source}: key '{key}.env' must be a table of strings")
    groups = _str_list(raw.get("runner_groups", list(RUNNER_GROUPS)), f"{key}.runner_groups", source)
    for g in groups:
        if g not in RUNNER_GROUPS:
            raise TargetConfigError(f"{source}: key '{key}.runner_groups' has unknown group {g!r}")
    markers = raw.get("markers")
    if markers is not None and not isinstance(markers, str):
        raise TargetConfigError(f"{source}: key '{key}.markers' must be a string")
    return SuiteSpec(name=name, paths=_str_list(raw.get("paths", []), f"{key}.paths", source), markers=markers,
                     env={str(k): str(v) for k, v in env.items()}, runner_groups=groups)


TOP_KEYS = {"models", "models_dir", "models_env", "model_paths", "install", "important", "suites"}


def load_target(root: str | Path) -> Target:
    """Read the target description of the repository at `root`."""
    root = Path(root).resolve()
    table, source = _read_table(root)
    if not table:
        from harness.run.presets import detect_preset

        preset = detect_preset(root)
        if preset is None:
            return Target(root=root, models=[], suites={"all": SuiteSpec(name="all", paths=[])}, generic=True,
                          source="generic: any test file, `--models` matches test file paths")
        table, source = preset
    extra = set(table) - TOP_KEYS
    if extra:
        raise TargetConfigError(f"{source}: unknown key '{sorted(extra)[0]}' (known: {', '.join(sorted(TOP_KEYS))})")
    suites_raw = table.get("suites", {})
    if not isinstance(suites_raw, dict):
        raise TargetConfigError(f"{source}: key 'suites' must be a table of suite tables")
    suites = {name: _suite(name, raw, source) for name, raw in suites_raw.items()}
    if not suites:
        suites = {"all": SuiteSpec(name="all", paths=["."])}
    model_paths = table.get("model_paths")
    models = (_str_list(table["models"], "models", source) if "models" in table
              else discover_models(root, table.get("models_dir"), model_paths))
    install = table.get("install")
    if install is not None and not isinstance(install, str):
        raise TargetConfigError(f"{source}: key 'install' must be a string")
    return Target(root=root, models=models, suites=suites, models_env=table.get("models_env"),
                  model_paths=model_paths, install=install,
                  important=_str_list(table.get("important", []), "important", source), source=source)
