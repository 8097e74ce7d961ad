"""Confirmation reruns: each new-failure candidate runs N more times at the run's own commit.

The repository is `--repo`, else `runs.repo` when that path exists here, else the current directory.
The commit is checked out in a git worktree in the cache folder (the user's checkout is untouched) and
all candidates run in one pytest process, N attempts each. A candidate that fails every attempt stays
new; one with mixed results (`harness_bisect.flaky.is_flaky` over the original failure and the reruns
that ran) is flaky: it leaves `new` and its counts accumulate in `flaky_tests`, keyed by the failure's
signature (a rerun that fails another way is not a pass: a test failing two ways stays new). A candidate that cannot run here (skipped, not collected, no install)
stays new, unconfirmed.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from harness_bisect.flaky import Flaky, observe_signature

from harness.signature import exception_type, signature
from harness.store import Store
from harness.triage.bisect_glue import FAIL, recorded_repo, rerun
from harness.triage.flaky import record_flaky
from harness.triage.new_failures import NewFailures, TestDelta
from harness.triage.runs import TriageError, get_run

INCONCLUSIVE = ("skipped", "xfail", "absent", "deselected", "not_run", "collect_error")


def _signature_of(attempt: object, delta: TestDelta) -> str | None:
    """The failure signature of a rerun attempt (None when it has no message to tell)."""
    message = getattr(attempt, "message", None)
    if not message or getattr(attempt, "status", None) != FAIL:
        return None
    return signature(exception_type(message), message, delta.model)


def confirm_new_failures(store: Store, result: NewFailures, attempts: int = 3, repo: str | Path | None = None,
                         cache_dir: str | Path | None = None) -> NewFailures:
    """Rerun `result.new` `attempts` times at the run's commit; move mixed ones to `flaky` (and the store)."""
    if attempts < 1:
        raise TriageError(f"--attempts must be at least 1, got {attempts}")
    if not result.new:
        return replace(result, confirmed=True)
    with store.session() as s:
        run = get_run(s, result.run_id)
        repo_path, sha = recorded_repo(run.repo, repo), run.commit_sha
    if not repo_path:
        raise TriageError(f"run {result.run_id} has no repository path recorded: pass --repo PATH or --no-confirm")
    if not sha:
        raise TriageError(f"run {result.run_id} has no commit recorded: cannot rerun it; pass --no-confirm")
    # with the environment their suites had in the run (e.g. RUN_SLOW=1)
    found = rerun(repo_path, sha, [d.nodeid for d in result.new], {d.suite for d in result.new}, attempts,
                  cache_dir)
    keep: list[TestDelta] = []
    flaky: list[Flaky] = []
    for delta in result.new:
        ran = [a for a in found.get(delta.nodeid, []) if a.outcome not in INCONCLUSIVE]
        tries = [(True, delta.signature), *((a.status == FAIL, _signature_of(a, delta)) for a in ran)]
        seen = observe_signature(delta.nodeid, tries, signature=delta.signature, device=delta.device or "")
        if seen is None:  # failed every attempt that ran (or none ran): stays new
            keep.append(delta)
        else:
            flaky.append(seen)
    record_flaky(store, flaky, result.run_id)
    return replace(result, new=keep, flaky=result.flaky + flaky, confirmed=True)
