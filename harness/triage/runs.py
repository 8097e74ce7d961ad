"""Run lookups for triage: a run by id, the latest completed run, how to name its lane.

They read through `rollups.Sql`, so they work on a plain DBAPI connection (the fast read path of
`harness new-failures`, harness/store/reading.py) as on a SQLAlchemy connection.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from harness.errors import HarnessError
from harness.store.rollups import Sql


class TriageError(HarnessError):
    """A run or baseline that cannot be used (missing, no baseline): exit 2."""


class NoBaselineError(TriageError):
    """The run has no earlier completed run to compare with."""


@dataclass(frozen=True)
class RunRef:
    """What triage needs of a stored run."""

    id: int
    uuid: str
    repo: str | None
    branch: str | None
    runner_group: str | None
    suites: str | None
    models: str | None
    status: str
    commit_sha: str | None
    started_at: datetime | None


_COLUMNS = "id, uuid, repo, branch, runner_group, suites, models, status, commit_sha, started_at"


def _run_ref(row: tuple) -> RunRef:
    started = row[9]
    if isinstance(started, str):  # sqlite3 returns DateTime columns as text
        started = datetime.fromisoformat(started)
    return RunRef(int(row[0]), *row[1:9], started)


def _connection(conn: Any) -> Any:
    """An ORM Session's connection, else the connection itself."""
    return conn.connection() if hasattr(conn, "get_bind") else conn


def get_run(conn: Any, run_id: int) -> RunRef:
    """Run `run_id` (`conn`: a DBAPI or SQLAlchemy connection, or an ORM session)."""
    rows = Sql(_connection(conn)).rows(f"SELECT {_COLUMNS} FROM runs WHERE id = ?", (run_id,))
    if not rows:
        raise TriageError(f"no run {run_id} in the results store: check --run and --db")
    return _run_ref(rows[0])


def latest_run(conn: Any) -> RunRef:
    """The most recent completed run."""
    rows = Sql(_connection(conn)).rows(f"SELECT {_COLUMNS} FROM runs WHERE status = 'completed' "
                                       "ORDER BY started_at DESC, id DESC LIMIT 1")
    if not rows:
        raise TriageError("the results store has no completed run: record one with `harness run` or pass --run ID")
    return _run_ref(rows[0])


def describe(run: RunRef) -> str:
    return (f"branch {run.branch or '(none)'}, runner group {run.runner_group or '(none)'}, "
            f"suites {run.suites or '(none)'}")
