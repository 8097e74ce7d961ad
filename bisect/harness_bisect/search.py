"""The batched k-ary scheduler: which commits to probe each round, for which tests. Pure logic, no git.

Positions index the range: 0 is `good` (known to pass), 1..N the commits after it, N is `bad` (known to
fail). Each test keeps its own observations; its open interval is (lo, hi) where lo is the latest
passing position and hi the first failing position after it, so a test that broke, was fixed and broke
again is blamed for the breakage it fails with now. Tests with the same interval form a group and
share every probe; a probe also serves every other open test whose interval contains it.

A round gives each group up to `workers` probes that split its interval into equal parts, but no more
than needed to finish within the same number of rounds: with r rounds left, an interval of n
candidates needs the smallest k with k**r >= n parts (k - 1 probes). The search therefore ends in
ceil(log_(w+1) N) rounds, plus one per round lost to skipped (unbuildable) commits, with fewer probes
than a fixed w per interval. Verdicts are pass, fail, skip (could not run: pick a neighbour) and
unsure (measure the same commit again, for timing regressions).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

PASS, FAIL, SKIP, UNSURE = "pass", "fail", "skip", "unsure"


def rounds_needed(slots: int, workers: int) -> int:
    """ceil(log_(workers+1) slots), in integers: rounds of k-ary search that isolate one of `slots`."""
    rounds, reach = 0, 1
    while reach < slots:
        reach *= workers + 1
        rounds += 1
    return rounds


def probes_for(slots: int, rounds_left: int, workers: int) -> int:
    """Fewest probes (at most `workers`) that keep `slots` candidates on track to finish in time."""
    if slots <= 1:
        return 0
    for parts in range(2, workers + 2):
        if parts ** max(1, rounds_left) >= slots:
            return min(parts - 1, slots - 1)
    return min(workers, slots - 1)


def split_points(candidates: list[int], hi: int, probes: int) -> list[int]:
    """`probes` positions from `candidates` (interior, unskipped, sorted) cutting (lo, hi] evenly."""
    slots = len(candidates) + 1  # every candidate, plus hi itself
    picks: list[int] = []
    for i in range(1, probes + 1):
        idx = (i * slots) // (probes + 1) - 1
        idx = min(max(idx, 0), len(candidates) - 1)
        if candidates[idx] not in picks:
            picks.append(candidates[idx])
    return sorted(picks)


@dataclass
class TestState:
    """What is known about one test: its verdict at each probed position."""

    test: str
    bad: int
    obs: dict[int, str] = field(default_factory=dict)
    unsure: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.obs.setdefault(0, PASS)
        self.obs.setdefault(self.bad, FAIL)

    def bounds(self) -> tuple[int, int]:
        """(lo, hi): latest passing position, and the first failing position after it."""
        lo = max(p for p, v in self.obs.items() if v == PASS)
        hi = min(p for p, v in self.obs.items() if v == FAIL and p > lo)
        return lo, hi

    def candidates(self) -> list[int]:
        """Interior positions of the interval not yet known to be unrunnable."""
        lo, hi = self.bounds()
        return [p for p in range(lo + 1, hi) if self.obs.get(p) != SKIP]

    def pending(self) -> list[int]:
        """Positions to measure again (unsure verdicts still inside the interval)."""
        lo, hi = self.bounds()
        return sorted(p for p in self.unsure if lo < p < hi)

    @property
    def resolved(self) -> bool:
        return not self.candidates() and not self.pending()

    def culprit_range(self) -> list[int]:
        """Positions that may hold the culprit: hi, plus the skipped commits just before it."""
        lo, hi = self.bounds()
        return list(range(lo + 1, hi + 1))


class Scheduler:
    """Plans rounds of probes over many tests and folds verdicts back in."""

    def __init__(self, tests: Iterable[str], commits: int, workers: int = 1) -> None:
        if commits < 1:
            raise ValueError("the range must hold at least one commit")
        self.n = commits
        self.workers = max(1, workers)
        self.states = {t: TestState(t, commits) for t in tests}
        self.target_rounds = rounds_needed(commits, self.workers)
        self.rounds = 0

    def open_tests(self) -> list[TestState]:
        return [s for s in self.states.values() if not s.resolved]

    def next_round(self) -> dict[int, set[str]]:
        """position -> tests to probe there; empty when every test is resolved."""
        plan: dict[int, set[str]] = defaultdict(set)
        groups: dict[tuple[int, int, tuple[int, ...]], list[TestState]] = defaultdict(list)
        for state in self.open_tests():
            pending = state.pending()
            if pending:  # remeasure first; new split points wait for the verdict
                for p in pending:
                    plan[p].add(state.test)
                continue
            lo, hi = state.bounds()
            groups[(lo, hi, tuple(state.candidates()))].append(state)
        rounds_left = max(1, self.target_rounds - self.rounds)
        for (_lo, hi, cands), members in groups.items():
            if not cands:
                continue
            k = probes_for(len(cands) + 1, rounds_left, self.workers)
            for p in split_points(list(cands), hi, max(1, k)):
                plan[p].update(s.test for s in members)
        # A probe serves every open test whose interval contains it, at no extra invocation.
        for p in list(plan):
            for state in self.open_tests():
                lo, hi = state.bounds()
                if lo < p < hi and state.obs.get(p) not in (SKIP, PASS, FAIL) and not state.pending():
                    plan[p].add(state.test)
        if plan:
            self.rounds += 1
        return dict(plan)

    def record(self, test: str, position: int, verdict: str) -> None:
        """Fold in the verdict for `test` at `position`."""
        state = self.states[test]
        if verdict == UNSURE:
            state.unsure.add(position)
            return
        state.unsure.discard(position)
        if verdict not in (PASS, FAIL, SKIP):
            raise ValueError(f"unknown verdict {verdict!r}")
        state.obs[position] = verdict

    def resolutions(self) -> dict[str, list[int]]:
        """test -> candidate positions of its culprit (one position when exact)."""
        return {t: s.culprit_range() for t, s in self.states.items()}

    def skipped(self) -> set[int]:
        """Positions that were a skip for some test."""
        return {p for s in self.states.values() for p, v in s.obs.items() if v == SKIP}
