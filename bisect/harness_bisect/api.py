"""Bisect of tests between two revisions: `prepare` (validate), `execute` (search), or both: `run_bisect`;
and `probe_at`, one batched rerun of tests at one commit.

The engine imports nothing of the platform: the caller gives a repository, a range, the tests, how to
probe (pytest command, environment, install command) and a `ResultSink`, and gets a `BisectResult`.
Order of work: validate everything (one-line BisectError, nothing written), make the worktree pool (made
once; each probe moves a worktree to its commit) and start the probe server (`servers`: the tests'
third-party imports loaded once, a forked child per probe), verify the endpoints (flake-aware, or perf
sampling), run the k-ary search, describe the culprits, hand them to the sink with the `cost` of the
search (`cost`: where the wall time went, per phase and along each round's slowest probe). Worktrees are removed on the way out, also on SIGINT/SIGTERM; after a SIGKILL the next
bisect of the same repository removes them.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import git

from harness_bisect.executor import Executor, ProbeRequest, Progress
from harness_bisect.gitops import (
    BisectError,
    commit_info,
    commit_range,
    open_repo,
    resolve,
    subdir_of,
    validate_range,
)
from harness_bisect.perf import NONE, REGRESSION, PerfOracle, Threshold, parse_threshold
from harness_bisect.probe import (
    InstallFor,
    ProbeConfig,
    ProbeResult,
    ProbeRunner,
    allow_probes,
    kill_live,
)
from harness_bisect.report import BisectResult, CulpritReport, ResultSink
from harness_bisect.search import Scheduler
from harness_bisect.verify import FailOracle, not_run_reason, verify_endpoints
from harness_bisect.worktrees import WorktreePool, cache_root


@dataclass
class BisectRequest:
    """What to bisect and how. `threshold` ("0.25": a metric value; "10%": a relative change) is required
    with `perf_metric`."""

    repo: str | Path
    good: str
    bad: str
    tests: list[str]
    workers: int = 1
    retries: int = 3
    first_parent: bool = True
    perf_metric: str | None = None
    threshold: float | str | Threshold | None = None
    samples: int = 6
    probe_timeout_s: float = 1800.0
    install: str | None = None
    install_for: InstallFor | None = None  # per checkout: the target's install command, or None
    pytest_command: list[str] | None = None  # how a probe starts pytest (default: `python -m pytest`)
    cache_dir: str | Path | None = None
    # Device slots from the caller's inventory (e.g. ["0", "1"], or "0,1" for a two-GPU probe; list a GPU
    # twice to run two probes on it): one probe per slot at a time (workers are capped at the slot count),
    # each with that slot as CUDA_VISIBLE_DEVICES. None or empty: probes keep the caller's environment.
    devices: Sequence[str] | None = None
    env: dict[str, str] = field(default_factory=dict)  # extra environment of every probe
    fork: bool = True  # fork probes from a probe server (see `servers`); HARNESS_BISECT_FORK=0 also turns it off


def _validate(req: BisectRequest) -> list[str]:
    tests = list(dict.fromkeys(t.strip() for t in req.tests if t and t.strip()))
    if not tests:
        raise BisectError("no tests to bisect: pass --tests NODEID (repeatable) or --run ID")
    if req.workers < 1:
        raise BisectError(f"--workers must be at least 1, got {req.workers}")
    if req.devices is not None and any(not str(d).strip() for d in req.devices):
        raise BisectError("empty device slot in devices: give a CUDA_VISIBLE_DEVICES value per slot")
    if req.retries < 1:
        raise BisectError(f"--retries must be at least 1, got {req.retries}")
    if req.perf_metric is not None:
        if req.threshold is None:
            raise BisectError("--perf needs --threshold X (a metric value such as 0.25, or a change such as 10%)")
        try:
            if not isinstance(req.threshold, Threshold):
                req.threshold = parse_threshold(req.threshold)
        except ValueError as exc:
            raise BisectError(f"bad --threshold: {exc}") from None
    elif req.threshold is not None:
        raise BisectError("--threshold only applies with --perf METRIC")
    return tests


@contextmanager
def _interruptible() -> Iterator[None]:
    """Turn SIGTERM into SystemExit, so that probes are killed and worktrees removed on the way out."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main else None

    def on_term(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    if main:
        signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)


def _search(executor: Executor, scheduler: Scheduler, oracle: FailOracle | PerfOracle,
            positions: list[str]) -> None:
    limit = 4 * scheduler.target_rounds + 64
    while (plan := scheduler.next_round()) and limit > 0:
        limit -= 1
        requests = [ProbeRequest(p, positions[p], tuple(sorted(tests)),
                                 max(oracle.repeat(t, p) for t in tests)) for p, tests in sorted(plan.items())]
        results = executor.run_round(requests)
        for req, res in results.items():
            for test in req.tests:
                scheduler.record(test, req.position, oracle.judge(test, req.position, res.attempts[test]))


def _verify_perf(executor: Executor, oracle: PerfOracle, positions: list[str], tests: list[str]) -> tuple[
        list[str], list[str]]:
    """Sample both endpoints until each test is a regression or not; (regressed, not_reproduced)."""
    bad = len(positions) - 1
    open_tests, regressed, steady = list(tests), [], []
    first = True
    while open_tests:
        reqs = [ProbeRequest(pos, positions[pos], tuple(open_tests),
                             max(oracle.repeat(t, pos) for t in open_tests)) for pos in (bad, 0)]
        for req, res in executor.run_round(reqs).items():
            if first and req.position == bad:
                refuse_not_run({t: why for t in req.tests if (why := not_run_reason(res.attempts[t]))},
                               positions[bad])
            for t in req.tests:
                oracle.add(t, req.position, res.attempts[t])
        first = False
        still = []
        for t in open_tests:
            verdict = oracle.verify(t)
            (regressed if verdict == REGRESSION else steady if verdict == NONE else still).append(t)
        open_tests = still
    return regressed, steady


def refuse_not_run(did_not_run: dict[str, str], bad: str) -> None:
    """A test that did not run at bad is bad input (a wrong node id, a missing environment), never a verdict."""
    if did_not_run:
        test, why = next(iter(did_not_run.items()))
        more = f" (and {len(did_not_run) - 1} more test(s) that did not run there)" if len(did_not_run) > 1 else ""
        raise BisectError(f"{test} did not run at bad {bad[:12]}: {why}{more}")


@dataclass
class Plan:
    """A validated request: its tests and the commit at every position (0 = good, last = bad)."""

    req: BisectRequest
    tests: list[str]
    repo: git.Repo
    positions: list[str]
    subdir: str = ""


def prepare(req: BisectRequest) -> Plan:
    """Validate the request (one-line BisectError on bad input) and list the commit range."""
    tests = _validate(req)
    repo = open_repo(req.repo)
    good, bad = validate_range(repo, req.good, req.bad)
    commits = commit_range(repo, good, bad, req.first_parent)
    if not commits or commits[-1] != bad:
        raise BisectError(f"no first-parent path from {req.bad} back to {req.good}: "
                          "pass --no-first-parent or a good revision on bad's first-parent line")
    return Plan(req=req, tests=tests, repo=repo, positions=[good, *commits], subdir=subdir_of(repo, req.repo))


def execute(plan: Plan, progress: Progress | None = None, sink: ResultSink | None = None) -> BisectResult:
    """Verify the endpoints, search, describe the culprits of a prepared bisect, and give them to `sink`."""
    started = time.perf_counter()
    allow_probes()
    req, positions = plan.req, plan.positions
    cache = cache_root(req.cache_dir)
    config = ProbeConfig(timeout_s=req.probe_timeout_s, metric=None if req.perf_metric in (None, "duration")
                         else req.perf_metric, install=req.install, install_for=req.install_for,
                         pytest_command=req.pytest_command, subdir=plan.subdir,
                         gpus=[str(d).strip() for d in req.devices or []], env=dict(req.env), fork=req.fork)
    workers = min(req.workers, len(config.gpus)) if config.gpus else req.workers
    result = BisectResult(good=positions[0], bad=positions[-1], commits_in_range=len(positions) - 1,
                          workers=workers, method="perf" if req.perf_metric else "bisect")
    with _interruptible(), WorktreePool(plan.repo, workers, cache, start=positions[-1]) as pool:
        executor = Executor(pool, ProbeRunner(config, cache), progress)
        try:
            if plan.repo.working_tree_dir:
                executor.runner.prestart(pool.trees[0], positions[-1], plan.tests, Path(plan.repo.working_tree_dir))
            scheduler, oracle = _verify_and_plan(executor, req, positions, plan.tests, result)
            _search(executor, scheduler, oracle, positions)
        except BaseException:
            kill_live()  # before waiting for the workers and removing their worktrees
            raise
        finally:
            executor.close()
    _describe(plan.repo, result, scheduler, positions)
    result.probes, result.rounds = executor.invocations, executor.rounds
    result.cost = executor.cost.to_json()
    result.wall_s = time.perf_counter() - started
    if sink is not None:
        sink.record(result)
    return result


def run_bisect(req: BisectRequest, progress: Progress | None = None, sink: ResultSink | None = None) -> BisectResult:
    """Find the commit that broke each test (or moved its metric) between `req.good` and `req.bad`."""
    return execute(prepare(req), progress, sink)


def probe_at(repo: str | Path, commit: str, tests: list[str], repeat: int, *, env: dict[str, str] | None = None,
             install_for: InstallFor | None = None, cache_dir: str | Path | None = None,
             devices: Sequence[str] | None = None) -> ProbeResult:
    """Run `tests` `repeat` times each at `commit` of `repo`, in one pytest process in a cache worktree (the
    user's checkout is untouched), on the first of `devices` (the caller's inventory), if any."""
    git_repo = open_repo(repo)
    sha = resolve(git_repo, commit)
    cache = cache_root(cache_dir)
    with WorktreePool(git_repo, 1, cache, start=sha) as pool:
        config = ProbeConfig(gpus=[str(d) for d in devices or []][:1], install_for=install_for,
                             subdir=subdir_of(git_repo, repo), env=dict(env or {}))
        return ProbeRunner(config, cache).run(pool.trees[0], sha, tests, repeat=repeat)


def _verify_and_plan(executor: Executor, req: BisectRequest, positions: list[str], tests: list[str],
                     result: BisectResult) -> tuple[Scheduler, FailOracle | PerfOracle]:
    n = len(positions) - 1
    if req.perf_metric:
        oracle: FailOracle | PerfOracle = PerfOracle(req.perf_metric, req.threshold, n, req.samples)  # type: ignore[arg-type]
        regressed, steady = _verify_perf(executor, oracle, positions, tests)
        result.not_reproduced = steady
        return Scheduler(regressed, n, result.workers), oracle
    check = verify_endpoints(executor, positions[0], positions[-1], n, tests, req.retries)
    refuse_not_run(check.did_not_run, positions[-1])
    if check.fails_at_good:
        more = f" (and {len(check.fails_at_good) - 1} more)" if len(check.fails_at_good) > 1 else ""
        raise BisectError(f"{check.fails_at_good[0]}{more} fails at good {positions[0][:12]} too, every attempt: "
                          "the breakage predates it; pass an older --good")
    result.flaky = list(check.flaky)
    result.not_reproduced = check.not_reproduced
    return Scheduler(check.candidates, n, result.workers), FailOracle(check.collect_fails)


def _describe(repo: git.Repo, result: BisectResult, scheduler: Scheduler, positions: list[str]) -> None:
    by_range: dict[tuple[int, ...], list[str]] = defaultdict(list)
    for test, rng in scheduler.resolutions().items():
        by_range[tuple(rng)].append(test)
    for rng, tests in sorted(by_range.items(), key=lambda kv: kv[0][-1]):
        info = commit_info(repo, positions[rng[-1]])
        result.culprits.append(CulpritReport(commit=info.sha, author=info.author, email=info.email,
                                             subject=info.subject, pr=info.pr, tests=sorted(tests),
                                             range=[positions[p] for p in rng]))
    result.skipped_commits = [positions[p] for p in sorted(scheduler.skipped())]
