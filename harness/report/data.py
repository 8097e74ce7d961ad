"""The report of one run as plain data (`ReportData`), collected from the store by `collect_report`.

The Slack block builder works from this dataclass alone, so it can be tested without a database.
A run is reported together with its siblings: the runs of the same commit, workflow and event on
other runner groups (one CI matrix); each failure is labelled with its own run's runner group.

One story: `totals`, the per-model table, the failure list and the thread all come from one read of
the final attempts; every failing test is in `failing` exactly once, as new, still failing or flaky.
A failing test is flaky only on evidence (`_flaky`, each piece judged by `harness_bisect.flaky.is_flaky`),
always about the same failure signature (a test that fails two different ways is not flaky):
its attempts in this run disagree, a
confirmation or bisect of this run recorded it flaky, or it has a flaky record and also failed in one
of its recent earlier runs. A test that passed in every earlier run, or that has a culprit for this
run, is never called flaky on an old record.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from harness_bisect.flaky import Flaky, is_flaky, observe_signature
from sqlalchemy import and_, func, or_, select

from harness.errors import HarnessError
from harness.store.db import Store
from harness.store.schema import FAILING_OUTCOMES, Culprit, FlakyTest, PerfAlert, Run, TestResult


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


def _siblings(session: Any, run: Any) -> list[Any]:
    """The run and the other runner groups' runs of the same commit, workflow and event."""
    if not (run.commit_sha and run.workflow):
        return [run]
    r = Run.__table__
    rows = session.execute(select(r).where(and_(
        r.c.commit_sha == run.commit_sha, r.c.workflow == run.workflow,
        r.c.event == run.event if run.event is not None else r.c.event.is_(None),
        r.c.runner_group.is_distinct_from(run.runner_group) | (r.c.id == run.id),
    )).order_by(r.c.started_at.desc(), r.c.id.desc())).all()
    latest: dict[Any, Any] = {}
    for row in rows:  # one run per runner group: the newest, and always the requested run itself
        if row.id == run.id or row.runner_group not in latest:
            latest[row.runner_group] = row if row.runner_group != run.runner_group else run
    return sorted(latest.values(), key=lambda x: x.id)


def _final_results(session: Any, run_ids: list[int]) -> list[Any]:
    """The last attempt of every test of these runs."""
    t = TestResult.__table__
    last = (select(t.c.run_id, t.c.nodeid_hash, func.max(t.c.attempt).label("attempt"))
            .where(t.c.run_id.in_(run_ids)).group_by(t.c.run_id, t.c.nodeid_hash).subquery())
    return session.execute(select(t).join(last, and_(
        t.c.run_id == last.c.run_id, t.c.nodeid_hash == last.c.nodeid_hash,
        t.c.attempt == last.c.attempt))).all()


def _culprits(session: Any, hashes: set[str], run_ids: list[int]) -> dict[str, CulpritInfo]:
    """Culprit per test: one found for these runs first, else the most recent one."""
    if not hashes:
        return {}
    c = Culprit.__table__
    rows = session.execute(select(c).where(c.c.nodeid_hash.in_(sorted(hashes)))
                           .order_by(c.c.created_at, c.c.id)).all()
    out: dict[str, CulpritInfo] = {}
    for row in sorted(rows, key=lambda x: (x.run_id in run_ids, x.created_at, x.id)):
        out[row.nodeid_hash] = CulpritInfo(row.commit_sha, row.author, row.email, row.subject, row.pr)
    return out


@dataclass
class _NoBaseline:
    """A run with nothing to compare with: its failures are listed, none is called new."""

    baseline_id: None = None
    new: tuple = ()
    still_failing: tuple = ()
    fixed: tuple = ()


def _new_failures(store: Store, run_id: int) -> Any:
    from harness.triage.new_failures import NoBaselineError, find_new_failures

    try:
        return find_new_failures(store, run_id)
    except NoBaselineError:
        return _NoBaseline()


def collect_report(store: Store, run_id: int | None = None) -> ReportData:
    """Read everything the report needs about `run_id` (default: the latest run) from the store."""
    with store.session() as session:
        r = Run.__table__
        query = select(r).where(r.c.id == run_id) if run_id is not None else (
            select(r).order_by(r.c.started_at.desc(), r.c.id.desc()).limit(1))
        run = session.execute(query).first()
        if run is None:
            raise ReportError(f"no run {run_id} in the store" if run_id is not None else
                              "the store has no runs yet: run `harness run` or `harness ingest` first")
        runs = _siblings(session, run)
        ids = [x.id for x in runs]
        results = _final_results(session, ids)
    deltas = {rid: _new_failures(store, rid) for rid in ids}
    with store.session() as session:
        data = _assemble(session, run, runs, results, deltas)
    return data


def _assemble(session: Any, run: Any, runs: list[Any], results: list[Any], deltas: dict[int, Any]) -> ReportData:
    ids = [x.id for x in runs]
    group = {x.id: x.runner_group or NO_GROUP for x in runs}
    totals: dict[str, int] = defaultdict(int)
    failing = {}
    for row in results:
        totals[row.outcome] += 1
        if row.outcome in FAILING_OUTCOMES:
            failing[(row.run_id, row.nodeid)] = row
    culprits = _culprits(session, {row.nodeid_hash for row in failing.values()}, ids)
    here = _culprit_hashes_of(session, ids)
    flaky = _flaky(session, runs, list(failing.values()), results, here)
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
        flaky=flaky, perf_alerts=_perf_alerts(session, run, ids))


def _culprit_hashes_of(session: Any, run_ids: list[int]) -> set[str]:
    """Tests a bisect of these runs pinned to a commit: broken, not flaky."""
    c = Culprit.__table__
    return set(session.execute(select(c.c.nodeid_hash).where(c.c.run_id.in_(run_ids))).scalars())


def _failed_before(session: Any, runs: list[Any], hashes: set[str]) -> set[str]:
    """Of `hashes`, the tests that failed in one of the last HISTORY_RUNS earlier runs of these runner groups."""
    if not hashes:
        return set()
    r, t = Run.__table__, TestResult.__table__
    first = min(x.id for x in runs)
    groups = [x.runner_group for x in runs if x.runner_group]
    cond = r.c.runner_group.in_(groups) if groups else r.c.runner_group.is_(None)
    earlier = select(r.c.id).where(and_(r.c.id < first, cond)).order_by(r.c.id.desc()).limit(HISTORY_RUNS)
    earlier_ids = list(session.execute(earlier).scalars())
    if not earlier_ids:
        return set()
    rows = session.execute(select(t.c.nodeid_hash).where(and_(
        t.c.nodeid_hash.in_(sorted(hashes)), t.c.run_id.in_(earlier_ids),
        t.c.outcome.in_(FAILING_OUTCOMES))).distinct()).scalars()
    return set(rows)


def _flaky(session: Any, runs: list[Any], failing: list[Any], results: list[Any], broken: set[str]) -> list[Flaky]:
    """Tests of these runs with flaky evidence (see the module docstring), never one with a culprit here."""
    t, f = TestResult.__table__, FlakyTest.__table__
    ids = [x.id for x in runs]
    final = {(row.run_id, row.nodeid_hash): row for row in results}
    retried = sorted({h for (_, h), row in final.items() if (row.attempt or 1) > 1})  # only these can disagree
    attempts = session.execute(select(t.c.run_id, t.c.nodeid_hash, t.c.nodeid, t.c.outcome, t.c.device,
                                      t.c.signature).where(
        and_(t.c.run_id.in_(ids), t.c.nodeid_hash.in_(retried)))).all() if retried else []
    tried: dict[tuple[int, str], list[Any]] = defaultdict(list)
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
    hashes = {row.nodeid_hash for row in failing} - broken
    if not hashes:
        return sorted(out.values(), key=lambda x: (-x.fail_rate, x.nodeid))
    ways = {row.nodeid_hash: row.signature for row in failing}
    records = [row for row in session.execute(select(f).where(f.c.nodeid_hash.in_(sorted(hashes)))).all()
               if is_flaky(row.failures, row.attempts)  # a record of another way of failing is no evidence
               and (not row.signature or not ways.get(row.nodeid_hash) or row.signature == ways[row.nodeid_hash])]
    failed_before = _failed_before(session, runs, {row.nodeid_hash for row in records})
    for row in records:  # evidence 2: recorded flaky by this run's confirmation / bisect, or 3: record + history
        if row.last_run_id in ids or row.nodeid_hash in failed_before:
            out.setdefault(row.nodeid, Flaky(row.nodeid, row.device or "", row.failures, row.attempts,
                                             signature=row.signature or None))
    return sorted(out.values(), key=lambda x: (-x.fail_rate, x.nodeid))


def _perf_alerts(session: Any, run: Any, run_ids: list[int]) -> list[PerfAlertItem]:
    p = PerfAlert.__table__
    cond = p.c.run_id.in_(run_ids)
    if run.commit_sha:
        cond = or_(cond, p.c.commit_after == run.commit_sha)
    rows = session.execute(select(p).where(cond).order_by(p.c.direction.desc(), p.c.magnitude.desc())).all()
    return [PerfAlertItem(row.metric, row.model, row.gpu_name, row.commit_before, row.commit_after,
                          row.value_before, row.value_after, row.magnitude, row.p_value, row.direction)
            for row in rows]


def wall_time_text(seconds: float | None) -> str:
    """`1h 02m`, `12m 03s`, `45s`."""
    if seconds is None:
        return "unknown"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}h {m:02d}m" if h else (f"{m}m {sec:02d}s" if m else f"{sec}s")

