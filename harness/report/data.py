"""The report of one run as plain data (`ReportData`), collected from the store by `collect_report`.

The Slack block builder works from this dataclass alone, so it can be tested without a database.
A run is reported together with its siblings: the runs of the same commit, workflow and event on
other runner groups (one CI matrix); each failure is labelled with its own run's runner group.

One story: `totals`, the per-model table, the failure list and the thread all come from one read of
the final attempts; every failing test is in `failing` exactly once, as new, still failing or flaky.
Every read is plain SQL with bound `?` parameters through `rollups.Sql`, so it runs on a DBAPI connection
(`harness.store.reading.read_connection`: `notify slack` imports no SQLAlchemy on a current store) as
well as on a SQLAlchemy Connection or a `Store`.

A failing test is flaky only on evidence (`_flaky`, each piece judged by `harness_bisect.flaky.is_flaky`),
always about the same failure signature (a test that fails two different ways is not flaky):
its attempts in this run disagree, a
confirmation or bisect of this run recorded it flaky, or it has a flaky record and also failed in one
of its recent earlier runs. A test that passed in every earlier run, or that has a culprit for this
run, is never called flaky on an old record.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from harness_bisect.flaky import Flaky, is_flaky, observe_signature

from harness.errors import HarnessError
from harness.store.rollups import FAILING_OUTCOMES, Sql

if TYPE_CHECKING:
    from harness.store.db import Store


class ReportError(HarnessError):
    """The run to report on does not exist (or the store has none)."""


@dataclass(frozen=True)
class CulpritInfo:
    """The commit found to break a test."""

    commit_sha: str
    author: str | None = None
    email: str | None = None
    subject: str | None = None
    pr: int | None = None


@dataclass(frozen=True)
class FailureItem:
    """One failing test (final attempt) of the reported runs; `kind` is "new", "still" or "flaky"."""

    nodeid: str
    model: str | None
    suite: str | None
    outcome: str
    message: str | None
    runner_group: str | None = None  # of the run the result belongs to
    culprit: CulpritInfo | None = None
    kind: str = "new"
    exception: str | None = None
    signature: str | None = None  # harness/signature.py: the same failure in many models is one signature


@dataclass(frozen=True)
class ModelRow:
    """Failing tests of one model, by runner group."""

    model: str
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class PerfAlertItem:
    """A performance change point attributed to this run's commit."""

    metric: str
    model: str | None
    gpu_name: str | None
    commit_before: str | None
    commit_after: str
    value_before: float | None
    value_after: float | None
    change: float
    p_value: float | None
    direction: str


@dataclass
class ReportData:
    """Everything the Slack report shows about one run (and its sibling runs)."""

    run_id: int
    run_ids: list[int]
    workflow: str | None = None
    event: str | None = None
    branch: str | None = None
    repo: str | None = None
    commit_sha: str | None = None
    commit_subject: str | None = None
    runner_groups: list[str] = field(default_factory=list)
    gpu_name: str | None = None
    gpu_count: int = 0
    status: str | None = None
    totals: dict[str, int] = field(default_factory=dict)
    wall_time_s: float | None = None
    baseline_run_id: int | None = None
    models: list[ModelRow] = field(default_factory=list)
    failing: list[FailureItem] = field(default_factory=list)
    fixed: int = 0
    flaky: list[Flaky] = field(default_factory=list)  # `failed`: its final attempt failed here
    perf_alerts: list[PerfAlertItem] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return sum(n for outcome, n in self.totals.items() if outcome in FAILING_OUTCOMES)

    @property
    def new_failures(self) -> list[FailureItem]:
        return [f for f in self.failing if f.kind == "new"]

    @property
    def still_failing(self) -> list[FailureItem]:
        return [f for f in self.failing if f.kind == "still"]

    @property
    def flaky_failing(self) -> list[FailureItem]:
        return [f for f in self.failing if f.kind == "flaky"]

    @property
    def failures(self) -> list[FailureItem]:
        """Every failing test (new, still failing and flaky): what the thread lists."""
        return self.failing


NO_GROUP = "(no group)"
HISTORY_RUNS = 50  # earlier runs of the same runner groups searched for a test's past failures


class _Run(NamedTuple):
    """The columns of a run the report reads."""

    id: int
    commit_sha: str | None
    workflow: str | None
    event: str | None
    branch: str | None
    repo: str | None
    commit_subject: str | None
    runner_group: str | None
    gpu_name: str | None
    gpu_count: int | None
    status: str | None
    started_at: datetime | None
    finished_at: datetime | None


class _Result(NamedTuple):
    """A stored test result (one attempt) as the report reads it."""

    run_id: int
    nodeid: str
    nodeid_hash: str
    model: str | None
    suite: str | None
    outcome: str
    message: str | None
    attempt: int | None
    device: str | None
    exception: str | None
    signature: str | None


class _FlakyRecord(NamedTuple):
    """A `flaky_tests` row."""

    nodeid: str
    nodeid_hash: str
    device: str | None
    signature: str | None
    failures: int
    attempts: int
    last_run_id: int | None


def _when(value: Any) -> datetime | None:
    """A DateTime column as a datetime (sqlite3 returns the stored text, psycopg2 a datetime)."""
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def _cols(row: type, alias: str) -> str:
    """The select list of a row type: its field names (identifiers, never values)."""
    return ", ".join(f"{alias}.{name}" for name in row._fields)  # type: ignore[attr-defined]


def _marks(values: Any) -> str:
    """One bound `?` per value, for `IN (...)`."""
    return ", ".join(["?"] * len(values))


@contextmanager
def _connection(source: Any) -> Iterator[Any]:
    """What `Sql` reads through: a `Store` lends a SQLAlchemy Connection, a connection is used as it is."""
    engine = None if hasattr(source, "exec_driver_sql") else getattr(source, "engine", None)
    if engine is None:
        yield source
        return
    with engine.connect() as conn:
        yield conn


def _runs(db: Sql, where: str, params: tuple = (), order: str = "") -> list[_Run]:
    rows = db.rows(f"SELECT {_cols(_Run, 'r')} FROM runs r WHERE {where}{order}", params)
    return [r._replace(started_at=_when(r.started_at), finished_at=_when(r.finished_at))
            for r in (_Run(*row) for row in rows)]


def _siblings(db: Sql, run: _Run) -> list[_Run]:
    """The run and the other runner groups' runs of the same commit, workflow and event."""
    if not (run.commit_sha and run.workflow):
        return [run]
    rows = _runs(db, f"r.commit_sha = ? AND r.workflow = ? AND r.event {db.same} ?"
                     f" AND (NOT (r.runner_group {db.same} ?) OR r.id = ?)",
                 (run.commit_sha, run.workflow, run.event, run.runner_group, run.id),
                 " ORDER BY r.started_at DESC, r.id DESC")
    latest: dict[Any, _Run] = {}
    for row in rows:  # one run per runner group: the newest, and always the requested run itself
        if row.id == run.id or row.runner_group not in latest:
            latest[row.runner_group] = row if row.runner_group != run.runner_group else run
    return sorted(latest.values(), key=lambda x: x.id)


def _final_results(db: Sql, run_ids: list[int]) -> list[_Result]:
    """The last attempt of every test of these runs."""
    rows = db.rows(f"SELECT {_cols(_Result, 't')} FROM test_results t JOIN ("
                   "SELECT run_id, nodeid_hash, max(attempt) AS attempt FROM test_results"
                   f" WHERE run_id IN ({_marks(run_ids)}) GROUP BY run_id, nodeid_hash) f"
                   " ON t.run_id = f.run_id AND t.nodeid_hash = f.nodeid_hash AND t.attempt = f.attempt", run_ids)
    return [_Result(*row) for row in rows]


def _culprits(db: Sql, hashes: set[str], run_ids: list[int]) -> dict[str, CulpritInfo]:
    """Culprit per test: one found for these runs first, else the most recent one."""
    if not hashes:
        return {}
    keys = sorted(hashes)
    rows = db.rows("SELECT c.nodeid_hash, c.run_id, c.created_at, c.id, c.commit_sha, c.author, c.email, c.subject,"
                   f" c.pr FROM culprits c WHERE c.nodeid_hash IN ({_marks(keys)}) ORDER BY c.created_at, c.id", keys)
    out: dict[str, CulpritInfo] = {}
    for h, _, _, _, *info in sorted(rows, key=lambda x: (x[1] in run_ids, _when(x[2]) or datetime.min, x[3])):
        out[h] = CulpritInfo(*info)
    return out


@dataclass
class _NoBaseline:
    """A run with nothing to compare with: its failures are listed, none is called new."""

    baseline_id: None = None
    new: tuple = ()
    still_failing: tuple = ()
    fixed: tuple = ()


def _new_failures(conn: Any, run_id: int) -> Any:
    from harness.triage.new_failures import NoBaselineError, find_new_failures

    try:
        return find_new_failures(conn, run_id)
    except NoBaselineError:
        return _NoBaseline()


def collect_report(source: Store | Any, run_id: int | None = None) -> ReportData:
    """Read everything the report needs about `run_id` (default: the latest run). `source`: a DBAPI
    connection (`harness.store.reading.read_connection`), a SQLAlchemy Connection or a `Store`."""
    with _connection(source) as conn:
        db = Sql(conn)
        found = (_runs(db, "r.id = ?", (run_id,)) if run_id is not None else
                 _runs(db, "1 = 1", (), " ORDER BY r.started_at DESC, r.id DESC LIMIT 1"))
        if not found:
            raise ReportError(f"no run {run_id} in the store" if run_id is not None else
                              "the store has no runs yet: run `harness run` or `harness ingest` first")
        run = found[0]
        runs = _siblings(db, run)
        results = _final_results(db, [x.id for x in runs])
        deltas = {x.id: _new_failures(conn, x.id) for x in runs}
        return _assemble(db, run, runs, results, deltas)


def _assemble(db: Sql, run: _Run, runs: list[_Run], results: list[_Result], deltas: dict[int, Any]) -> ReportData:
    ids = [x.id for x in runs]
    group = {x.id: x.runner_group or NO_GROUP for x in runs}
    totals: dict[str, int] = defaultdict(int)
    failing = {}
    for row in results:
        totals[row.outcome] += 1
        if row.outcome in FAILING_OUTCOMES:
            failing[(row.run_id, row.nodeid)] = row
    culprits = _culprits(db, {row.nodeid_hash for row in failing.values()}, ids)
    here = _culprit_hashes_of(db, ids)
    flaky = _flaky(db, runs, list(failing.values()), results, here)
    flaky_failing = {f.nodeid for f in flaky if f.failed}
    new_keys = {(rid, d.nodeid) for rid, nf in deltas.items() for d in nf.new}
    items = []
    per_model: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for (rid, nodeid), row in sorted(failing.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        per_model[row.model or "(no model)"][group[rid]] += 1
        kind = "flaky" if nodeid in flaky_failing else ("new" if (rid, nodeid) in new_keys else "still")
        items.append(FailureItem(nodeid, row.model, row.suite, row.outcome, row.message, group[rid],
                                 culprits.get(row.nodeid_hash), kind, row.exception, row.signature))
    started = [x.started_at for x in runs if x.started_at]
    finished = [x.finished_at for x in runs if x.finished_at]
    wall = (max(finished) - min(started)).total_seconds() if started and finished else None
    main_delta = deltas.get(run.id)
    return ReportData(
        run_id=run.id, run_ids=ids, workflow=run.workflow, event=run.event, branch=run.branch,
        repo=run.repo, commit_sha=run.commit_sha, commit_subject=run.commit_subject,
        runner_groups=list(dict.fromkeys(group[x.id] for x in runs)),
        gpu_name=run.gpu_name, gpu_count=max((x.gpu_count or 0) for x in runs), status=run.status,
        totals=dict(totals), wall_time_s=wall,
        baseline_run_id=getattr(main_delta, "baseline_id", None),
        models=sorted((ModelRow(m, dict(c)) for m, c in per_model.items()), key=lambda m: (-m.total, m.model)),
        failing=items, fixed=sum(len(nf.fixed) for nf in deltas.values()),
        flaky=flaky, perf_alerts=_perf_alerts(db, run, ids))


def _culprit_hashes_of(db: Sql, run_ids: list[int]) -> set[str]:
    """Tests a bisect of these runs pinned to a commit: broken, not flaky."""
    return {row[0] for row in db.rows(f"SELECT c.nodeid_hash FROM culprits c WHERE c.run_id IN ({_marks(run_ids)})",
                                      run_ids)}


def _failed_before(db: Sql, runs: list[_Run], hashes: set[str]) -> set[str]:
    """Of `hashes`, the tests that failed in one of the last HISTORY_RUNS earlier runs of these runner groups."""
    if not hashes:
        return set()
    first = min(x.id for x in runs)
    groups = [x.runner_group for x in runs if x.runner_group]
    cond = f"r.runner_group IN ({_marks(groups)})" if groups else "r.runner_group IS NULL"
    earlier = [row[0] for row in db.rows(f"SELECT r.id FROM runs r WHERE r.id < ? AND {cond}"
                                         " ORDER BY r.id DESC LIMIT ?", (first, *groups, HISTORY_RUNS))]
    if not earlier:
        return set()
    keys = sorted(hashes)
    rows = db.rows(f"SELECT DISTINCT t.nodeid_hash FROM test_results t WHERE t.nodeid_hash IN ({_marks(keys)})"
                   f" AND t.run_id IN ({_marks(earlier)}) AND t.outcome IN ({_marks(FAILING_OUTCOMES)})",
                   (*keys, *earlier, *FAILING_OUTCOMES))
    return {row[0] for row in rows}


def _flaky(db: Sql, runs: list[_Run], failing: list[_Result], results: list[_Result], broken: set[str]) -> list[Flaky]:
    """Tests of these runs with flaky evidence (see the module docstring), never one with a culprit here."""
    ids = [x.id for x in runs]
    final = {(row.run_id, row.nodeid_hash): row for row in results}
    retried = sorted({h for (_, h), row in final.items() if (row.attempt or 1) > 1})  # only these can disagree
    attempts = [_Result(*row) for row in db.rows(
        f"SELECT {_cols(_Result, 't')} FROM test_results t WHERE t.run_id IN ({_marks(ids)})"
        f" AND t.nodeid_hash IN ({_marks(retried)})", (*ids, *retried))] if retried else []
    tried: dict[tuple[int, str], list[_Result]] = defaultdict(list)
    for a in attempts:
        tried[(a.run_id, a.nodeid_hash)].append(a)
    out: dict[str, Flaky] = {}
    for key, rows in tried.items():  # evidence 1: attempts of this run disagree, on the same failure
        last = final[key]
        failed = last.outcome in FAILING_OUTCOMES
        way = last.signature if failed else next(
            (a.signature for a in rows if a.outcome in FAILING_OUTCOMES and a.signature), None)
        seen = observe_signature(last.nodeid, [(a.outcome in FAILING_OUTCOMES, a.signature) for a in rows],
                                 signature=way, device=last.device or "", last_failed=failed)
        if seen is not None and key[1] not in broken:
            out[last.nodeid] = seen
    hashes = sorted({row.nodeid_hash for row in failing} - broken)
    if not hashes:
        return sorted(out.values(), key=lambda x: (-x.fail_rate, x.nodeid))
    ways = {row.nodeid_hash: row.signature for row in failing}
    stored = db.rows(f"SELECT {_cols(_FlakyRecord, 'f')} FROM flaky_tests f WHERE f.nodeid_hash IN ({_marks(hashes)})",
                     hashes)
    records = [row for row in map(_FlakyRecord._make, stored)
               if is_flaky(row.failures, row.attempts)  # a record of another way of failing is no evidence
               and (not row.signature or not ways.get(row.nodeid_hash) or row.signature == ways[row.nodeid_hash])]
    failed_before = _failed_before(db, runs, {row.nodeid_hash for row in records})
    for row in records:  # evidence 2: recorded flaky by this run's confirmation / bisect, or 3: record + history
        if row.last_run_id in ids or row.nodeid_hash in failed_before:
            out.setdefault(row.nodeid, Flaky(row.nodeid, row.device or "", row.failures, row.attempts,
                                             signature=row.signature or None))
    return sorted(out.values(), key=lambda x: (-x.fail_rate, x.nodeid))


def _perf_alerts(db: Sql, run: _Run, run_ids: list[int]) -> list[PerfAlertItem]:
    cond, params = f"p.run_id IN ({_marks(run_ids)})", [*run_ids]
    if run.commit_sha:
        cond, params = f"({cond} OR p.commit_after = ?)", [*run_ids, run.commit_sha]
    rows = db.rows("SELECT p.metric, p.model, p.gpu_name, p.commit_before, p.commit_after, p.value_before,"
                   f" p.value_after, p.magnitude, p.p_value, p.direction FROM perf_alerts p WHERE {cond}"
                   " ORDER BY p.direction DESC, p.magnitude DESC", params)
    return [PerfAlertItem(*row) for row in rows]


def wall_time_text(seconds: float | None) -> str:
    """`1h 02m`, `12m 03s`, `45s`."""
    if seconds is None:
        return "unknown"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h {m:02d}m" if h else (f"{m}m {sec:02d}s" if m else f"{sec}s")

