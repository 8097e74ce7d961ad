"""Live progress and the end-of-run summary table (rich)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from rich.console import Console
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


def summary_table(tally: RunTally, slowest: int = 3) -> Table:
    """Per model and suite: passed / failed / skipped, summed test time, slowest tests."""
    table = Table(title="harness run", show_lines=False)
    for col in ("model", "suite", "passed", "failed", "skipped", "test time", "slowest tests"):
        table.add_column(col, justify="right" if col in ("passed", "failed", "skipped", "test time") else "left")
    groups: dict[tuple[str, str], list[ResultRecord]] = defaultdict(list)
    for r in tally.results:
        groups[(r.model or "-", r.suite or "-")].append(r)
    for (model, suite), rows in sorted(groups.items()):
        failed = sum(1 for r in rows if r.outcome in FAILING_OUTCOMES)
        top = sorted(rows, key=lambda r: r.duration_s, reverse=True)[:slowest]
        table.add_row(model, suite, str(sum(1 for r in rows if r.outcome in ("passed", "xfail"))),
                      f"[red]{failed}[/red]" if failed else "0",
                      str(sum(1 for r in rows if r.outcome == "skipped")),
                      f"{sum(r.duration_s for r in rows):.2f}s",
                      "\n".join(f"{r.duration_s:.2f}s {r.nodeid.split('::', 1)[-1][:60]}" for r in top))
    return table
