"""The daily pipeline as library calls: baseline run, run, new failures, confirmation, bisect, Slack.

`run_daily` does it all on one machine (what `daily.yml` spreads over many); `triage_matrix` is the
step of `daily.yml` between ingest and `bisect.yml`: which ingested runs have candidate new failures,
and which Actions runner group reruns and bisects each (the one whose machine ran it).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from harness.bundle import read_bundle
from harness.errors import HarnessError
from harness.plan import GITHUB_MATRIX_CAP
from harness.run.runner_groups import RunnerGroupSpec, default_runner, load_runner_groups
from harness.store import Store
from harness.store.schema import Run

# The keys of one `triage_matrix` entry: what `bisect.yml` may read from `matrix.*`.
TRIAGE_KEYS = ("id", "run_id", "baseline_id", "runner", "runner_group", "machine_type", "container_options",
               "commit", "baseline_commit", "candidates")

Log = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


# ---- triage matrix (daily.yml: ingest -> bisect.yml) --------------------------------------------------


def bundle_run_uuids(paths: list[str]) -> list[str]:
    """Run uuids named in results bundles, in first-seen order."""
    if not paths:
        raise HarnessError("no results bundles given: pass the .jsonl files the run jobs uploaded")
    seen: dict[str, None] = {}
    for path in paths:
        for record in read_bundle(path):
            uuid = getattr(record, "uuid", None) or getattr(record, "run", None)
            if isinstance(uuid, str):
                seen.setdefault(uuid, None)
    return list(seen)


def runner_for(run: Run, specs: list[RunnerGroupSpec]) -> RunnerGroupSpec:
    """The Actions runner group whose machine ran `run` (by machine type, else its group's default)."""
    spec = next((s for s in specs if run.machine_type and s.machine_type == run.machine_type), None)
    if spec is not None:
        return spec
    if not run.runner_group:
        raise HarnessError(f"run {run.id} records neither a machine type nor a runner group: cannot place its rerun")
    return default_runner(run.runner_group)


def triage_matrix(bundles: list[str], db_url: str, max_jobs: int = GITHUB_MATRIX_CAP) -> dict[str, Any]:
    """Runs of these bundles (already ingested) with candidate new failures, as a `bisect.yml` matrix."""
    from harness.triage import NoBaselineError, find_new_failures

    uuids = bundle_run_uuids(bundles)
    store = Store.open(db_url)
    specs = load_runner_groups()
    entries, notes = [], []
    try:
        with store.session() as s:
            runs = {r.uuid: r for r in s.scalars(select(Run).where(Run.uuid.in_(uuids)))}
            missing = [u for u in uuids if u not in runs]
            if missing:
                raise HarnessError(f"run {missing[0]} of the bundles is not in the store: run `harness ingest` first")
            s.expunge_all()
        for uuid in uuids:
            run = runs[uuid]
            try:
                found = find_new_failures(store, run.id)
            except NoBaselineError as exc:
                notes.append(str(exc))
                continue
            if not found.new:
                continue
            with store.session() as s:
                baseline = s.get(Run, found.baseline_id)
                baseline_commit = baseline.commit_sha if baseline else None
            spec = runner_for(run, specs)
            entries.append({
                "id": f"run{run.id}-{spec.machine_type}", "run_id": run.id, "baseline_id": found.baseline_id,
                "runner": spec.name, "runner_group": spec.group, "machine_type": spec.machine_type,
                "container_options": spec.container_options, "commit": run.commit_sha,
                "baseline_commit": baseline_commit, "candidates": len(found.new)})
    finally:
        store.dispose()
    if len(entries) > max_jobs:
        notes.append(f"{len(entries) - max_jobs} run(s) with candidates left out: over {max_jobs} matrix jobs")
        entries.sort(key=lambda e: -e["candidates"])
        entries = entries[:max_jobs]
    odd = next((e for e in entries if set(e) != set(TRIAGE_KEYS)), None)
    if odd is not None:  # the contract with bisect.yml's `matrix.*`: never emit a key it does not read
        raise HarnessError(f"triage entry {odd.get('id')} has keys {sorted(odd)}, expected {list(TRIAGE_KEYS)}")
    return {"runs": len(uuids), "to_triage": len(entries), "notes": notes, "empty": not entries,
            "matrix": {"include": entries}}


def write_triage_output(result: dict[str, Any], path: str | Path) -> None:
    """Append `matrix=` and `empty=` (single-line JSON) to a `$GITHUB_OUTPUT` file."""
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(f"matrix={json.dumps(result['matrix'], separators=(',', ':'))}\n")
        fh.write(f"empty={'true' if result['empty'] else 'false'}\n")


# ---- the daily pipeline on one machine --------------------------------------------------------------


@dataclass
class DailyRequest:
    """What `harness pipeline daily` runs. `baseline` is a revision run first (in a temporary worktree);
    without it the baseline is the store's previous completed run (yesterday's, in CI)."""

    repo: str = "."
    db_url: str = "sqlite:///.harness/results.db"
    baseline: str | None = None
    models: str = "all"
    suites: str | None = None
    runner_group: str | None = None
    workers: int | None = None
    timeout: float | None = None
    attempts: int = 3
    bisect_workers: int = 2
    retries: int = 3
    slack_channel: str | None = None
    slack_out: str | None = None
    dry_run: bool = False
    bundle_dir: str | None = None


@dataclass
class DailyResult:
    """Every step's outcome; `to_json()` is what `harness pipeline daily --json` prints."""

    run_id: int
    commit: str
    baseline_id: int
    baseline_commit: str | None
    counts: dict[str, int]
    new_failures: dict[str, Any] = field(default_factory=dict)
    bisect: dict[str, Any] | None = None
    slack: dict[str, Any] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return 1 if self.new_failures.get("new") else 0

    def to_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "commit": self.commit, "baseline_id": self.baseline_id,
                "baseline_commit": self.baseline_commit,
                "counts": self.counts, "new_failures": self.new_failures, "bisect": self.bisect,
                "slack": self.slack}


def _resolve(repo_path: str, rev: str) -> str:
    import git

    from harness.run.metadata import open_repo

    try:
        return open_repo(repo_path).commit(rev).hexsha
    except (git.BadName, ValueError):
        raise HarnessError(f"--baseline {rev}: no such revision in {repo_path}") from None


def _counts_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{v} {k}" for k, v in counts.items() if v) or "no tests"


def _run(req: DailyRequest, repo: str, bundle_dir: str, branch: str | None = None) -> Any:
    from rich.console import Console

    from harness.run.runner import RunOptions, run

    outcome = run(RunOptions(models=req.models, suites=req.suites, runner_group=req.runner_group,
                             workers=req.workers, repo=repo, db_url=req.db_url, timeout=req.timeout,
                             bundle_dir=bundle_dir, show_progress=False, branch=branch), console=Console(stderr=True, quiet=True))
    if outcome.run_id is None:
        raise HarnessError(f"run {outcome.uuid} was NOT stored ({outcome.store_error}); its bundle is "
                           f"{outcome.bundle}: fix the database and `harness ingest` it")
    if outcome.status != "completed":  # pytest could not run the suites: no verdict to triage
        why = "; ".join(getattr(outcome, "pytest_failures", None) or []) or f"status {outcome.status}"
        raise HarnessError(f"run {outcome.run_id} did not complete ({why})")
    return outcome


def _check_store(url: str, need_completed_run: bool) -> None:
    """Reach the store without writing to it: an SQLite file that does not exist is not created, and
    no table is made. Raises when it is unreachable or, if `need_completed_run`, has nothing to compare with."""
    from sqlalchemy import inspect
    from sqlalchemy.engine import make_url

    none_yet = HarnessError("the store has no completed run to compare with: pass --baseline REV "
                            "(a revision to run first as the baseline)")
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        if not Path(parsed.database).expanduser().exists():
            if need_completed_run:
                raise none_yet
            return
    store = Store.open(url, upgrade=False)  # connects (StoreError when it cannot), migrates nothing
    try:
        if not need_completed_run:
            return
        with store.engine.connect() as conn:
            if not inspect(conn).has_table("runs") or conn.execute(
                    select(Run.__table__.c.id).where(Run.__table__.c.status == "completed").limit(1)).first() is None:
                raise none_yet
    finally:
        store.dispose()


def _validate(req: DailyRequest) -> tuple[Any, Any, str | None]:
    """Every input checked before anything is written: settings, database URL and reachability, Slack,
    repository, models, suites, baseline revision, and (without --baseline) a completed run to compare with."""
    from harness.report.slack import SlackConfig
    from harness.run.metadata import commit_info, gpu_info
    from harness.run.runner_groups import detect_group, validate_group
    from harness.run.target import load_target
    from harness.store.db import validate_url

    if req.attempts < 1 or req.bisect_workers < 1 or req.retries < 1:
        raise HarnessError("--attempts, --bisect-workers and --retries must be at least 1")
    if req.workers is not None and req.workers < 0:
        raise HarnessError(f"-n/--workers must be 0 or more, not {req.workers}")
    if req.timeout is not None and req.timeout <= 0:
        raise HarnessError(f"--timeout must be a positive number of seconds, not {req.timeout}")
    validate_url(req.db_url)
    if req.runner_group:
        validate_group(req.runner_group)
    slack = SlackConfig.from_env(req.slack_channel)
    if not req.dry_run:
        slack.validate()  # before anything runs: no half-done pipeline for want of a token
    slack.mentions()  # an unreadable users file is bad input too
    head = commit_info(req.repo)
    target = load_target(head.repo)
    target.resolve_models(req.models)
    group = req.runner_group or detect_group(gpu_info().count)
    if not target.resolve_suites(req.suites, group):
        raise HarnessError(f"no suite of {head.repo} runs on runner group {group}: pass --suite or --runner-group")
    baseline = _resolve(req.repo, req.baseline) if req.baseline else None
    _check_store(req.db_url, need_completed_run=baseline is None)
    return slack, head, baseline


def run_daily(req: DailyRequest, log: Log = _quiet) -> DailyResult:
    """Baseline run (if needed), run at HEAD, new failures, confirmation, bisect, Slack; all stored.
    `log` gets one readable line per step (baseline, run, new failures, confirm, bisect, notify)."""
    from harness_bisect.checkout import checkout_at

    from harness.report.slack import notify_slack
    from harness.triage import NoBaselineError, find_new_failures
    from harness.triage.bisect_glue import bisect_run, engine_errors
    from harness.triage.confirm import confirm_new_failures

    slack, head, baseline_sha = _validate(req)
    bundle_dir = req.bundle_dir or str(Path(req.repo).resolve() / ".harness" / "bundles")
    baseline_id = None
    if baseline_sha:
        with engine_errors(), checkout_at(req.repo, baseline_sha) as tree:  # in the bisect's worktree cache
            # the baseline belongs to the branch under test, so reports and the next day's triage
            # find it as that branch's previous run
            base = _run(req, str(tree), bundle_dir, branch=head.branch)
        baseline_id = base.run_id
        log(f"baseline: run {baseline_id} at {baseline_sha[:12]} (temporary worktree): "
            f"{_counts_text(base.tally.counts())}")
    else:
        log("baseline: the store's previous completed run of this branch and runner group")
    outcome = _run(req, req.repo, bundle_dir)
    log(f"run: run {outcome.run_id} at {outcome.commit[:12]} on {outcome.runner_group}: "
        f"{_counts_text(outcome.tally.counts())}")
    store = Store.open(req.db_url)
    try:
        try:
            found = find_new_failures(store, outcome.run_id, baseline_id)
        except NoBaselineError as exc:
            raise HarnessError(f"{exc} (or pass --baseline REV to run one)") from None
        log(f"new failures: {len(found.new)} candidate(s) against run {found.baseline_id} "
            f"({len(found.still_failing)} still failing, {len(found.fixed)} fixed)")
        candidates = len(found.new)
        found = confirm_new_failures(store, found, attempts=req.attempts, repo=req.repo)
        log(f"confirm: {len(found.new)} of {candidates} confirmed new, {len(found.flaky)} flaky "
            f"({req.attempts} rerun(s) each)" if candidates else "confirm: nothing to rerun")
        with store.session() as s:
            base_run = s.get(Run, found.baseline_id)
            base_commit = base_run.commit_sha if base_run else None
        bisect_json = None
        if found.new:
            result = bisect_run(store, outcome.run_id, repo=req.repo, baseline_id=found.baseline_id,
                                workers=req.bisect_workers, retries=req.retries)
            bisect_json = result.to_json()
            log(f"bisect: {len(result.culprits)} culprit(s) for {len(found.new)} test(s) in {result.probes} "
                f"probe(s), {result.rounds} round(s)"
                + "".join(f"; {c['commit'][:12]} ({len(c['tests'])} test(s))" for c in bisect_json["culprits"]))
        else:
            log("bisect: skipped (no confirmed new failure)")
        note = notify_slack(store, slack, run_id=outcome.run_id, out=req.slack_out, dry_run=req.dry_run)
        log(f"notify: {_notify_text(note, req.dry_run)}")
        return DailyResult(
            run_id=outcome.run_id, commit=outcome.commit, baseline_id=found.baseline_id, baseline_commit=base_commit,
            counts=outcome.tally.counts(), new_failures=found.to_json(),
            bisect=bisect_json,
            slack={"delivered": note.delivered, "posted": note.posted, "out": str(note.out) if note.out else None,
                   "error": note.error, "dry_run": req.dry_run})
    finally:
        store.dispose()


def _notify_text(note: Any, dry_run: bool) -> str:
    kept = f"; payload kept in {note.out}" if note.out else ""
    if dry_run:
        return f"dry run, nothing posted{kept}"
    if note.delivered:
        return f"posted {note.posted} message(s) to Slack{kept}"
    return f"report NOT sent to Slack ({note.error}){kept}"


def summary_line(result: DailyResult) -> str:
    """The last line of `harness pipeline daily` (text mode)."""
    new = result.new_failures.get("counts", {}).get("new", 0)
    culprits = len((result.bisect or {}).get("culprits", []))
    return (f"daily: run {result.run_id} vs run {result.baseline_id}: {new} new failure(s), {culprits} culprit(s)"
            + (" (exit 1)" if result.exit_code else ""))
