"""Reading and validating a target description into a `Target` (one loader for every verb).

Precedence: `harness.toml` (keys at top level, or all under `[tool.harness]`), else `[tool.harness]`
of `pyproject.toml`, else a built-in preset the layout matches, else the generic target. A `preset`
key starts from a preset and overrides it. Unknown keys are errors naming the key and the valid ones.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import tomllib

from harness.config import RUNNER_GROUPS
from harness.run.attribution import DEFAULT_PARAMS, AttributionRules
from harness.run.target import (
    DEFAULT_INSTALL_FILES,
    EventRule,
    SuiteSpec,
    Target,
    TargetConfigError,
    discover_models,
)

TOP_KEYS = ("models", "models_dir", "models_env", "model_paths", "model_sources", "core", "core_selects",
            "select", "model_select", "attribution", "install", "install_files", "important", "events",
            "suites", "preset")
SUITE_KEYS = ("paths", "markers", "env", "runner_groups", "select", "label")
ATTRIBUTION_KEYS = ("path", "params", "ids", "regex")
EVENT_KEYS = ("suites", "runner_groups", "all_models")
EVENTS = ("schedule", "workflow_dispatch", "push", "pull_request")


def _check_keys(table: dict[str, Any], allowed: tuple[str, ...], where: str, source: str) -> None:
    extra = sorted(set(table) - set(allowed))
    if extra:
        key = f"{where}.{extra[0]}" if where else extra[0]
        raise TargetConfigError(f"{source}: unknown key '{key}' (valid keys{' of ' + where if where else ''}: "
                                f"{', '.join(allowed)}; see docs/TARGETS.md)")


def read_table(root: Path) -> tuple[dict[str, Any], str]:
    """The raw description and where it came from ({} and 'defaults' when there is none)."""
    for path in (root / "harness.toml", root / "pyproject.toml"):
        if not path.is_file():
            continue
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise TargetConfigError(f"{path}: not valid TOML ({exc})") from None
        if path.name == "harness.toml":
            if "tool" in data:
                nested = data["tool"].get("harness") if isinstance(data["tool"], dict) else None
                if not isinstance(nested, dict) or len(data) > 1 or len(data["tool"]) > 1:
                    raise TargetConfigError(f"{path}: put the keys at top level or all under [tool.harness], "
                                            f"not both (and no other [tool.*] table)")
                data = nested
            return data, str(path)
        table = data.get("tool", {}).get("harness")
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


def _opt_str(table: dict[str, Any], key: str, where: str, source: str) -> str | None:
    value = table.get(key)
    if value is not None and not isinstance(value, str):
        raise TargetConfigError(f"{source}: key '{where}{key}' must be a string")
    return value


def _str_table(value: Any, key: str, source: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise TargetConfigError(f"{source}: key '{key}' must be a table of strings")
    return {str(k): v for k, v in value.items()}


def check_select(template: str, key: str, source: str, need_model: bool) -> str:
    """A selection template: `-k EXPR` or a node-id glob; suite/top-level ones must name `{model}`."""
    t = template.strip()
    if t.startswith("-") and not t.startswith("-k"):
        raise TargetConfigError(f"{source}: key '{key}' = {template!r}: only '-k EXPR' or a node-id pattern "
                                f"(markers go in 'markers')")
    if t.startswith("-k") and not t[2:].strip():
        raise TargetConfigError(f"{source}: key '{key}' = {template!r}: '-k' needs an expression")
    if need_model and "{model}" not in t:
        raise TargetConfigError(f"{source}: key '{key}' = {template!r} does not contain {{model}}: it would "
                                f"select the same tests for every model")
    return t


def _paths(raw: dict[str, Any], key: str, source: str) -> list[str]:
    paths = _str_list(raw.get("paths", []), key, source)
    for p in paths:
        if p.startswith("-"):
            raise TargetConfigError(f"{source}: key '{key}' entry {p!r} is a pytest option, not a path: "
                                    f"use 'select' (-k EXPR) or 'markers'")
        if not p.strip():
            raise TargetConfigError(f"{source}: key '{key}' has an empty entry")
    return paths


def _suite(name: str, raw: Any, source: str) -> SuiteSpec:
    key = f"suites.{name}"
    if not isinstance(raw, dict):
        raise TargetConfigError(f"{source}: key '{key}' must be a table")
    _check_keys(raw, SUITE_KEYS, key, source)
    env = raw.get("env", {})
    if not isinstance(env, dict):
        raise TargetConfigError(f"{source}: key '{key}.env' must be a table of strings")
    env = {str(k): str(v) for k, v in env.items()}
    groups = _str_list(raw.get("runner_groups", list(RUNNER_GROUPS)), f"{key}.runner_groups", source)
    for g in groups:
        if g not in RUNNER_GROUPS:
            raise TargetConfigError(f"{source}: key '{key}.runner_groups' has unknown group {g!r} "
                                    f"(known: {', '.join(RUNNER_GROUPS)})")
    select = _opt_str(raw, "select", key + ".", source)
    return SuiteSpec(name=name, paths=_paths(raw, f"{key}.paths", source),
                     markers=_opt_str(raw, "markers", key + ".", source), env=env, runner_groups=groups,
                     select=check_select(select, f"{key}.select", source, True) if select else None,
                     label=_opt_str(raw, "label", key + ".", source))


def _attribution(raw: Any, source: str, default_paths: list[str]) -> AttributionRules:
    if not isinstance(raw, dict):
        raise TargetConfigError(f"{source}: key 'attribution' must be a table")
    _check_keys(raw, ATTRIBUTION_KEYS, "attribution", source)
    paths = _str_list(raw.get("path", default_paths), "attribution.path", source)
    for p in paths:
        if "{model}" not in p:
            raise TargetConfigError(f"{source}: key 'attribution.path' entry {p!r} does not contain {{model}}")
    ids = _str_table(raw.get("ids", {}), "attribution.ids", source)
    regex = _opt_str(raw, "regex", "attribution.", source)
    if regex:
        try:
            re.compile(regex)
        except re.error as exc:
            raise TargetConfigError(f"{source}: key 'attribution.regex' is not a valid regex ({exc})") from None
    return AttributionRules(path=tuple(paths), params=tuple(_str_list(raw.get("params", list(DEFAULT_PARAMS)),
                                                                      "attribution.params", source)),
                            ids=tuple(ids.items()), regex=regex)


def _events(raw: Any, source: str, suites: dict[str, SuiteSpec]) -> dict[str, EventRule]:
    if not isinstance(raw, dict):
        raise TargetConfigError(f"{source}: key 'events' must be a table of event tables")
    _check_keys(raw, EVENTS, "events", source)
    out = {}
    for event, rule in raw.items():
        if not isinstance(rule, dict):
            raise TargetConfigError(f"{source}: key 'events.{event}' must be a table")
        _check_keys(rule, EVENT_KEYS, f"events.{event}", source)
        names = _str_list(rule["suites"], f"events.{event}.suites", source) if "suites" in rule else None
        for s in names or []:
            if s not in suites:
                raise TargetConfigError(f"{source}: key 'events.{event}.suites' names unknown suite {s!r} "
                                        f"(known: {', '.join(suites)})")
        groups = _str_list(rule["runner_groups"], f"events.{event}.runner_groups", source) \
            if "runner_groups" in rule else None
        for g in groups or []:
            if g not in RUNNER_GROUPS:
                raise TargetConfigError(f"{source}: key 'events.{event}.runner_groups' has unknown group {g!r}")
        all_models = rule.get("all_models")
        if all_models is not None and not isinstance(all_models, bool):
            raise TargetConfigError(f"{source}: key 'events.{event}.all_models' must be true or false")
        out[event] = EventRule(tuple(names) if names is not None else None,
                               tuple(groups) if groups is not None else None, all_models)
    return out


def _with_preset(table: dict[str, Any], source: str) -> dict[str, Any]:
    from harness.run.presets import PRESETS

    name = table.get("preset")
    if name is None:
        return table
    if name not in PRESETS:
        raise TargetConfigError(f"{source}: key 'preset' = {name!r} is unknown (known: {', '.join(PRESETS)})")
    base = {k: v for k, v in PRESETS[name].items() if k != "suites"}
    suites = {k: dict(v) for k, v in PRESETS[name].get("suites", {}).items()}
    for k, v in (table.get("suites") or {}).items():
        base_suite = suites.get(k, {})
        suites[k] = {**base_suite, **{f: ({**base_suite[f], **x} if isinstance(x, dict) and isinstance(
            base_suite.get(f), dict) else x) for f, x in v.items()}} if isinstance(v, dict) else v
    return {**base, **{k: v for k, v in table.items() if k not in ("preset", "suites")}, "suites": suites}


def load(root: Path) -> Target:
    """The validated target description of the repository at `root`."""
    table, source = read_table(root)
    if not table:
        from harness.run.presets import detect_preset

        preset = detect_preset(root)
        if preset is None:
            return Target(root=root, models=[], suites={"all": SuiteSpec(name="all", paths=[])}, generic=True,
                          source="generic: any test file, `--models` matches test file paths")
        table, source = preset
    _check_keys(table, TOP_KEYS, "", source)
    table = _with_preset(table, source)
    suites_raw = table.get("suites", {})
    if not isinstance(suites_raw, dict):
        raise TargetConfigError(f"{source}: key 'suites' must be a table of suite tables")
    suites = {name: _suite(name, raw, source) for name, raw in suites_raw.items()} or \
        {"all": SuiteSpec(name="all", paths=[])}
    models_dir = _opt_str(table, "models_dir", "", source)
    model_paths = _opt_str(table, "model_paths", "", source)
    if model_paths is not None:
        _paths({"paths": model_paths}, "model_paths", source)
    models = (_str_list(table["models"], "models", source) if "models" in table
              else discover_models(root, models_dir, model_paths))
    select = _opt_str(table, "select", "", source)
    model_select = {m: check_select(t, f"model_select.{m}", source, False)
                    for m, t in _str_table(table.get("model_select", {}), "model_select", source).items()}
    important = _str_list(table.get("important", []), "important", source)
    for key, names in (("model_select", list(model_select)), ("important", important)):
        unknown = [n for n in names if models and n not in models]
        if unknown:
            raise TargetConfigError(f"{source}: key '{key}' names unknown model {unknown[0]!r} "
                                    f"(known: {', '.join(models)})")
    default_attr = ([model_paths] if model_paths and "{model}" in model_paths else []) + \
        [p for s in suites.values() for p in s.paths if "{model}" in p]
    sources = _str_list(table.get("model_sources", [f"{models_dir}/{{model}}.py"] if models_dir else []),
                        "model_sources", source)
    core = _str_list(table.get("core", [f"{models_dir}/**"] if models_dir else []), "core", source)
    core_selects = table.get("core_selects", "all")
    if core_selects not in ("all", "important"):
        raise TargetConfigError(f"{source}: key 'core_selects' must be \"all\" or \"important\"")
    return Target(root=root, models=models, suites=suites, models_env=_opt_str(table, "models_env", "", source),
                  model_paths=model_paths, model_sources=sources, core=core, core_selects=core_selects,
                  select=check_select(select, "select", source, True) if select else None,
                  model_select=model_select,
                  attribution=_attribution(table.get("attribution", {}), source, default_attr),
                  install=_opt_str(table, "install", "", source) or None,
                  install_files=_str_list(table.get("install_files", list(DEFAULT_INSTALL_FILES)),
                                          "install_files", source),
                  important=important, events=_events(table.get("events", {}), source, suites), source=source)
