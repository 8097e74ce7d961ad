"""`harness bisect` as one library call: tests between revisions, or a stored run's new failures.

`harness bisect --run ID` bisects the run's new failures (minus those a confirmation rerun found
flaky) between its baseline's commit and its own, in `--repo`, else the repository recorded in
`runs.repo` when that path exists here, else the current directory. Culprits go to the `culprits` table; flaky tests found on the way to `flaky_tests`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness_bisect.api import BisectRequest, execute, prepare
from harness_bisect.executor import Progress
from harness_bisect.gitops import BisectError, recorded_repo
from harness_bisect.report import BisectResult, store_culprits


@dataclass
class RunInputs:
    """What `--run ID` bisects: the run's new failures between its baseline's commit and its own."""

    run_id: int
    baseline_id: int
    repo: str | None
    good: str | None
    bad: str | None
    tests: list[str]
    devices: dict[str, str] = field(default_factory=dict)
    suites: list[str] = field(default_factory=list)


def bisect_inputs(store: Any, run_id: int, baseline_id: int | None = None) -> RunInputs:
    """The good/bad commits, repository and tests of a stored run (see the module docstring)."""
    from harness.store.schema import nodeid_hash
    from harness.triage.new_failures import find_new_failures, flaky_in_run
    from harness.triage.runs import get_run

    found = find_new_failures(store, run_id, baseline_id)
    with store.session() as s:
        run, base = get_run(s, found.run_id), get_run(s, found.baseline_id)
        repo, bad, good = run.repo, run.commit_sha, base.commit_sha
    flaky = flaky_in_run(store, found.run_id)
    new = [d for d in found.new if nodeid_hash(d.nodeid) not in flaky]
    return RunInputs(run_id=found.run_id, baseline_id=found.baseline_id, repo=repo, good=good, bad=bad,
                     tests=[d.nodeid for d in new], devices={d.nodeid: d.device or "" for d in new},
                     suites=sorted({d.suite for d in new if d.suite}))


def bisect_run(store: Any, run_id: int, *, repo: str | Path | None = None, baseline_id: int | None = None,
               good: str | None = None, bad: str | None = None, progress: Progress | None = None,
               **options: Any) -> BisectResult:
    """Bisect run `run_id`'s new failures; store culprits (and flaky tests) against the run.

    `good`/`bad` override the baseline's and the run's commits (a CI checkout may name them itself)."""
    inputs = bisect_inputs(store, run_id, baseline_id)
    good, bad = good or inputs.good, bad or inputs.bad
    if not good or not bad:
        which = inputs.baseline_id if not good else run_id
        raise BisectError(f"run {which} has no commit recorded: pass --good and --bad")
    where = recorded_repo(inputs.repo, repo)
    if not where:
        raise BisectError(f"run {run_id} has no repository path recorded: pass --repo PATH")
    if not inputs.tests:
        return BisectResult(good=good, bad=bad, commits_in_range=0)
    from harness.run.target import suite_environment

    env = {**suite_environment(where, inputs.suites), **options.pop("env", {})}
    plan = prepare(BisectRequest(repo=where, good=good, bad=bad, tests=inputs.tests, env=env, **options))
    result = execute(plan, progress)
    store_culprits(store, result, run_id)
    if result.flaky:
        from harness.triage.flaky import FlakyObservation, record_flaky

        record_flaky(store, [FlakyObservation(f.test, inputs.devices.get(f.test, ""), f.failures, f.attempts)
                             for f in result.flaky], run_id)
    return result


def _under(path: str, folder: str) -> bool:
    folder = folder.strip().rstrip("/")
    return folder in ("", ".") or path == folder or path.startswith(folder + "/")


def suite_env_for_tests(root: str | Path, tests: list[str]) -> dict[str, str]:
    """The environment of the suites whose paths hold these tests, from the target description at `root`
    (e.g. RUN_SLOW=1 for a slow-suite test): a bisect of named tests sees what `harness run` gave them.
    A suite without paths is found through the target's `model_paths` pattern; env of every matching
    suite is merged, in the description's order."""
    from harness.run.target import load_target

    if not Path(root).is_dir():
        return {}  # prepare() says what is wrong with the repository
    target = load_target(root)
    files = {t.split("::", 1)[0].strip() for t in tests if t.strip()}
    env: dict[str, str] = {}
    for suite in target.suites.values():
        patterns = suite.paths or ([target.model_paths] if target.model_paths else [])
        folders = [q for p in patterns for q in ([p.format(model=m) for m in target.models] if "{model}" in p
                                                 else [p])]
        if suite.env and any(_under(f, d) for f in files for d in folders):
            env.update(suite.env)
    return env


def bisect_command(*, repo: str | None, good: str | None, bad: str | None, tests: list[str],
                   run_id: int | None, db: str | None, store_results: bool = True,
                   progress: Progress | None = None, **options: Any) -> BisectResult:
    """The whole `harness bisect` verb: validate, bisect, store. Bad input raises before anything runs."""
    from harness.config import resolve_db_url
    from harness.store import Store

    if run_id is not None:
        if tests:
            raise BisectError("--run takes its tests from the store (its new failures): drop --tests or --run")
        return bisect_run(Store.open(resolve_db_url(db)), run_id, repo=repo, good=good, bad=bad,
                          progress=progress, **options)
    if not good:
        raise BisectError("--good REV is required (a commit where the tests pass), or pass --run ID")
    where = repo or "."
    env = {**suite_env_for_tests(where, tests), **options.pop("env", {})}
    plan = prepare(BisectRequest(repo=where, good=good, bad=bad or "HEAD", tests=tests, env=env, **options))
    store = Store.open(resolve_db_url(db)) if store_results else None
    result = execute(plan, progress)
    if store is not None:
        store_culprits(store, result)
    return result
