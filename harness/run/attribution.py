"""Which model family a test belongs to, and `{model}` glob patterns. Standard library only: the
pytest plugin imports this module in the test process, where it must stay cheap.

Rules (the target's `[tool.harness.attribution]`, see docs/TARGETS.md) travel to the test process as
JSON in the `HARNESS_ATTRIBUTION` environment variable; known model names in `--harness-models`.
A test is attributed, first match wins, by:
  1. a parameter named in `params` (default `model_name`, `model`) whose value is a known model;
  2. a parameter value or the test's parameter id matching an `ids` glob (`"Llama-*" = "llama"`),
     then the `regex` (its `model` group, else its first group, lower-cased, must be a known model);
  3. the test's path against the `path` globs with `{model}` (e.g. `tests/models/{model}/**`);
  4. a known name that is a folder of the path, or the file `test_<name>.py` / `test_modeling_<name>.py`.
Anything else is `(unattributed)` under `harness run`.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

UNATTRIBUTED = "(unattributed)"
ENV = "HARNESS_ATTRIBUTION"
DEFAULT_PARAMS = ("model_name", "model")


@functools.lru_cache(maxsize=1024)
def glob_regex(pattern: str, prefix: bool = False) -> re.Pattern[str]:
    """A glob over '/'-separated paths or node ids: `**` any text, `*` no '/', `?` one character,
    `{model}` one name (captured as group `model`); everything else literal (brackets included, so a
    node id like `t.py::test[Llama-*]` is a pattern). `prefix`: also match anything below the pattern."""
    out, i, seen_model = [], 0, False
    while i < len(pattern):
        if pattern.startswith("{model}", i):
            out.append("(?P=model)" if seen_model else "(?P<model>[^/:\\[\\]]+?)")
            seen_model, i = True, i + 7
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    tail = "(?:/.*|::.*)?" if prefix else ""
    return re.compile("^" + "".join(out) + tail + "$")


def match_model(pattern: str, path: str, prefix: bool = True) -> str | None:
    """The `{model}` a path matches `pattern` with ('' when the pattern has none), or None."""
    m = glob_regex(pattern.strip("/"), prefix).match(path.lstrip("./") if path.startswith("./") else path)
    if m is None:
        return None
    return m.groupdict().get("model") or ""


@dataclass(frozen=True)
class AttributionRules:
    """How a test is attributed to a model (see the module docstring)."""

    path: tuple[str, ...] = ()
    params: tuple[str, ...] = DEFAULT_PARAMS
    ids: tuple[tuple[str, str], ...] = ()
    regex: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> AttributionRules:
        raw = json.loads(text)
        return cls(path=tuple(raw.get("path", ())), params=tuple(raw.get("params", DEFAULT_PARAMS)),
                   ids=tuple((str(a), str(b)) for a, b in raw.get("ids", ())), regex=raw.get("regex"))


@functools.lru_cache(maxsize=8)
@functools.lru_cache(maxsize=8)
def rules_from_env(text: str | None) -> AttributionRules:
    """Rules as passed to the test process (defaults when none)."""
    return AttributionRules.from_json(text) if text else AttributionRules()


def _from_id(value: str, rules: AttributionRules, known: tuple[str, ...]) -> str | None:
    for glob, model in rules.ids:
        if glob_regex(glob).match(value) or glob_regex(glob.lower()).match(value.lower()):
            return model
    if rules.regex:
        m = re.search(rules.regex, value)
        if m:
            got = m.groupdict().get("model") or (m.group(1) if m.groups() else m.group(0))
            got = (got or "").lower()
            if got in known or not known:
                return got or None
    low = value.lower()
    return low if low in known else None


def param_id(nodeid: str) -> str:
    """The parameter id of a node id (`t.py::test[Llama-2-7b-hf]` → `Llama-2-7b-hf`), or ''."""
    name = nodeid.rsplit("::", 1)[-1]
    return name[name.index("[") + 1:-1] if "[" in name and name.endswith("]") else ""


def attribute(nodeid: str, params: Mapping[str, Any], known: Iterable[str], rules: AttributionRules) -> str | None:
    """The model of one test, or None (see the module docstring for the order)."""
    names = tuple(sorted(known, key=len, reverse=True))
    for key in rules.params:
        value = params.get(key)
        if isinstance(value, str) and (value in names or not names) and value:
            return value
    if not names and not rules.ids and not rules.regex and not rules.path:
        return None  # nothing else could match: no known models, no rules (a plain pytest session)
    values = [v for v in params.values() if isinstance(v, str)]
    pid = param_id(nodeid)
    for value in [*(params.get(k) for k in rules.params if isinstance(params.get(k), str)), *values,
                  *([pid] if pid else []), *pid.split("-")]:
        if value:
            got = _from_id(str(value), rules, names)
            if got:
                return got
    return _from_path(nodeid.split("::", 1)[0], rules.path, names)


@functools.lru_cache(maxsize=4096)
def _from_path(path: str, patterns: tuple[str, ...], known: tuple[str, ...]) -> str | None:
    for pattern in patterns:
        got = match_model(pattern, path)
        if got and (got in known or not known):
            return got
    parts = path.split("/")
    for name in known:
        if name in parts[:-1] or parts[-1] in (f"test_{name}.py", f"test_modeling_{name}.py"):
            return name
    return None


def attribute_item(item: Any, known: list[str]) -> str | None:
    """The plugin's entry point: a collected pytest item, rules from HARNESS_ATTRIBUTION. Under
    `harness run` (rules passed) a test no rule attributes is `(unattributed)`, else None."""
    text = os.environ.get(ENV)
    params = getattr(getattr(item, "callspec", None), "params", {}) or {}
    got = attribute(item.nodeid, params, known, rules_from_env(text))
    return got if got is not None else (UNATTRIBUTED if text else None)


__all__ = ["UNATTRIBUTED", "AttributionRules", "attribute", "attribute_item", "glob_regex", "match_model",
           "param_id"]
