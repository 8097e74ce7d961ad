"""`collect_report` over a store filled by real pytest runs with the harness plugin."""

from __future__ import annotations

import pytest
from sqlalchemy import delete, select

from harness.bundle import ResultRecord
from harness.report.blocks import Links, Mentions, build_report, iter_texts
from harness.report.data import ReportError, collect_report
from harness.store.db import Store
from harness.store.schema import Culprit, Run
from harness.store.writer import write_records

from .conftest import Populated
from .factory import BROKEN, FLAKY, cpu_regression
from .test_slack_blocks import assert_within_slack_limits


def test_report_of_the_broken_commit(populated: Populated) -> None:
    store = Store.open(populated.url)
    data = collect_report(store, populated.run_bad)
    assert data.run_ids == [populated.run_bad, populated.run_bad_multi]  # both runner groups of the commit
    assert data.runner_groups == ["single-gpu", "multi-gpu"]
    assert (data.workflow, data.event, data.branch, data.commit_sha) == (
        "Nightly CI", "schedule", "main", populated.bad_sha)
    assert data.totals == {"passed": 6, "failed": 6, "skipped": 4}  # two skips per run: one gated, one not
    assert data.wall_time_s is not None and data.wall_time_s > 0
    new = [(f.nodeid, f.runner_group) for f in data.new_failures]
    # the multi-GPU run has no multi-GPU baseline, so its failures count as still failing there
    assert ("tests/test_llama.py::test_generate", "single-gpu") in new
    gen = next(f for f in data.new_failures if f.runner_group == "single-gpu")
    assert gen.culprit is not None and gen.culprit.pr == 42 and gen.culprit.commit_sha == populated.bad_sha
    assert "<!channel>" in (gen.message or "")
    assert [f.nodeid for f in data.flaky] == ["tests/test_llama.py::test_flaky"]
    assert data.flaky[0].fail_rate == pytest.approx(0.3)
    assert [(f.nodeid, f.kind) for f in data.failing if f.nodeid == "tests/test_llama.py::test_flaky"] == [
        ("tests/test_llama.py::test_flaky", "flaky"), ("tests/test_llama.py::test_flaky", "flaky")]
    assert len(data.failing) == data.failed == 6  # every failing result once, flaky ones included
    assert "tests/test_mistral.py::test_old_bug" in {f.nodeid for f in data.still_failing}
    rows = {m.model: m.counts for m in data.models}
    assert rows == {"llama": {"single-gpu": 2, "multi-gpu": 2}, "mistral": {"single-gpu": 1, "multi-gpu": 1}}
    assert data.baseline_run_id == populated.run_good


def test_latest_run_by_default_and_missing_run(populated: Populated) -> None:
    store = Store.open(populated.url)
    assert collect_report(store).run_id == max(collect_report(store).run_ids)
    with pytest.raises(ReportError, match="no run 999999 in the store"):
        collect_report(store, 999999)


def test_cpu_run_tells_the_same_story_as_the_store(store: Store) -> None:
    """Issue 11 case 6, seeded: one CPU run, 13 tests broken by one commit, 2 real flakes (both backends)."""
    seeded = cpu_regression(store)
    data = collect_report(store, seeded.run_id)
    assert data.runner_groups == ["cpu"] and {f.runner_group for f in data.failing} == {"cpu"}
    assert data.failed == len(data.failing) == 15  # totals and the list come from one read
    assert sorted(f.nodeid for f in data.new_failures) == sorted(BROKEN)
    assert sorted(f.nodeid for f in data.flaky_failing) == sorted(FLAKY)  # real mixed history
    assert {f.nodeid for f in data.flaky} == set(FLAKY)  # the old records of broken tests do not count
    assert {m.model: m.counts for m in data.models} == {"llama": {"cpu": 7}, "mistral": {"cpu": 6},
                                                          "gpt2": {"cpu": 2}}
    report = build_report(data, Links("https://github.com/acme/models"), Mentions())
    texts = "\n".join(iter_texts(report.main.blocks))
    assert "GPU" not in texts.replace("*GPU*", "")
    assert "*15* failing: *13* new · *0* still failing · *2* flaky" in texts
    assert report.main.text.startswith("🔴 Nightly CI on main: 15 failing, 13 new")
    assert sum(int(r.text.split(": ")[1].split()[0]) for r in report.replies) == 15  # the thread agrees
    assert "(13 in 1 group, by culprit)" in texts
    assert texts.count("• culprit ") == 1 and f"|{seeded.culprit[:7]}>" in texts
    assert "— *13 tests* (llama, mistral · cpu)" in texts
    assert ("2 models: `AssertionError: logits differ at position 3 (max abs diff 0.71)` since "
            f"<https://github.com/acme/models/commit/{seeded.culprit}|{seeded.culprit[:7]}> (llama, mistral) — "
            "9× failed: ") in texts
    assert "`RuntimeError: shape mismatch in rotary embedding` since " in texts and "— 4× failed: " in texts
    flaky_section = next(t for t in iter_texts(report.main.blocks) if t.startswith("*🎲 Flaky"))
    assert all(n not in flaky_section for n in BROKEN) and all(n in flaky_section for n in FLAKY)
    assert_within_slack_limits(report.payload())


def test_failed_once_passed_consistently_is_not_flaky_without_evidence(store: Store) -> None:
    """Without a culprit, a broken test with an old mixed record still is not flaky: it passed in every
    earlier run in the history window."""
    seeded = cpu_regression(store)
    with store.session() as s:
        s.execute(delete(Culprit))
    data = collect_report(store, seeded.run_id)
    assert sorted(f.nodeid for f in data.flaky_failing) == sorted(FLAKY)
    assert len(data.new_failures) == 13


def test_attempts_that_disagree_are_flaky_evidence(store: Store) -> None:
    """A test that failed and then passed on a retry in this run is flaky (listed, not failing); one that
    failed every attempt is not."""
    seeded = cpu_regression(store)
    with store.session() as s:
        uuid = s.execute(select(Run.uuid).where(Run.id == seeded.run_id)).scalar_one()
    retried, stubborn = "tests/models/gpt2/test_modeling_gpt2.py::test_retry", BROKEN[0]
    write_records(store, [
        ResultRecord(run=uuid, nodeid=retried, outcome="failed", attempt=1, model="gpt2", suite="slow", device="cpu"),
        ResultRecord(run=uuid, nodeid=retried, outcome="passed", attempt=2, model="gpt2", suite="slow", device="cpu"),
        ResultRecord(run=uuid, nodeid=stubborn, outcome="failed", attempt=2, model="llama", suite="slow",
                     device="cpu", message="AssertionError: logits differ at position 3 (max abs diff 0.71)")])
    data = collect_report(store, seeded.run_id)
    flaky = {f.nodeid: f for f in data.flaky}
    assert flaky[retried].failed is False and (flaky[retried].failures, flaky[retried].attempts) == (1, 2)
    assert stubborn not in flaky and retried not in {f.nodeid for f in data.failing}
    assert data.failed == len(data.failing) == 15
