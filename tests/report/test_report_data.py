"""`collect_report` over a store filled by real pytest runs with the harness plugin."""

from __future__ import annotations

import pytest

from harness.report.data import ReportError, collect_report
from harness.store.db import Store

from .conftest import Populated


def test_report_of_the_broken_commit(populated: Populated) -> None:
    store = Store.open(populated.url)
    data = collect_report(store, populated.run_bad)
    assert data.run_ids == [populated.run_bad, populated.run_bad_multi]  # both runner groups of the commit
    assert data.runner_groups == ["single-gpu", "multi-gpu"]
    assert (data.workflow, data.event, data.branch, data.commit_sha) == (
        "Nightly CI", "schedule", "main", populated.bad_sha)
    assert data.totals == {"passed": 6, "failed": 6}
    assert data.wall_time_s is not None and data.wall_time_s > 0
    new = [(f.nodeid, f.multi_gpu) for f in data.new_failures]
    # the multi-GPU run has no multi-GPU baseline, so its failures count as still failing there
    assert ("tests/test_llama.py::test_generate", False) in new
    gen = next(f for f in data.new_failures if not f.multi_gpu)
    assert gen.culprit is not None and gen.culprit.pr == 42 and gen.culprit.commit_sha == populated.bad_sha
    assert "<!channel>" in (gen.message or "")
    assert [f.nodeid for f in data.flaky] == ["tests/test_llama.py::test_flaky"]
    assert data.flaky[0].fail_rate == pytest.approx(0.3)
    assert all(f.nodeid != "tests/test_llama.py::test_flaky" for f in data.failures)
    assert "tests/test_mistral.py::test_old_bug" in {f.nodeid for f in data.still_failing}
    rows = {m.model: (m.single_gpu, m.multi_gpu) for m in data.models}
    assert rows == {"llama": (2, 2), "mistral": (1, 1)}
    assert data.baseline_run_id == populated.run_good


def test_latest_run_by_default_and_missing_run(populated: Populated) -> None:
    store = Store.open(populated.url)
    assert collect_report(store).run_id == max(collect_report(store).run_ids)
    with pytest.raises(ReportError, match="no run 999999 in the store"):
        collect_report(store, 999999)
