"""Flaky detection keys on (test, signature): a test that fails two different ways is not one flaky test."""

from __future__ import annotations

from harness_bisect.flaky import Flaky, observe_signature
from sqlalchemy import select

from harness.bundle import ResultRecord, RunEnd, RunRecord
from harness.report.data import collect_report
from harness.store.db import Store
from harness.store.schema import FlakyTest
from harness.store.writer import write_records
from harness.triage.flaky import record_flaky

T = "tests/test_llama.py::test_generate"
S1, S2 = "aaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbb"


def test_failing_two_ways_is_not_flaky_failing_and_passing_is() -> None:
    assert observe_signature(T, [(True, S1), (True, S2), (True, S1)], signature=S1) is None
    assert observe_signature(T, [(True, S1), (True, S2)], signature=S2) is None
    seen = observe_signature(T, [(True, S1), (False, None), (True, S2)], signature=S1)
    assert seen is not None and seen.key == (T, S1) and (seen.failures, seen.attempts) == (1, 2)
    legacy = observe_signature(T, [(True, None), (False, None)], signature=None)  # no signatures: the old rule
    assert legacy is not None and legacy.key == (T, None)


def test_history_is_kept_per_signature(store: Store) -> None:
    record_flaky(store, [Flaky(T, "cpu", 1, 3, signature=S1), Flaky(T, "cpu", 2, 3, signature=S2)])
    record_flaky(store, [Flaky(T, "cpu", 1, 2, signature=S1)])
    with store.session() as s:
        rows = {r.signature: (r.failures, r.attempts) for r in s.scalars(select(FlakyTest))}
    assert rows == {S1: (2, 5), S2: (2, 3)}


def _run(store: Store, uuid: str, attempts: list[tuple[str, str | None]]) -> int:
    records: list = [RunRecord(uuid=uuid, branch="main", runner_group="cpu", started_at="2026-01-01T00:00:00")]
    records += [ResultRecord(run=uuid, nodeid=T, outcome=outcome, attempt=i + 1, model="llama", signature=sig,
                             message=f"RuntimeError: way {sig}" if sig else None, device="cpu")
                for i, (outcome, sig) in enumerate(attempts)]
    records.append(RunEnd(run=uuid, status="completed", finished_at="2026-01-01T01:00:00"))
    write_records(store, records)
    with store.session() as s:
        from harness.store.schema import Run

        return s.scalars(select(Run.id).where(Run.uuid == uuid)).one()


def test_report_does_not_call_a_test_failing_two_ways_flaky(store: Store) -> None:
    two_ways = _run(store, "run-two-ways", [("failed", S1), ("failed", S2)])
    assert collect_report(store, two_ways).flaky == []
    mixed = _run(store, "run-mixed", [("failed", S1), ("passed", None), ("failed", S1)])
    flaky = collect_report(store, mixed).flaky
    assert [(f.key, f.failures, f.attempts) for f in flaky] == [((T, S1), 2, 3)]
