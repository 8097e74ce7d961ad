"""pytest plugin for `harness targets check` (`-p harness.run.collect_check`, with `--collect-only`):
for every collected test, which models' selection picks it (paths, markers, `-k`, node-id globs,
evaluated with pytest's own expression matchers, so counts equal what `pytest -k/-m` would select)
and which model the attribution rules give it. Writes one JSON file named by HARNESS_CHECK_SPEC's
`out`; tests are not run."""

from __future__ import annotations

import json
import os
from typing import Any

from _pytest.mark import KeywordMatcher, MarkMatcher
from _pytest.mark.expression import Expression

from harness.run.attribution import AttributionRules, attribute, glob_regex

ENV = "HARNESS_CHECK_SPEC"


def _under(nodeid: str, path: str) -> bool:
    path = path.rstrip("/")
    return path in (".", "") or nodeid == path or nodeid.startswith((path + "/", path + "::", path + "["))


def _compile(expr: str | None, option: str) -> Expression | None:
    if not expr:
        return None
    try:
        return Expression.compile(expr)
    except SyntaxError as exc:  # pytest's ParseError is a SyntaxError
        raise SystemExit(f"harness: bad {option} expression {expr!r}: {exc}") from None


class Check:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.rules = AttributionRules.from_json(json.dumps(spec["attribution"]))
        self.models = spec["models"]
        self.per_model = {m: {"paths": s["paths"], "k": _compile(s.get("keyword"), "-k"),
                              "m": _compile(s.get("markers"), "-m"), "globs": [glob_regex(g) for g in s["globs"]]}
                          for m, s in spec["per_model"].items()}
        self.errors: list[str] = []

    def pytest_collectreport(self, report: Any) -> None:
        if report.failed:
            self.errors.append(report.nodeid or ".")

    def pytest_collection_modifyitems(self, session: Any, config: Any, items: list[Any]) -> None:
        rows = []
        used: set[str] = set()
        for item in items:
            marks = list(item.iter_markers())
            used |= {mk.name for mk in marks}
            kw, mm = KeywordMatcher.from_item(item), MarkMatcher.from_markers(marks)
            picked = []
            for model, sel in self.per_model.items():
                if not any(_under(item.nodeid, p) for p in sel["paths"]):
                    continue
                if sel["m"] is not None and not sel["m"].evaluate(mm):
                    continue
                if sel["k"] is not None and not sel["k"].evaluate(kw):
                    continue
                if sel["globs"] and not any(g.match(item.nodeid) for g in sel["globs"]):
                    continue
                picked.append(model)
            params = getattr(getattr(item, "callspec", None), "params", {}) or {}
            rows.append({"nodeid": item.nodeid, "model": attribute(item.nodeid, params, self.models, self.rules),
                         "selected_by": picked})
        registered = {line.split(":", 1)[0].split("(", 1)[0].strip() for line in config.getini("markers")}
        with open(self.spec["out"], "w", encoding="utf-8") as fh:
            json.dump({"items": rows, "markers_used": sorted(used), "markers_registered": sorted(registered),
                       "collect_errors": self.errors}, fh)


def pytest_configure(config: Any) -> None:
    path = os.environ.get(ENV)
    if path:
        with open(path, encoding="utf-8") as fh:
            config.pluginmanager.register(Check(json.load(fh)), "harness-collect-check")
