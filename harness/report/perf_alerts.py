"""Performance-regression alerts: change points in each benchmark metric series, kept in `perf_alerts`.

A series is one (model, config, metric, GPU, branch): the values of one `model_measurements` key (or
a numeric key of its `roofline` object, as `roofline.<key>`) over the commits that were benchmarked,
oldest first, one point per commit (the median when a commit was measured more than once). A change
point found by the detector becomes an alert: the commits either side, the means before and after,
the relative change and the p-value. A regression is handed to `harness bisect --perf`.

Direction is declared, never guessed: each stored `measurements` object carries a `_meta` entry
(written where the metric is recorded, `suites/benchmark/metrics.py`):
`{"metrics": {"<metric>": {"better": "higher" | "lower" | null, "unit": "s"}}}`. A series whose
metric has no declaration is not analysed; the result names it once in `undeclared`. `better: null`
marks a recorded number that is not a performance figure (never analysed, not reported).

When a benchmark carries a `config`, the stored metric is `<metric>@<config>` (perf_alerts has no
config column), and `bisect_command()` passes the bare metric name.
"""

from __future__ import annotations

import shlex
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, select

from harness.errors import HarnessError
from harness.report.changepoint import ChangeDetector, EDivisive
from harness.store.db import Store
from harness.store.schema import Benchmark, ModelMeasurement, PerfAlert, TestResult
from harness.store.writer import insert_new

META_KEY = "_meta"  # the declarations inside a `measurements` object
NEARBY_POINTS = 3  # an alert this close to a recorded one in the same series is the same change
BISECT_MARGIN = 3  # the change is located within a few points: bisect this many points either side


class PerfAlertsError(HarnessError):
    """Bad detector settings."""


@dataclass(frozen=True)
class Declaration:
    """How a metric is read: which way is better ("higher" / "lower" / None) and its unit."""

    better: str | None
    unit: str | None = None


def declarations_of(measurements: dict[str, Any] | None) -> dict[str, Declaration]:
    """The `_meta.metrics` declarations of one stored `measurements` object (malformed entries ignored)."""
    meta = (measurements or {}).get(META_KEY)
    table = meta.get("metrics") if isinstance(meta, dict) else None
    out: dict[str, Declaration] = {}
    for name, entry in (table or {}).items() if isinstance(table, dict) else ():
        if isinstance(entry, dict) and entry.get("better") in ("higher", "lower", None):
            unit = entry.get("unit")
            out[str(name)] = Declaration(entry.get("better"), unit if isinstance(unit, str) else None)
    return out


@dataclass(frozen=True)
class SeriesKey:
    """Identity of one metric series."""

    model: str | None
    metric: str
    gpu_name: str | None
    branch: str | None
    config: str | None = None

    @property
    def stored_metric(self) -> str:
        return f"{self.metric}@{self.config}" if self.config else self.metric


@dataclass(frozen=True)
class Point:
    """One benchmarked commit of a series."""

    commit: str
    value: float
    created_at: datetime
    run_id: int | None


@dataclass
class Alert:
    """A change point in one series."""

    key: SeriesKey
    index: int
    commit_before: str | None
    commit_after: str
    value_before: float
    value_after: float
    change: float  # relative change of the mean, after vs before
    p_value: float
    direction: str  # "regression" | "improvement"
    run_id: int | None
    points: int
    bisect_good: str | None = None  # widened by BISECT_MARGIN points: the estimate may be off a little
    bisect_bad: str | None = None
    new: bool = True
    test: str | None = None  # the benchmark's node id: what `harness bisect --perf` re-runs
    better: str = "lower"  # declared where the metric is recorded
    unit: str | None = None

    @property
    def threshold(self) -> float:
        """The metric value halfway between the two regimes: `harness bisect --perf M --threshold X`
        takes a bare number as the value that separates good from bad (either direction)."""
        return (self.value_before + self.value_after) / 2.0

    def bisect_command(self, repo: str = ".") -> str:
        good = self.bisect_good or self.commit_before or f"{self.commit_after}~1"
        bad = self.bisect_bad or self.commit_after
        tests = f" --tests {shlex.quote(self.test)}" if self.test else ""
        q = shlex.quote
        return (f"harness bisect --repo {q(repo)} --good {q(good)} --bad {q(bad)}{tests} "
                f"--perf {q(self.key.metric)} --threshold {self.threshold:.6g}")

    def to_json(self, repo: str = ".") -> dict[str, Any]:
        return {
            "model": self.key.model, "metric": self.key.metric, "config": self.key.config,
            "gpu": self.key.gpu_name, "branch": self.key.branch, "commit_before": self.commit_before,
            "commit_after": self.commit_after, "value_before": self.value_before,
            "value_after": self.value_after, "change": self.change, "p_value": self.p_value,
            "direction": self.direction, "better": self.better, "unit": self.unit, "new": self.new,
            "points": self.points,
            "bisect": self.bisect_command(repo) if self.direction == "regression" else None,
        }


@dataclass
class PerfAlertsResult:
    """What one analysis looked at and found."""

    series: int = 0
    points: int = 0
    alerts: list[Alert] = field(default_factory=list)
    undeclared: list[str] = field(default_factory=list)  # metric names with no declared direction

    @property
    def new_regressions(self) -> list[Alert]:
        return [a for a in self.alerts if a.new and a.direction == "regression"]


def _numeric(measurements: dict[str, Any]) -> Iterable[tuple[str, float]]:
    for name, value in (measurements or {}).items():
        if isinstance(value, bool):
            continue
        if isinstance(value, (int, float)):
            yield name, float(value)
        elif name == "roofline" and isinstance(value, dict):
            for sub, v in value.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    yield f"roofline.{sub}", float(v)


def load_series(store: Store, *, branch: str | None = None, gpu: str | None = None,
                model: str | None = None, metrics: list[str] | None = None,
                declared: dict[SeriesKey, Declaration] | None = None) -> dict[SeriesKey, list[Point]]:
    """Every metric series in the store, one median point per commit, oldest commit first; fills
    `declared` with each series' declaration (the newest row that declares the metric wins)."""
    b, m = Benchmark.__table__, ModelMeasurement.__table__
    conds = [c for c in (b.c.branch == branch if branch else None, b.c.gpu_name == gpu if gpu else None,
                         b.c.model == model if model else None) if c is not None]
    query = (select(b.c.benchmark_id, b.c.branch, b.c.commit_id, b.c.gpu_name, b.c.model, b.c.config,
                    b.c.created_at, b.c.run_id, m.c.measurements)
             .join(m, m.c.benchmark_id == b.c.benchmark_id)
             .where(and_(True, *conds)).order_by(b.c.created_at, b.c.benchmark_id))
    raw: dict[SeriesKey, dict[str, list[Any]]] = defaultdict(dict)
    with store.session() as session:
        for row in session.execute(query):
            commit = row.commit_id or f"benchmark-{row.benchmark_id}"
            decls = declarations_of(row.measurements)
            for metric, value in _numeric(row.measurements):
                if metrics and metric not in metrics:
                    continue
                key = SeriesKey(row.model, metric, row.gpu_name, row.branch, row.config)
                if declared is not None and metric in decls:
                    declared[key] = decls[metric]
                slot = raw[key].setdefault(commit, [[], row.created_at, row.run_id])
                slot[0].append(value)
                slot[2] = row.run_id if row.run_id is not None else slot[2]
    return {key: [Point(c, statistics.median(v[0]), v[1], v[2]) for c, v in by_commit.items()]
            for key, by_commit in raw.items()}


def detect(key: SeriesKey, points: list[Point], detector: ChangeDetector, declared: Declaration) -> list[Alert]:
    """Alerts for the change points of one series whose direction is `declared`."""
    if declared.better not in ("higher", "lower"):
        raise PerfAlertsError(f"{key.metric}: no direction declared, cannot tell a regression")
    alerts = []
    for cp in detector.change_points([p.value for p in points]):
        worse = cp.mean_after < cp.mean_before if declared.better == "higher" else (
            cp.mean_after > cp.mean_before)
        after = points[cp.index]
        alerts.append(Alert(
            key=key, index=cp.index, commit_before=points[cp.index - 1].commit, commit_after=after.commit,
            value_before=cp.mean_before, value_after=cp.mean_after, change=cp.forward_change,
            p_value=cp.pvalue, direction="regression" if worse else "improvement", run_id=after.run_id,
            points=len(points), bisect_good=points[max(0, cp.index - 1 - BISECT_MARGIN)].commit,
            bisect_bad=points[min(len(points) - 1, cp.index + BISECT_MARGIN)].commit,
            better=declared.better, unit=declared.unit))
    return alerts


def _known(store: Store, key: SeriesKey) -> list[str]:
    t = PerfAlert.__table__
    cond = and_(t.c.metric == key.stored_metric,
                *[(col.is_(None) if val is None else col == val)
                  for col, val in ((t.c.model, key.model), (t.c.gpu_name, key.gpu_name),
                                   (t.c.branch, key.branch))])
    with store.session() as session:
        return list(session.execute(select(t.c.commit_after).where(cond)).scalars())


def _benchmark_test(store: Store, key: SeriesKey, run_id: int | None) -> str | None:
    """The node id of the test that measured this series (through `benchmarks.nodeid_hash`)."""
    b, r = Benchmark.__table__, TestResult.__table__
    conds = [b.c.model == key.model if key.model else b.c.model.is_(None), b.c.nodeid_hash.is_not(None)]
    if key.config:
        conds.append(b.c.config == key.config)
    query = (select(r.c.nodeid).join(b, and_(b.c.nodeid_hash == r.c.nodeid_hash, b.c.run_id == r.c.run_id))
             .where(and_(*conds)).order_by((b.c.run_id == run_id).desc(), b.c.benchmark_id.desc()).limit(1))
    with store.session() as session:
        return session.execute(query).scalar()


def _mark_known(store: Store, key: SeriesKey, points: list[Point], alerts: list[Alert]) -> None:
    """Flag alerts already recorded: same commit, or within NEARBY_POINTS of a recorded one (a change
    point may move by a point or two as more data arrives)."""
    position = {p.commit: i for i, p in enumerate(points)}
    recorded = [position[c] for c in _known(store, key) if c in position]
    for alert in alerts:
        alert.new = not any(abs(alert.index - r) <= NEARBY_POINTS for r in recorded)


def record(store: Store, alerts: list[Alert]) -> int:
    """Insert the new alerts into `perf_alerts`, in one transaction; returns how many. An alert whose
    natural key (series, commit after) another writer stored first is no longer `new`."""
    new = [a for a in alerts if a.new]
    if new:
        with store.session() as session:
            for a in new:
                a.new = insert_new(session.connection(), PerfAlert.__table__, {
                    "metric": a.key.stored_metric, "model": a.key.model, "gpu_name": a.key.gpu_name,
                    "branch": a.key.branch, "commit_before": a.commit_before, "commit_after": a.commit_after,
                    "value_before": a.value_before, "value_after": a.value_after, "magnitude": a.change,
                    "p_value": a.p_value, "direction": a.direction, "run_id": a.run_id})
    return sum(a.new for a in new)


def run_perf_alerts(store: Store, *, detector: ChangeDetector | None = None, branch: str | None = None,
                    gpu: str | None = None, model: str | None = None, metrics: list[str] | None = None,
                    save: bool = True) -> PerfAlertsResult:
    """Analyse every matching series, mark alerts already known, and record the new ones."""
    detector = detector or default_detector()
    result = PerfAlertsResult()
    declared: dict[SeriesKey, Declaration] = {}
    series = load_series(store, branch=branch, gpu=gpu, model=model, metrics=metrics, declared=declared)
    if not series:  # nothing to analyse is never "0 new regressions"
        filters = " ".join(f"--{flag} {value}" for flag, value in (("branch", branch), ("gpu", gpu), ("model", model))
                           if value) + "".join(f" --metric {m}" for m in metrics or [])
        raise PerfAlertsError(f"no benchmark series match {filters.strip()}: nothing analysed" if filters.strip()
                              else "the store has no benchmark results: nothing analysed (record some with the "
                              "benchmark suite first)")
    undeclared: set[str] = set()
    for key in sorted(series, key=lambda k: tuple(str(v) for v in (k.model, k.metric, k.config,
                                                                      k.gpu_name, k.branch))):
        points = series[key]
        decl = declared.get(key)
        if decl is None:
            undeclared.add(key.metric)
            continue
        if decl.better is None:  # declared as informational: recorded, never alerted on
            continue
        result.series += 1
        result.points += len(points)
        alerts = detect(key, points, detector, decl)
        _mark_known(store, key, points, alerts)
        for alert in alerts:
            if alert.direction == "regression":
                alert.test = _benchmark_test(store, key, alert.run_id)
        result.alerts.extend(alerts)
    result.undeclared = sorted(undeclared)
    if save:
        record(store, result.alerts)
    return result


def default_detector(window: int = 50, max_pvalue: float = 0.001, min_magnitude: float = 0.02) -> EDivisive:
    """The detector `harness perf-alerts` uses (defaults measured in benchmarks/bench_changepoint.py)."""
    if window < 4:
        raise PerfAlertsError(f"--window {window} is too small: use at least 4 points (default 50)")
    if not 0.0 < max_pvalue < 1.0:
        raise PerfAlertsError(f"--max-pvalue {max_pvalue} must be between 0 and 1 (default 0.001)")
    if min_magnitude < 0.0:
        raise PerfAlertsError(f"--min-magnitude {min_magnitude} must be >= 0 (0.02 = 2 %)")
    return EDivisive(window=window, max_pvalue=max_pvalue, min_magnitude=min_magnitude)


def to_json(result: PerfAlertsResult, repo: str = ".") -> dict[str, Any]:
    """The `harness perf-alerts --json` object."""
    return {"series": result.series, "points": result.points,
            "new_regressions": len(result.new_regressions), "undeclared": result.undeclared,
            "alerts": [a.to_json(repo) for a in result.alerts]}


def undeclared_lines(result: PerfAlertsResult) -> list[str]:
    """One line per metric that was not analysed for want of a declared direction."""
    return [f"harness: not alerting on {name}: it declares no direction (higher or lower is better) "
            f"where it is recorded" for name in result.undeclared]


def summary_lines(result: PerfAlertsResult, repo: str = ".") -> list[str]:
    """Human-readable lines: one per alert, and the bisect command of each new regression."""
    lines = [f"analysed {result.series} series ({result.points} points): {len(result.alerts)} change "
             f"point(s), {len(result.new_regressions)} new regression(s)"]
    for a in result.alerts:
        k = a.key
        where = ", ".join(str(v) for v in (k.model, k.config, k.gpu_name, k.branch) if v)
        unit = f" {a.unit}" if a.unit else ""
        lines.append(f"{'NEW ' if a.new else ''}{a.direction}: {k.metric} ({where}) {a.value_before:.4g} -> "
                     f"{a.value_after:.4g}{unit} ({a.change:+.1%}, {a.better} is better, p={a.p_value:.2g}) at "
                     f"{(a.commit_before or '?')[:10]}..{a.commit_after[:10]}")
        if a.new and a.direction == "regression":
            lines.append(f"  {a.bisect_command(repo)}")
    return lines
