"""`harness perf-alerts`: change points in stored benchmark series, recorded once, handed to bisect."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from harness.cli import main
from harness.report.perf_alerts import higher_is_better, load_series, run_perf_alerts
from harness.store.db import Store
from harness.store.schema import PerfAlert

from .factory import GPU, benchmark_series


def test_series_one_point_per_commit(store: Store) -> None:
    commits = benchmark_series(store, n=12, step_at=8)
    series = load_series(store)
    assert {k.metric for k in series} == {"time_to_first_token_secs", "model_load_time",
                                          "roofline.decode_efficiency"}
    (key,) = [k for k in series if k.metric == "time_to_first_token_secs"]
    assert (key.model, key.gpu_name, key.branch) == ("llama", GPU, "main")
    assert [p.commit for p in series[key]] == commits
    assert load_series(store, branch="other") == {}


def test_finds_regressions_records_once(store: Store) -> None:
    commits = benchmark_series(store, n=40, step_at=30)
    result = run_perf_alerts(store)
    found = {(a.key.metric, a.commit_after, a.direction) for a in result.alerts}
    assert found == {("time_to_first_token_secs", commits[30], "regression"),
                     ("roofline.decode_efficiency", commits[30], "regression")}
    ttft = next(a for a in result.alerts if a.key.metric == "time_to_first_token_secs")
    assert ttft.commit_before == commits[29]
    assert ttft.change == pytest.approx(0.10, abs=0.02)
    assert ttft.p_value < 1e-6
    assert ttft.bisect_command("/src/repo") == (
        f"harness bisect --repo /src/repo --good {commits[26]} --bad {commits[33]} "
        "--tests suites/benchmark/test_generate.py::test_llama "
        f"--perf time_to_first_token_secs --threshold {ttft.threshold:.6g}")
    assert ttft.value_before < ttft.threshold < ttft.value_after  # a metric value between the regimes
    with store.session() as s:
        rows = s.execute(select(PerfAlert)).scalars().all()
        assert sorted(r.metric for r in rows) == ["roofline.decode_efficiency", "time_to_first_token_secs"]
        assert all(r.run_id is not None and r.p_value < 1e-6 for r in rows)
    again = run_perf_alerts(store)
    assert len(again.alerts) == 2 and not again.new_regressions
    with store.session() as s:
        assert len(s.execute(select(PerfAlert)).scalars().all()) == 2


def test_improvement_is_not_a_regression(store: Store) -> None:
    benchmark_series(store, n=40, step_at=30, step=-0.10)
    result = run_perf_alerts(store, metrics=["time_to_first_token_secs"])
    assert [a.direction for a in result.alerts] == ["improvement"]
    assert not result.new_regressions


def test_direction_of_metric_names() -> None:
    assert not higher_is_better("time_to_first_token_secs")
    assert higher_is_better("roofline.decode_efficiency")
    assert higher_is_better("tokens_per_s")


def test_cli_json_and_exit_codes(pg_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    store = Store.open(pg_url)
    commits = benchmark_series(store, n=40, step_at=30)
    assert main(["perf-alerts", "--db", pg_url, "--json", "--metric", "time_to_first_token_secs",
                 "--repo", "/r"]) == 1
    out = json.loads(capsys.readouterr().out)
    (alert,) = out["alerts"]
    assert alert["commit_after"] == commits[30] and alert["new"] is True
    assert alert["bisect"].startswith(f"harness bisect --repo /r --good {commits[26]}")
    assert "--perf time_to_first_token_secs --threshold" in alert["bisect"]
    # Already recorded: nothing new, exit 0; plain text names the change.
    assert main(["perf-alerts", "--db", pg_url, "--metric", "time_to_first_token_secs"]) == 0
    text = capsys.readouterr().out
    assert "regression: time_to_first_token_secs (llama, NVIDIA A10G, main)" in text
    assert "NEW" not in text


def test_cli_bad_settings(pg_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["perf-alerts", "--db", pg_url, "--max-pvalue", "2"]) == 2
    assert capsys.readouterr().err.strip() == (
        "harness: --max-pvalue 2.0 must be between 0 and 1 (default 0.001)")
