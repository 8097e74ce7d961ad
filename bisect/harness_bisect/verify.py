"""Flake-aware endpoint verification and the pass/fail oracle of a test-failure bisect.

Before any search, each test runs `retries` times at `bad` and at `good` (one batched pytest process per
endpoint, in one round). Consistently failing at bad and passing at good: bisect it. A test that did
not run at bad (not collected there, deselected, skipped, xfailed, or its probe could not start) is
`did_not_run` with the reason: the caller's input is wrong, nothing is judged. Failing at both ends
(the breakage predates good) is `fails_at_good`: good is not good for it. Really passing at bad:
`not_reproduced`. Anything mixed at either end (`flaky.is_flaky` against `retries`): `flaky`,
never blamed. A test whose module cannot even be collected at bad failed by that collection error,
so for it a collection error counts as a failure everywhere; other skips stay skips.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from harness_bisect.executor import Executor, ProbeRequest
from harness_bisect.flaky import Flaky, is_flaky
from harness_bisect.probe import FAIL, PASS, RAN, SKIP, Attempt
from harness_bisect.search import FAIL as V_FAIL
from harness_bisect.search import PASS as V_PASS
from harness_bisect.search import SKIP as V_SKIP


@dataclass
class Verification:
    """Which tests to bisect, and which not (flaky, not reproduced)."""

    candidates: list[str] = field(default_factory=list)
    flaky: list[Flaky] = field(default_factory=list)
    not_reproduced: list[str] = field(default_factory=list)
    collect_fails: set[str] = field(default_factory=set)
    did_not_run: dict[str, str] = field(default_factory=dict)  # test -> why it did not run at bad
    fails_at_good: list[str] = field(default_factory=list)  # failing every attempt at both ends


def not_run_reason(attempts: list[Attempt]) -> str | None:
    """Why a test's attempts at one commit show no real run of it; None when some attempt ran."""
    if any(a.outcome in RAN for a in attempts):
        return None
    outcomes = {a.outcome for a in attempts}
    message = next((" ".join(a.message.split()) for a in attempts if a.message), "")
    detail = f" ({message[:200]})" if message else ""
    if not attempts or "absent" in outcomes:
        return "not collected there: no such test (node ids are relative to --repo)"
    if "deselected" in outcomes:
        return "deselected there by the target's own options or hooks"
    if "skipped" in outcomes:
        return f"skipped there{detail}"
    if "xfail" in outcomes:
        return f"xfailed there (an expected failure, not a pass){detail}"
    return f"could not run there{detail}"


def _fails(attempts: list[Attempt], collect_fails: bool) -> int:
    """Failed attempts; a collection error counts only for tests that fail that way at bad."""
    return sum(1 for a in attempts
               if a.status == FAIL or (collect_fails and a.status == SKIP and a.outcome == "collect_error"))


def classify(tests: list[str], at_bad: dict[str, list[Attempt]], at_good: dict[str, list[Attempt]],
             retries: int) -> Verification:
    """Sort tests by their endpoint attempts (see the module docstring). A test that cannot run at all at
    good (install failure, broken conftest) counts as not failing there."""
    out = Verification()
    for test in tests:
        bad = at_bad.get(test, [])
        collect_fail = any(a.outcome == "collect_error" for a in bad) and all(
            a.outcome == "collect_error" or a.status == FAIL for a in bad)
        f_bad = _fails(bad, collect_fail)
        f_good = _fails(at_good.get(test, []), collect_fail)
        reason = not_run_reason(bad) if f_bad == 0 else None
        if reason is not None:
            out.did_not_run[test] = reason
        elif f_bad == 0:
            out.not_reproduced.append(test)
        elif is_flaky(f_bad, retries) or is_flaky(f_good, retries):
            out.flaky.append(Flaky(test, "", failures=f_bad + f_good, attempts=2 * retries))
        elif f_good == retries:
            out.fails_at_good.append(test)
        else:  # failing every attempt at bad, none at good
            out.candidates.append(test)
            if collect_fail:
                out.collect_fails.add(test)
    return out


def verify_endpoints(executor: Executor, good: str, bad: str, bad_position: int, tests: list[str],
                     retries: int) -> Verification:
    """Run every test `retries` times at bad and at good, in one round, and classify them."""
    req_bad = ProbeRequest(bad_position, bad, tuple(tests), retries)
    req_good = ProbeRequest(0, good, tuple(tests), retries)
    results = executor.run_round([req_bad, req_good])
    return classify(tests, results[req_bad].attempts, results[req_good].attempts, retries)


class FailOracle:
    """Verdict of a test at a probe: fail if any attempt failed, skip if it could not run, else pass."""

    def __init__(self, collect_fails: set[str] | None = None) -> None:
        self.collect_fails = collect_fails or set()

    def repeat(self, test: str, position: int) -> int:
        return 1

    def judge(self, test: str, position: int, attempts: list[Attempt]) -> str:
        if any(a.status == FAIL for a in attempts):
            return V_FAIL
        if any(a.status == SKIP for a in attempts):
            if test in self.collect_fails and any(a.outcome == "collect_error" for a in attempts):
                return V_FAIL
            return V_SKIP
        return V_PASS if all(a.status == PASS for a in attempts) and attempts else V_SKIP
