"""pytest plugin loaded into every bisect probe: runs only the selected tests and logs each attempt.

Standard library and pytest only: it runs inside the target's checkout at an arbitrary commit, where a
`harness` package may be another version or absent, so it is copied under a private module name and
depends on nothing of ours.

Options: ``--hb-select FILE`` (JSON list of node ids; every other collected item is deselected, and a
selected id that is not collected simply does not appear), ``--hb-out FILE`` (JSONL events),
``--hb-repeat N`` (run each selected test N times in this process) and ``--hb-metric NAME`` (also log
this user property, or this key of a ``harness_benchmark`` property's measurements, per attempt).

Events, one JSON object per line, flushed as written: ``collect_error`` (nodeid, message),
``collected`` (nodeids), ``deselected`` (nodeids: selected ids the target's own options or hooks
deselected), ``start`` (nodeid, attempt), ``result`` (nodeid, attempt, outcome, duration_s,
message, metric) and ``done`` (exitstatus). A ``start`` without its ``result`` means the process died.

Where the probe's time goes, for the bisect's `cost`: ``phase`` events (name, t = wall-clock seconds):
``plugin_import`` (this module imported), ``sessionstart``, ``collect_start``, ``collect_finish``
(with ``imports_s``: seconds in import statements from plugin import to the end of collection,
``dep_imports_s``: the part spent importing modules from outside the checkout, and ``deps``: the
top-level names of those modules, which a probe server may preload) and ``done`` (with ``setup_s``,
``call_s``, ``teardown_s``: the tests' phases summed).
"""

from __future__ import annotations

import builtins
import json
import os
import sys
import time
from typing import Any

import pytest
from _pytest.runner import runtestprotocol

FAILING = ("failed", "error", "crashed", "timeout", "xpass")
IMPORTED_AT = time.time()


class ImportClock:
    """Times import statements (outermost only) and those of modules from outside the checkout, whose
    top-level names are not in `local` (the checkout's own top-level modules and packages)."""

    def __init__(self) -> None:
        self.local: set[str] = set()
        self.total = self.deps = 0.0
        self.names: set[str] = set()
        self.depth = 0
        self.in_dep = False
        self.orig = builtins.__import__

    def start(self) -> None:
        builtins.__import__ = self.hook

    def stop(self) -> None:
        if builtins.__import__ is self.hook:
            builtins.__import__ = self.orig

    def hook(self, name: str, globals: Any = None, locals: Any = None, fromlist: Any = (), level: int = 0) -> Any:
        if level or self.in_dep or name in sys.modules:
            return self.orig(name, globals, locals, fromlist, level)
        top = name.partition(".")[0]
        dep = top not in self.local
        started = time.perf_counter()
        self.depth += 1
        self.in_dep = dep
        try:
            return self.orig(name, globals, locals, fromlist, level)
        finally:
            spent = time.perf_counter() - started
            self.depth -= 1
            if dep:
                self.in_dep = False
                self.deps += spent
                if top in sys.modules:
                    self.names.add(top)
            if self.depth == 0:
                self.total += spent


def local_names(*folders: str) -> set[str]:
    """Top-level module and package names a checkout folder provides."""
    names: set[str] = set()
    for folder in folders:
        try:
            entries = os.listdir(folder)
        except OSError:
            continue
        for entry in entries:
            if entry.endswith(".py"):
                names.add(entry[:-3])
            elif entry.isidentifier() and os.path.isdir(os.path.join(folder, entry)):
                names.add(entry)
    return names


CLOCK = ImportClock()
CLOCK.local = local_names(os.getcwd())
CLOCK.start()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("harness-bisect-probe")
    group.addoption("--hb-select", default=None)
    group.addoption("--hb-out", default=None)
    group.addoption("--hb-repeat", type=int, default=1)
    group.addoption("--hb-metric", default=None)
    group.addoption("--hb-tree", default=None)


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("hb_out") and not hasattr(config, "workerinput"):
        config.pluginmanager.register(ProbeLog(config), "hb-probe-log")


def _message(report: Any) -> str | None:
    if isinstance(report.longrepr, tuple) and len(report.longrepr) == 3:  # a skip: (path, line, reason)
        reason = str(report.longrepr[2])
        return reason.removeprefix("Skipped: ")[:500]
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None and getattr(crash, "message", None):
        return str(crash.message)[:500]
    text = getattr(report, "longreprtext", "") or ""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1][:500] if lines else None


def outcome_of(reports: list[Any]) -> tuple[str, str | None, float]:
    """Outcome (harness vocabulary), message and call duration of one attempt's phase reports."""
    outcome, message, duration = "passed", None, 0.0
    for rep in reports:
        xfail = hasattr(rep, "wasxfail")
        if rep.when == "call":
            duration = float(rep.duration)
        if rep.when in ("setup", "call"):
            if rep.failed:
                if rep.when == "call" and xfail:
                    return "xpass", _message(rep), duration
                return ("failed" if rep.when == "call" else "error"), _message(rep), duration
            if rep.skipped:
                outcome, message = ("xfail" if xfail else "skipped"), _message(rep)
            elif rep.when == "call" and xfail:
                outcome = "xpass"
        elif rep.when == "teardown" and rep.failed and outcome not in FAILING:
            return "error", _message(rep), duration
    return outcome, message, duration


def _metric(props: list[tuple[str, Any]], name: str | None) -> float | None:
    if not name:
        return None
    found: Any = None
    for key, value in props:
        if key == name:
            found = value
        elif key == "harness_benchmark" and isinstance(value, dict):
            measured = value.get("measurements") or {}
            node: Any = measured
            for part in name.split("."):
                node = node.get(part) if isinstance(node, dict) else None
            if node is not None:
                found = node
    try:
        return float(found) if found is not None else None
    except (TypeError, ValueError):
        return None


class ProbeLog:
    """Selects the probe's tests, repeats them, and logs events to the JSONL file."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        select = config.getoption("hb_select")
        self.selected: set[str] | None = None
        if select:
            with open(select, encoding="utf-8") as fh:
                self.selected = set(json.load(fh))
        self.repeat = max(1, int(config.getoption("hb_repeat")))
        self.metric = config.getoption("hb_metric")
        self.names: dict[pytest.Item, str] = {}
        self.fh = open(config.getoption("hb_out"), "a", encoding="utf-8")  # noqa: SIM115
        self.sums = {"setup": 0.0, "call": 0.0, "teardown": 0.0}
        tree = config.getoption("hb_tree")
        CLOCK.local |= local_names(str(config.rootpath), *([tree] if tree else []))
        self.phase("plugin_import", IMPORTED_AT)

    def phase(self, name: str, t: float | None = None, **extra: Any) -> None:
        self.emit(kind="phase", name=name, t=time.time() if t is None else t, **extra)

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self.phase("sessionstart")

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection(self, session: pytest.Session) -> None:
        self.phase("collect_start", imports_s=round(CLOCK.total, 6), dep_imports_s=round(CLOCK.deps, 6))

    @pytest.hookimpl(trylast=True)
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        CLOCK.stop()
        self.phase("collect_finish", imports_s=round(CLOCK.total, 6), dep_imports_s=round(CLOCK.deps, 6),
                   deps=sorted(CLOCK.names))

    def emit(self, **event: Any) -> None:
        self.fh.write(json.dumps(event, default=str) + "\n")
        self.fh.flush()  # the OS keeps it if this process dies next

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.emit(kind="collect_error", nodeid=report.nodeid, message=_message(report))

    def name_of(self, item: pytest.Item) -> str:
        """The item's id as the caller wrote it: relative to the rootdir, or to the invocation folder
        (they differ when the target has no ini file at its root)."""
        if self.selected is None or item.nodeid in self.selected:
            return item.nodeid
        rest = item.nodeid.split("::", 1)[1] if "::" in item.nodeid else ""
        rel = os.path.relpath(str(item.path), str(self.config.invocation_params.dir)).replace(os.sep, "/")
        return f"{rel}::{rest}" if rest else rel

    def pytest_deselected(self, items: list[pytest.Item]) -> None:
        """Selected tests that the target itself deselects (its `-k`/`-m` addopts, its hooks) did not run."""
        if self.selected is None:
            return
        names = [name for name in (self.name_of(it) for it in items) if name in self.selected]
        if names:
            self.emit(kind="deselected", nodeids=names)

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        self.names = {it: self.name_of(it) for it in items}
        if self.selected is not None:
            keep = [it for it in items if self.names[it] in self.selected]
            dropped = [it for it in items if self.names[it] not in self.selected]
            if dropped:
                config.hook.pytest_deselected(items=dropped)
            items[:] = keep
        self.emit(kind="collected", nodeids=[self.names[it] for it in items])

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: pytest.Item | None) -> bool:
        item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
        name = self.names.get(item, item.nodeid)
        for attempt in range(1, self.repeat + 1):
            last = attempt == self.repeat
            item.user_properties = []
            self.emit(kind="start", nodeid=name, attempt=attempt)
            # Between attempts tear down the test's own fixtures only (its parent's stay up).
            reports = runtestprotocol(item, nextitem=nextitem if last else item.parent, log=False)  # type: ignore[arg-type]
            for rep in reports:
                item.ihook.pytest_runtest_logreport(report=rep)
                if rep.when in self.sums:
                    self.sums[rep.when] += float(rep.duration)
            outcome, message, duration = outcome_of(reports)
            props = [p for rep in reports for p in rep.user_properties]
            self.emit(kind="result", nodeid=name, attempt=attempt, outcome=outcome,
                      duration_s=duration, message=message, metric=_metric(props, self.metric))
            if not last:
                item._initrequest()  # fresh fixture request for the next attempt
        item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
        return True

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        CLOCK.stop()
        self.emit(kind="done", exitstatus=int(exitstatus), t=time.time(),
                  **{f"{k}_s": round(v, 6) for k, v in self.sums.items()})
        self.fh.close()
