"""Live progress and the end-of-run summary table (rich)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from harness.bundle import ResultRecord
from harness.store.schema import FAILING_OUTCOMES


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


class LiveProgress:
    """A rich progress bar that advances as results arrive in the bundle."""

    def __init__(self, console: Console, enabled: bool) -> None:
        self.enabled = enabled
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                 TextColumn("{task.completed} tests · {task.fields[failed]} failing"),
                                 TimeElapsedColumn(), console=console, transient=False)
        self.task = self.progress.add_task("harness run", total=None, failed=0)
        self.failed = 0

    def __enter__(self) -> LiveProgress:
        if self.enabled:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.progress.stop()

    def suite(self, name: str) -> None:
        self.progress.update(self.task, description=f"suite {name}")

    def result(self, result: ResultRecord) -> None:
        if result.outcome in FAILING_OUTCOMES:
            self.failed += 1
        self.progress.update(self.task, advance=1, failed=self.failed)


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
