"""Where a bisect's wall time goes: per-probe phases from the engine's and the probe plugin's timestamps,
summed per phase and, per round, along the critical path (the probe that ended the round last).

Engine marks (wall-clock seconds): ``start`` (the worker took the probe), ``checkout`` (worktree at the
commit), ``install`` (installed, when the target says how), ``launch`` (pytest process started or
forked), ``exit`` (it ended) and ``end`` (outcomes read back). Plugin marks: see `probe_plugin`.

Phases of one probe, in seconds: ``worktree`` (start -> checkout), ``install``, ``interpreter``
(launch -> plugin imported: a fresh Python and pytest, or a fork of the probe server),
``startup`` (pytest configure, conftests, plugins: up to collection, less its imports), ``imports``
(import statements up to the end of collection; ``dep_imports``, the part from outside the checkout,
is reported beside it and not added again), ``collection`` (less its imports), ``setup``, ``call``,
``teardown`` (the tests), ``test_other`` (logging, repeats), ``shutdown`` (last test -> process exit)
and ``other`` (the rest: writing the selection, reading results).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PHASES = ("worktree", "install", "interpreter", "startup", "imports", "dep_imports", "collection", "setup",
          "call", "teardown", "test_other", "shutdown", "other")


def read_marks(path: Path) -> dict[str, Any]:
    """The plugin's phase marks from a probe's event log (name -> t, plus collection and test sums)."""
    marks: dict[str, Any] = {}
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return marks
    for line in lines:
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if ev.get("kind") == "phase":
            marks[ev["name"]] = float(ev["t"])
            for key in ("imports_s", "dep_imports_s"):
                if key in ev:
                    marks[f"{ev['name']}:{key}"] = float(ev[key])
            if "deps" in ev:
                marks["deps"] = list(ev["deps"])
        elif ev.get("kind") == "done" and "t" in ev:
            marks["done"] = float(ev["t"])
            for key in ("setup_s", "call_s", "teardown_s"):
                marks[key] = float(ev.get(key) or 0.0)
    return marks


def _span(marks: dict[str, Any], a: str, b: str) -> float:
    if a in marks and b in marks:
        return max(0.0, float(marks[b]) - float(marks[a]))
    return 0.0


def phases_of(marks: dict[str, Any]) -> dict[str, float]:
    """Seconds per phase of one probe (see the module docstring); they add up to its wall time."""
    out = dict.fromkeys(PHASES, 0.0)
    out["worktree"] = _span(marks, "start", "checkout")
    out["install"] = _span(marks, "checkout", "install")
    if "launch" in marks:
        out["interpreter"] = _span(marks, "launch", "plugin_import")
        early = float(marks.get("collect_start:imports_s", 0.0))
        late = max(0.0, float(marks.get("collect_finish:imports_s", early)) - early)
        before = _span(marks, "plugin_import", "collect_start")
        collect = _span(marks, "collect_start", "collect_finish")
        out["startup"] = max(0.0, before - early)
        out["collection"] = max(0.0, collect - late)
        out["imports"] = min(early, before) + min(late, collect)
        out["dep_imports"] = float(marks.get("collect_finish:dep_imports_s", 0.0))
        for key in ("setup", "call", "teardown"):
            out[key] = float(marks.get(f"{key}_s", 0.0))
        run = _span(marks, "collect_finish", "done")
        out["test_other"] = max(0.0, run - out["setup"] - out["call"] - out["teardown"])
        out["shutdown"] = _span(marks, "done", "exit")
        if "plugin_import" not in marks:  # never got as far as the plugin: all of it is start-up
            out["interpreter"] = _span(marks, "launch", "exit")
    total = _span(marks, "start", "end")
    out["other"] = max(0.0, total - sum(v for k, v in out.items() if k != "dep_imports"))
    return {k: round(v, 4) for k, v in out.items()}


@dataclass
class CostLog:
    """Phases of every probe, kept per round, and the probe-server / fresh-interpreter split."""

    rounds: list[list[tuple[float, dict[str, float], str]]] = field(default_factory=list)
    walls: list[float] = field(default_factory=list)  # each round's wall time, start to last result

    def new_round(self) -> None:
        self.rounds.append([])

    def end_round(self, wall_s: float) -> None:
        self.walls.append(wall_s)

    def add(self, wall_s: float, phases: dict[str, float], path: str) -> None:
        if not self.rounds:
            self.new_round()
        self.rounds[-1].append((wall_s, phases, path))

    def to_json(self) -> dict[str, Any]:
        """{"phases": seconds per phase over all probes, "paths": probes per way of starting pytest,
        "rounds": per round, its probes, its wall time and the phases of its slowest probe ("critical"),
        "critical_s": the rounds' wall times added up}. With fewer workers than probes a round's wall
        time holds several probes one after the other."""
        total = dict.fromkeys(PHASES, 0.0)
        paths: dict[str, int] = {}
        rounds = []
        for i, probes in enumerate(self.rounds, 1):
            for _wall, phases, path in probes:
                for k, v in phases.items():
                    total[k] = total.get(k, 0.0) + v
                paths[path] = paths.get(path, 0) + 1
            if probes:
                wall, slowest, path = max(probes, key=lambda p: p[0])
                wall = self.walls[i - 1] if i <= len(self.walls) else wall
                rounds.append({"round": i, "probes": len(probes), "wall_s": round(wall, 3), "path": path,
                               "critical": {k: v for k, v in slowest.items() if v}})
        return {"phases": {k: round(v, 3) for k, v in total.items()}, "paths": paths, "rounds": rounds,
                "critical_s": round(sum(r["wall_s"] for r in rounds), 3)}
