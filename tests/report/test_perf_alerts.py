"""`harness perf-alerts`: change points in stored benchmark series, recorded once, handed to bisect."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
from sqlalchemy import select

from harness.cli import main
from harness.report.perf_alerts import declarations_of, load_series, run_perf_alerts
from harness.store.db import Store
from harness.store.schema import PerfAlert
from suites.benchmark.metrics import DECLARED, SEED_METRICS

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


@pytest.mark.parametrize(("metric", "better", "step", "expected"), [
    ("compile_speedup", "higher", -0.10, "regression"),  # a drop of a higher-is-better metric
    ("compile_speedup", "higher", +0.10, "improvement"),
    ("greedy_prefix_agreement", "higher", -0.10, "regression"),
    ("time_per_token_median_secs", "lower", +0.10, "regression"),  # a rise of a lower-is-better one
    ("time_per_token_median_secs", "lower", -0.10, "improvement"),
], ids=["speedup-falls", "speedup-rises", "agreement-falls", "latency-rises", "latency-falls"])
def test_direction_is_the_declared_one(store: Store, metric: str, better: str, step: float, expected: str) -> None:
    """Both backends (`store` is Postgres and SQLite): the verdict follows the declaration stored with
    the measurements, whatever the metric's name suggests."""
    assert DECLARED[metric][0] == better
    commits = benchmark_series(store, n=40, step_at=30, metrics=False, extra={metric: (1.5, step)})
    result = run_perf_alerts(store)
    assert result.undeclared == []
    assert [(a.key.metric, a.commit_after, a.direction, a.better) for a in result.alerts] == [
        (metric, commits[30], expected, better)]
    assert [a.key.metric for a in result.new_regressions] == ([metric] if expected == "regression" else [])
    with store.session() as s:
        assert [(r.metric, r.direction) for r in s.execute(select(PerfAlert)).scalars()] == [(metric, expected)]


def test_undeclared_metric_is_not_alerted_and_said_once(pg_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    store = Store.open(pg_url)
    for model in ("llama", "mistral"):  # two series of the same undeclared metric: one line
        benchmark_series(store, n=40, step_at=30, model=model, salt=model, metrics=False,
                         extra={"mystery_score": (2.0, -0.2)}, declared=False)
    assert main(["perf-alerts", "--db", pg_url]) == 0
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        "harness: not alerting on mystery_score: it declares no direction (higher or lower is better) "
        "where it is recorded"]
    assert "0 change point(s), 0 new regression(s)" in captured.out
    with store.session() as s:
        assert s.execute(select(PerfAlert)).scalars().all() == []


def test_declarations_read_from_measurements() -> None:
    m = {"tokens_per_sec": 3.0, "_meta": {"metrics": {"tokens_per_sec": {"better": "higher", "unit": "tokens/s"},
                                                       "x": {"better": "sideways"}, "y": "junk"}}}
    decls = declarations_of(m)
    assert set(decls) == {"tokens_per_sec"} and decls["tokens_per_sec"].unit == "tokens/s"
    assert declarations_of({"a": 1.0}) == {} and declarations_of(None) == {}


def test_every_recorded_benchmark_metric_is_declared() -> None:
    """Each key the generation benchmark writes (`m["..."] =`, SEED_METRICS, the summaries and the
    roofline dict) has a declaration in suites/benchmark/metrics.py."""
    src = (Path(__file__).parents[2] / "suites" / "benchmark" / "generation.py").read_text()
    roof = src[src.index("def _roofline"):src.index("def plausibility_problems")]
    names = set(re.findall(r'm\["([a-z][a-z_]*)"\] =', src)) | set(SEED_METRICS)
    names |= {f"{p}_{k}_secs" for p in ("time_per_token", "prefill_time") for k in ("median", "p90", "mean", "min",
                                                                                    "max")}
    names |= {f"roofline.{n}" for n in re.findall(r'"([a-z_]+)": ', roof)}
    assert len(names) > 40
    assert sorted(n for n in names if n not in DECLARED) == []


def test_bisect_command_quotes_repo_and_metric(store: Store) -> None:
    benchmark_series(store, n=40, step_at=30)
    (alert,) = [a for a in run_perf_alerts(store, save=False).alerts if a.key.metric == "time_to_first_token_secs"]
    cmd = alert.bisect_command("/src/my repo")
    argv = shlex.split(cmd)
    assert argv[argv.index("--repo") + 1] == "/src/my repo"
    assert argv[argv.index("--perf") + 1] == "time_to_first_token_secs"
    assert "--repo '/src/my repo'" in cmd


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
