"""The k-ary scheduler and the perf statistics as pure logic: simulated tests over up to 10,000 commits."""

from __future__ import annotations

import math
import random

import pytest
from harness_bisect.perf import DIFFERENT, SAME, compare, mann_whitney_p, parse_threshold
from harness_bisect.search import FAIL, PASS, SKIP, UNSURE, Scheduler, probes_for, rounds_needed, split_points


def simulate(n: int, workers: int, culprits: dict[str, int], skipped: frozenset[int] = frozenset(),
             unsure_once: frozenset[int] = frozenset()) -> tuple[Scheduler, int]:
    """Drive the scheduler with an oracle: test t fails at positions >= culprits[t]."""
    sched = Scheduler(culprits, n, workers)
    probes, seen = 0, set()
    while plan := sched.next_round():
        probes += len(plan)
        for pos, tests in plan.items():
            for t in tests:
                if pos in skipped:
                    verdict = SKIP
                elif pos in unsure_once and (t, pos) not in seen:
                    seen.add((t, pos))
                    verdict = UNSURE
                else:
                    verdict = FAIL if pos >= culprits[t] else PASS
                sched.record(t, pos, verdict)
    return sched, probes


@pytest.mark.parametrize("n", [1, 2, 7, 128, 1000, 10_000])
@pytest.mark.parametrize("workers", [1, 2, 4, 8])
def test_finds_every_culprit_within_the_round_bound(n: int, workers: int) -> None:
    rng = random.Random(n * 31 + workers)
    culprits = {f"t{i}": rng.randint(1, n) for i in range(6)}
    sched, probes = simulate(n, workers, culprits)
    assert {t: r for t, r in sched.resolutions().items()} == {t: [c] for t, c in culprits.items()}
    assert sched.rounds <= math.ceil(math.log(n, workers + 1) - 1e-9) if n > 1 else sched.rounds == 0
    assert probes <= len(set(culprits.values())) * workers * max(1, sched.rounds)


def test_tests_with_one_culprit_share_every_probe() -> None:
    one, _ = simulate(1024, 1, {"a": 700})
    many, probes = simulate(1024, 1, {f"t{i}": 700 for i in range(20)})
    assert many.rounds == one.rounds == 10 and probes == 10  # 20 tests cost what one does


def test_skipped_commit_costs_at_most_a_round_and_picks_a_neighbour() -> None:
    sched, _ = simulate(128, 1, {"a": 100}, skipped=frozenset({64}))
    assert sched.resolutions() == {"a": [100]}
    assert sched.skipped() == {64}
    assert sched.rounds <= rounds_needed(128, 1) + 1


def test_culprit_next_to_skipped_commits_is_reported_as_a_range() -> None:
    sched, _ = simulate(16, 1, {"a": 9}, skipped=frozenset({7, 8}))
    assert sched.resolutions() == {"a": [7, 8, 9]}


def test_unsure_verdict_remeasures_the_same_commit() -> None:
    sched, _ = simulate(64, 2, {"a": 40}, unsure_once=frozenset({22, 43}))
    assert sched.resolutions() == {"a": [40]}


def test_latest_breakage_is_blamed_when_a_test_broke_twice() -> None:
    sched = Scheduler(["a"], 30, 1)
    while plan := sched.next_round():
        for pos, tests in plan.items():
            for t in tests:  # fails on [5, 10) and from 20 on
                sched.record(t, pos, FAIL if 5 <= pos < 10 or pos >= 20 else PASS)
    assert sched.resolutions() == {"a": [20]}


def test_round_helpers() -> None:
    assert rounds_needed(128, 1) == 7 and rounds_needed(128, 4) == 4 and rounds_needed(10_000, 1) == 14
    assert probes_for(128, 4, 4) == 3  # 4 parts per round suffice for 4 rounds: no 4th probe
    assert probes_for(2, 1, 8) == 1 and probes_for(1, 3, 4) == 0
    assert split_points(list(range(1, 16)), 16, 1) == [8]
    assert split_points(list(range(1, 16)), 16, 3) == [4, 8, 12]


def test_mann_whitney_and_three_way_verdict() -> None:
    assert mann_whitney_p([1, 2, 3], [4, 5, 6]) == pytest.approx(0.1)
    assert mann_whitney_p([1.0] * 5, [1.0] * 5) == 1.0
    fast = [1.0 + i * 0.01 for i in range(8)]
    slow = [2.0 + i * 0.01 for i in range(8)]
    assert compare(fast, slow) == DIFFERENT
    assert compare(fast, list(reversed(fast))) == SAME
    assert compare([1.0, 2.0, 3.0], [2.5, 3.5, 4.5]) not in (DIFFERENT,)  # too few samples to call it


def test_threshold_forms() -> None:
    assert parse_threshold("10%").relative and parse_threshold("10%").value == pytest.approx(0.1)
    assert parse_threshold("0.25") == parse_threshold(0.25) and not parse_threshold("0.25").relative
    for bad in ("fast", "-5%", "nan", "inf"):
        with pytest.raises(ValueError):
            parse_threshold(bad)
