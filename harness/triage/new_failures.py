"""New failures: tests failing in a run that were not failing in its baseline run.

The rule is written once, as SQL, in harness/store/rollups.py (`baseline_of`, `classify_sql`); the
writers keep each completed run's new failures with it (`rollup_new_failures`, read by the ci-overview
panel), and this module applies the same SQL to any run and baseline.

Baseline: the previous completed run of the same branch, runner group, suites and models (override with
`baseline_id`). Per test, using each run's last attempt:
failing now and not failing in the baseline -> `new`; failing in both -> `still_failing`; failing in
the baseline and passing now -> `fixed`; in the baseline but absent now -> `missing` (never a pass);
absent from the baseline -> new only if it fails. Failing means failed, error, crashed, timeout or xpass.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from harness_bisect.flaky import Flaky

from harness.store import rollups
from harness.triage.runs import NoBaselineError, TriageError, describe, get_run, latest_run

if TYPE_CHECKING:
    from harness.store import Store

__all__ = ["NewFailures", "NoBaselineError", "SignatureGroup", "TestDelta", "TriageError", "find_new_failures",
           "group_by_signature"]


@dataclass
class TestDelta:
    """One test's change between the baseline and the run (`outcome` is None for a missing test)."""

    __test__ = False  # not a pytest test class

    nodeid: str
    model: str | None
    suite: str | None
    outcome: str | None
    message: str | None
    baseline_outcome: str | None
    device: str | None = None
    exception: str | None = None
    signature: str | None = None


@dataclass
class SignatureGroup:
    """New failures that fail the same way (one signature): the tests, and the models they cover."""

    signature: str | None
    exception: str | None
    message: str | None  # the first test's message, as an example
    tests: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"signature": self.signature, "exception": self.exception, "message": self.message,
                "count": len(self.tests), "models": self.models, "tests": self.tests}


def group_by_signature(deltas: list[TestDelta]) -> list[SignatureGroup]:
    """`deltas` grouped by failure signature, most tests first; a failure without a signature (an old
    row, no message) is a group of its own."""
    groups: dict[str, SignatureGroup] = {}
    for d in deltas:
        key = d.signature or f"test:{d.nodeid}"
        group = groups.get(key)
        if group is None:
            group = groups[key] = SignatureGroup(d.signature, d.exception, d.message)
        group.tests.append(d.nodeid)
        if d.model and d.model not in group.models:
            group.models.append(d.model)
    for g in groups.values():
        g.models.sort()
    return sorted(groups.values(), key=lambda g: (-len(g.tests), g.signature or "~", g.tests[0]))


@dataclass
class NewFailures:
    """The comparison of a run with its baseline."""

    run_id: int
    baseline_id: int
    new: list[TestDelta] = field(default_factory=list)
    still_failing: list[TestDelta] = field(default_factory=list)
    fixed: list[TestDelta] = field(default_factory=list)
    missing: list[TestDelta] = field(default_factory=list)
    flaky: list[Flaky] = field(default_factory=list)  # confirmation: counts include the original failure
    confirmed: bool = False

    @property
    def signatures(self) -> list[SignatureGroup]:
        """The new failures grouped by signature."""
        return group_by_signature(self.new)

    def to_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "baseline_id": self.baseline_id, "confirmed": self.confirmed,
                "counts": {k: len(getattr(self, k)) for k in ("new", "still_failing", "fixed", "missing", "flaky")},
                "signatures": [g.to_json() for g in self.signatures],
                **{k: [asdict(d) for d in getattr(self, k)] for k in ("new", "still_failing", "fixed", "missing")},
                "flaky": [f.to_json("nodeid", device=True) for f in self.flaky]}


def _delta(row: dict[str, Any]) -> TestDelta:
    return TestDelta(nodeid=row["nodeid"], model=row["model"], suite=row["suite"], outcome=row["outcome"],
                     message=row["message"], baseline_outcome=row["baseline_outcome"], device=row["device"],
                     exception=row.get("exception"), signature=row.get("signature"))


@contextmanager
def _connection(source: Store | Any) -> Iterator[Any]:
    """A connection from a Store (opened and closed here), or the connection given."""
    if hasattr(source, "engine"):
        with source.engine.connect() as conn:
            yield conn
    else:
        yield source


def find_new_failures(source: Store | Any, run_id: int | None = None, baseline_id: int | None = None) -> NewFailures:
    """Compare run `run_id` (default: the latest completed run) with its baseline. `source`: a Store, or
    any connection `rollups.Sql` takes (DBAPI or SQLAlchemy).

    Raises `TriageError` for an unknown run and `NoBaselineError` when no baseline exists."""
    with _connection(source) as conn:
        run = get_run(conn, run_id) if run_id is not None else latest_run(conn)
        if baseline_id is not None:
            baseline = get_run(conn, baseline_id)
            if baseline.id == run.id:
                raise TriageError(f"run {run.id} cannot be its own baseline: pass another --baseline ID")
        else:
            found = rollups.baseline_of(conn, run.id)
            if found is None:
                raise NoBaselineError(f"run {run.id} has no baseline: no earlier completed run of {describe(run)};"
                                      " pass --baseline ID")
            baseline = get_run(conn, found)
        rows = rollups.classify(conn, run.id, baseline.id)
    out = NewFailures(run_id=run.id, baseline_id=baseline.id)
    for row in sorted(rows, key=lambda r: r["nodeid"]):
        getattr(out, row["kind"]).append(_delta(row))
    return out


def flaky_in_run(source: Store | Any, run_id: int) -> set[str]:
    """Node id hashes recorded as flaky by a confirmation of run `run_id`."""
    with _connection(source) as conn:
        return {r[0] for r in rollups.Sql(conn).rows("SELECT nodeid_hash FROM flaky_tests WHERE last_run_id = ?",
                                                      (run_id,))}
