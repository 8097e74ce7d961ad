"""The platform around the bisect engine (`harness_bisect`, which imports nothing of `harness`).

Here, and only here: what the target description says a probe needs (the suites' environment by a test's
path, the install command of each checkout), a stored run's new failures turned into a bisect, culprits
and flaky tests written to the store (a `ResultSink`), confirmation reruns for `triage/confirm.py`, and
the body of the `harness bisect` verb. Engine errors become `BisectInputError` (a `HarnessError`: exit 2).

`harness bisect --run ID` bisects the run's new failures (minus those a confirmation rerun found flaky)
between its baseline's commit and its own, in `--repo`, else the repository recorded in `runs.repo`
when that path exists here, else the current directory.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from harness_bisect.api import BisectRequest, execute, prepare, probe_at
from harness_bisect.api import run_bisect as engine_run_bisect
from harness_bisect.executor import Progress
from harness_bisect.gitops import BisectError
from harness_bisect.probe import FAIL, Attempt
from harness_bisect.report import BisectResult, ResultSink
from sqlalchemy import delete, text

from harness.errors import HarnessError
from harness.run.target import load_target, suite_environment
from harness.store import Store
from harness.store.schema import Culprit, nodeid_hash, utcnow
from harness.store.writer import insert_new
from harness.triage.flaky import record_flaky

__all__ = ["FAIL", "Attempt", "BisectInputError", "BisectRequest", "BisectResult", "StoreSink", "bisect_command",
           "bisect_run", "probe_devices", "recorded_repo", "rerun", "run_bisect", "store_culprits",
           "suite_env_for_tests", "target_install"]


class BisectInputError(HarnessError):
    """Bad bisect input, as the engine found it (unknown revision, no tests, a test not run at bad)."""


@contextmanager
def engine_errors() -> Iterator[None]:
    """Turn the engine's one-line `BisectError` into the platform's exit-2 error."""
    try:
        yield
    except BisectError as exc:
        raise BisectInputError(exc.message) from None


# ---- the target description, as probes need it ---------------------------------------------------


def probe_devices() -> list[str]:
    """Device slots for probes, one per visible GPU as harness's inventory (`run/metadata.gpu_info`, NVML)
    counts them: the CUDA_VISIBLE_DEVICES entries when set, else 0..n-1; none on a CPU machine."""
    from harness.run.metadata import gpu_info

    count = gpu_info().count
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [p.strip() for p in visible.split(",") if p.strip()] if visible is not None else [str(i) for i in range(count)]
    return ids[:count]


def _under(path: str, folder: str) -> bool:
    folder = folder.strip().rstrip("/")
    return folder in ("", ".") or path == folder or path.startswith(folder + "/")


def suite_env_for_tests(root: str | Path, tests: Iterable[str]) -> dict[str, str]:
    """The environment of the suites whose paths hold these tests, from the target description at `root`
    (e.g. RUN_SLOW=1 for a slow-suite test): a bisect of named tests sees what `harness run` gave them.
    A suite without paths is found through the target's `model_paths` pattern; env of every matching
    suite is merged, in the description's order."""
    if not Path(root).is_dir():
        return {}  # the engine says what is wrong with the repository
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


def target_install(checkout: Path) -> str | None:
    """The install command a checkout's own target description names (`install` of `[tool.harness]` or
    harness.toml), if any; a preset's default or an unreadable description installs nothing."""
    try:
        target = load_target(checkout)
    except HarnessError:
        return None
    if Path(target.source).name not in ("pyproject.toml", "harness.toml"):
        return None
    return target.install.strip() if target.install and target.install.strip() else None


def recorded_repo(recorded: str | None, override: str | Path | None) -> str | Path | None:
    """Where a stored run's repository is here: the override, else the recorded path if it exists on
    this machine, else the current directory (a CI job checks the same repository out elsewhere)."""
    if override:
        return override
    if recorded and Path(recorded).exists():
        return recorded
    return "." if (Path(".") / ".git").exists() else recorded


def run_bisect(req: BisectRequest, progress: Progress | None = None, sink: ResultSink | None = None) -> BisectResult:
    """The engine's bisect of a target repository: each checkout installed as its description says, the
    tests given their suites' environment (the request's own `env` wins)."""
    req.install_for = req.install_for or target_install
    req.devices = probe_devices() if req.devices is None else req.devices
    req.env = {**suite_env_for_tests(req.repo, req.tests), **req.env}
    with engine_errors():
        return engine_run_bisect(req, progress, sink)


def rerun(repo: str | Path, commit: str, tests: list[str], suites: Iterable[str | None], attempts: int,
          cache_dir: str | Path | None = None) -> dict[str, list[Attempt]]:
    """Per-test attempts of `tests` rerun `attempts` times at `commit` (confirmation), with the environment
    their suites had in the run (e.g. RUN_SLOW=1)."""
    env = suite_environment(repo, suites)
    with engine_errors():
        return probe_at(repo, commit, tests, attempts, env=env, install_for=target_install,
                        cache_dir=cache_dir, devices=probe_devices()).attempts


# ---- the store -------------------------------------------------------------------------------------


def store_culprits(store: Store, result: BisectResult, run_id: int | None = None) -> int:
    """Write one `culprits` row per blamed test, replacing earlier rows of the same bisect; rows written."""
    rows = []
    now = utcnow()
    for c in result.culprits:
        for test in c.tests:
            rows.append(Culprit(
                run_id=run_id, nodeid=test, nodeid_hash=nodeid_hash(test), commit_sha=c.commit,
                author=c.author, email=c.email, subject=c.subject, pr=c.pr, good_sha=result.good,
                bad_sha=result.bad, method=result.method, confidence=1.0 / max(1, len(c.range)),
                created_at=now))
    if not rows:
        return 0
    with store.session() as s:
        if s.get_bind().dialect.name == "postgresql":  # writers of the same bisect take turns (delete, then insert)
            s.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"),
                      {"key": f"culprits:{result.good}:{result.bad}:{result.method}"})
        for row in rows:
            same = delete(Culprit).where(Culprit.nodeid_hash == row.nodeid_hash, Culprit.method == row.method,
                                         Culprit.good_sha == row.good_sha, Culprit.bad_sha == row.bad_sha)
            if run_id is not None:
                same = same.where(Culprit.run_id == run_id)
            s.execute(same)
        for row in rows:  # natural key (test, commit, run): a culprit already stored is kept as it is
            insert_new(s.connection(), Culprit.__table__,
                       {c.name: getattr(row, c.name) for c in Culprit.__table__.columns if c.name != "id"})
    return len(rows)


@dataclass
class StoreSink:
    """The engine's `ResultSink` into the results store: culprits (against `run_id`, if any) and, for a
    run's bisect, the flaky tests found on the way (with the device each failed on)."""

    store: Store
    run_id: int | None = None
    devices: dict[str, str] | None = None

    def record(self, result: BisectResult) -> None:
        store_culprits(self.store, result, self.run_id)
        if result.flaky and self.devices is not None:
            record_flaky(self.store, [replace(f, device=self.devices.get(f.test, "")) for f in result.flaky],
                         self.run_id)


# ---- a stored run's new failures -------------------------------------------------------------------


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


def bisect_inputs(store: Store, run_id: int, baseline_id: int | None = None) -> RunInputs:
    """The good/bad commits, repository and tests of a stored run (see the module docstring)."""
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


def bisect_run(store: Store, run_id: int, *, repo: str | Path | None = None, baseline_id: int | None = None,
               good: str | None = None, bad: str | None = None, progress: Progress | None = None,
               **options: Any) -> BisectResult:
    """Bisect run `run_id`'s new failures; store culprits (and flaky tests) against the run.

    `good`/`bad` override the baseline's and the run's commits (a CI checkout may name them itself)."""
    inputs = bisect_inputs(store, run_id, baseline_id)
    good, bad = good or inputs.good, bad or inputs.bad
    if not good or not bad:
        which = inputs.baseline_id if not good else run_id
        raise BisectInputError(f"run {which} has no commit recorded: pass --good and --bad")
    where = recorded_repo(inputs.repo, repo)
    if not where:
        raise BisectInputError(f"run {run_id} has no repository path recorded: pass --repo PATH")
    if not inputs.tests:
        return BisectResult(good=good, bad=bad, commits_in_range=0)
    # the suites the run recorded win over those found by path
    env = {**suite_env_for_tests(where, inputs.tests), **suite_environment(where, inputs.suites),
           **options.pop("env", {})}
    with engine_errors():
        options.setdefault("devices", probe_devices())
        plan = prepare(BisectRequest(repo=where, good=good, bad=bad, tests=inputs.tests, env=env,
                                     install_for=target_install, **options))
        return execute(plan, progress, StoreSink(store, run_id, inputs.devices))


# ---- the `harness bisect` verb ---------------------------------------------------------------------


def bisect_command(*, repo: str | None, good: str | None, bad: str | None, tests: list[str],
                   run_id: int | None, db: str | None, store_results: bool = True,
                   progress: Progress | None = None, **options: Any) -> BisectResult:
    """The whole `harness bisect` verb: validate, bisect, store. Bad input raises before anything runs;
    the store opened here is disposed of on every way out."""
    from harness.config import resolve_db_url

    if run_id is not None:
        if tests:
            raise BisectInputError("--run takes its tests from the store (its new failures): drop --tests or --run")
        store = Store.open(resolve_db_url(db))
        try:
            return bisect_run(store, run_id, repo=repo, good=good, bad=bad, progress=progress, **options)
        finally:
            store.dispose()
    if not good:
        raise BisectInputError("--good REV is required (a commit where the tests pass), or pass --run ID")
    where = repo or "."
    env = {**suite_env_for_tests(where, tests), **options.pop("env", {})}
    with engine_errors():
        options.setdefault("devices", probe_devices())
        plan = prepare(BisectRequest(repo=where, good=good, bad=bad or "HEAD", tests=tests, env=env,
                                     install_for=target_install, **options))
    store = Store.open(resolve_db_url(db)) if store_results else None  # a refused URL: exit 2 before probes
    try:
        with engine_errors():
            return execute(plan, progress, StoreSink(store) if store is not None else None)
    finally:
        if store is not None:
            store.dispose()
