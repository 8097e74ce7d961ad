"""Live progress and the end-of-run summary table (rich)."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from harness.bundle import ResultRecord
from harness.store.schema import FAILING_OUTCOMES, nodeid_hash


@dataclass
class RunTally:
    """Counts and timings of a run's results, grouped by model and suite."""

    results: list[ResultRecord] = field(default_factory=list)
    suite_wall_s: dict[str, float] = field(default_factory=dict)

    def add(self, result: ResultRecord) -> None:
        self.results.append(result)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for r in self.results:
            out[r.outcome] += 1
        return {k: out.get(k, 0) for k in ("passed", "failed", "error", "skipped")} | dict(out)

    def failing(self) -> int:
        return sum(1 for r in self.results if r.outcome in FAILING_OUTCOMES)


def format_eta(seconds: float | None) -> str:
    """`1m20s`, `45s`, `2h05m`, or `?` when there is nothing to go on yet."""
    if seconds is None:
        return "?"
    s = max(0, int(round(seconds)))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


@dataclass
class SuiteProgress:
    """One suite's progress: the tests pytest selected, those done, and what is expected to remain.

    `expected` holds the store's last known duration of each selected test that has one; the ETA
    scales the remaining expected test time by the wall time this run has taken per second of test time
    so far (which absorbs the number of workers), else extrapolates the running average."""

    name: str
    workers: int = 1
    started: float = field(default_factory=time.monotonic)
    total: int = 0
    done: int = 0
    failed: int = 0
    observed_s: float = 0.0
    expected: dict[str, float] = field(default_factory=dict)
    expected_left_s: float = 0.0
    unknown_left: int = 0

    def collected(self, ids: list[str], history: dict[str, float]) -> None:
        self.total += len(ids)
        for nodeid in ids:
            known = history.get(nodeid_hash(nodeid)) if history else None
            if known is None:
                self.unknown_left += 1
            else:
                self.expected[nodeid] = known
                self.expected_left_s += known

    def result(self, r: ResultRecord) -> None:
        self.done += 1
        self.total = max(self.total, self.done)
        self.failed += r.outcome in FAILING_OUTCOMES
        self.observed_s += r.duration_s or 0.0
        if r.nodeid in self.expected:
            self.expected_left_s -= self.expected.pop(r.nodeid)
        elif self.unknown_left:
            self.unknown_left -= 1

    def eta_s(self, now: float | None = None) -> float | None:
        left = self.total - self.done
        if left <= 0:
            return 0.0 if self.total else None
        elapsed = (now if now is not None else time.monotonic()) - self.started
        known = len(self.expected)
        per_test = (self.observed_s / self.done if self.done else
                    (self.expected_left_s / known if known else None))
        if per_test is None:
            return None
        remaining_test_s = self.expected_left_s + self.unknown_left * per_test
        if self.done and self.observed_s > 0:
            return remaining_test_s * elapsed / self.observed_s
        if self.done:
            return elapsed * left / self.done
        return remaining_test_s / max(1, self.workers)

    def line(self, now: float | None = None) -> str:
        total = str(self.total) if self.total else "?"
        return f"{self.name}: {self.done}/{total} done, {self.failed} failed, ETA {format_eta(self.eta_s(now))}"


class LiveProgress:
    """Progress per suite: a rich bar on a terminal, else a plain line every `plain_every_s` seconds."""

    def __init__(self, console: Console, enabled: bool, workers: int = 1, plain_every_s: float | None = None) -> None:
        self.console = console
        self.enabled = enabled
        self.workers = workers
        self.plain_every_s = plain_every_s
        self.suites: dict[str, SuiteProgress] = {}
        self.current: SuiteProgress | None = None
        self._last_plain = time.monotonic()
        self._lock = threading.Lock()
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                 TextColumn("{task.completed}/{task.fields[of]} · {task.fields[failed]} failing"
                                            " · ETA {task.fields[eta]}"),
                                 TimeElapsedColumn(), console=console, transient=False)
        self.tasks: dict[str, TaskID] = {}

    def __enter__(self) -> LiveProgress:
        if self.enabled:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.progress.stop()

    def suite(self, name: str) -> None:
        with self._lock:
            self.current = self.suites.setdefault(name, SuiteProgress(name, workers=self.workers))
            if self.enabled and name not in self.tasks:
                self.tasks[name] = self.progress.add_task(f"suite {name}", total=None, failed=0, of="?", eta="?")
        self._last_plain = time.monotonic()

    def collected(self, suite: str | None, ids: list[str], history: dict[str, float]) -> None:
        with self._lock:
            sp = self.suites.get(suite or "") or self.current
            if sp is not None:
                sp.collected(ids, history)
                self._show(sp)

    def result(self, result: ResultRecord) -> None:
        with self._lock:
            sp = self.suites.get(result.suite or "") or self.current
            if sp is not None:
                sp.result(result)
                self._show(sp)

    def _show(self, sp: SuiteProgress) -> None:
        task = self.tasks.get(sp.name)
        if task is not None:
            self.progress.update(task, completed=sp.done, total=sp.total or None, failed=sp.failed,
                                 of=sp.total or "?", eta=format_eta(sp.eta_s()))

    def tick(self, now: float | None = None) -> None:
        """Called every fraction of a second: refresh the ETA; print the plain line when it is due."""
        now = time.monotonic() if now is None else now
        with self._lock:
            sp = self.current
            if sp is None:
                return
            if self.enabled:
                self._show(sp)
            elif self.plain_every_s and now - self._last_plain >= self.plain_every_s:
                self._last_plain = now
                self.console.print(sp.line(now), highlight=False, soft_wrap=True, markup=False)


def summary_table(tally: RunTally) -> Table:
    """Per model and suite: passed / failed / skipped and summed test time."""
    table = Table(title="harness run", show_lines=False)
    for col in ("model", "suite", "passed", "failed", "skipped", "test time"):
        table.add_column(col, justify="left" if col in ("model", "suite") else "right")
    groups: dict[tuple[str, str], list[ResultRecord]] = defaultdict(list)
    for r in tally.results:
        groups[(r.model or "-", r.suite or "-")].append(r)
    for (model, suite), rows in sorted(groups.items()):
        failed = sum(1 for r in rows if r.outcome in FAILING_OUTCOMES)
        table.add_row(escape(model), escape(suite), str(sum(1 for r in rows if r.outcome in ("passed", "xfail"))),
                      f"[red]{failed}[/red]" if failed else "0",
                      str(sum(1 for r in rows if r.outcome == "skipped")),
                      f"{sum(r.duration_s for r in rows):.2f}s")
    return table


def slowest_table(tally: RunTally, top: int = 5) -> Table:
    """The slowest tests of the run."""
    table = Table(title=f"slowest {top} tests")
    for col in ("time", "suite", "test"):
        table.add_column(col, justify="right" if col == "time" else "left", overflow="fold")
    for r in sorted(tally.results, key=lambda r: r.duration_s, reverse=True)[:top]:
        table.add_row(f"{r.duration_s:.2f}s", escape(r.suite or "-"), escape(r.nodeid))
    return table


def failures_table(tally: RunTally, top: int = 20) -> Table | None:
    """Failing tests with their short messages (the first `top`)."""
    failing = [r for r in tally.results if r.outcome in FAILING_OUTCOMES]
    if not failing:
        return None
    table = Table(title=f"failing tests ({len(failing)})")
    for col in ("outcome", "test", "message"):
        table.add_column(col, overflow="fold")
    for r in failing[:top]:
        message = r.message.splitlines()[0][:200] if r.message else ""
        table.add_row(f"[red]{r.outcome}[/red]", escape(r.nodeid), escape(message))
    return table
