"""Run lookups for triage: a run by id, the latest run, a run's baseline, its per-test final outcomes."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, or_, select
from sqlalchemy.orm import Session

from harness.errors import HarnessError
from harness.store.schema import Run, TestResult


class TriageError(HarnessError):
    """A run or baseline that cannot be used (missing, no baseline): exit 2."""


class NoBaselineError(TriageError):
    """The run has no earlier completed run to compare with."""


@dataclass(frozen=True)
class Outcome:
    """The final (highest-attempt) result of one test in one run."""

    nodeid: str
    nodeid_hash: str
    model: str | None
    suite: str | None
    outcome: str
    message: str | None
    device: str | None
    attempt: int
    exception: str | None = None
    signature: str | None = None


def get_run(session: Session, run_id: int) -> Run:
    run = session.get(Run, run_id)
    if run is None:
        raise TriageError(f"no run {run_id} in the results store: check --run and --db")
    return run


def latest_run(session: Session) -> Run:
    """The most recent completed run."""
    run = session.scalars(select(Run).where(Run.status == "completed")
                          .order_by(Run.started_at.desc(), Run.id.desc()).limit(1)).first()
    if run is None:
        raise TriageError("the results store has no completed run: record one with `harness run` or pass --run ID")
    return run


def _same(column: ColumnElement, value: object) -> ColumnElement[bool]:
    return column.is_(None) if value is None else column == value


def find_baseline(session: Session, run: Run) -> Run | None:
    """The previous completed run of the same branch, runner group, suites and models (cancelled,
    partial, failed and running runs are never baselines; a per-model matrix job compares with the
    same model's previous job, not a neighbour's)."""
    earlier = or_(Run.started_at < run.started_at, and_(Run.started_at == run.started_at, Run.id < run.id))
    stmt = (select(Run).where(Run.status == "completed", Run.id != run.id, earlier,
                              _same(Run.branch, run.branch), _same(Run.runner_group, run.runner_group),
                              _same(Run.suites, run.suites), _same(Run.models, run.models))
            .order_by(Run.started_at.desc(), Run.id.desc()).limit(1))
    return session.scalars(stmt).first()


def describe(run: Run) -> str:
    return (f"branch {run.branch or '(none)'}, runner group {run.runner_group or '(none)'}, "
            f"suites {run.suites or '(none)'}")


def final_outcomes(session: Session, run_id: int) -> dict[str, Outcome]:
    """nodeid_hash -> the test's last attempt in the run (a retry that passed makes the test pass)."""
    rows = session.execute(select(
        TestResult.nodeid, TestResult.nodeid_hash, TestResult.model, TestResult.suite, TestResult.outcome,
        TestResult.message, TestResult.device, TestResult.attempt, TestResult.exception,
        TestResult.signature).where(TestResult.run_id == run_id)).all()
    out: dict[str, Outcome] = {}
    for row in rows:
        current = out.get(row.nodeid_hash)
        if current is None or row.attempt > current.attempt:
            out[row.nodeid_hash] = Outcome(*row)
    return out
