"""Dashboards as code: committed JSON is current, and every panel's SQL runs on real Postgres, as the
read-only Grafana role, over results recorded by real pytest runs, returning the panel's columns."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from harness.cli import main
from harness.report.dashboards import DEFAULT_OUT, Board, boards, build_dashboards, render, stale
from harness.store import Store
from harness.store.schema import nodeid_hash
from tests.store.rollup_data import write_run

from .conftest import Populated
from .grafana_sql import expand

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / DEFAULT_OUT
READER_SQL = ROOT / "dashboards" / "sql" / "grafana_reader.sql"

# Panels that must show something for the populated store (the rest may legitimately be empty).
MUST_HAVE_ROWS = {
    "harness-ci-overview": {"Pass rate per model", "New failures", "Flaky tests (top N by fail rate)",
                            "Slowest tests", "Suite wall time per runner group", "Recent runs", "Culprits",
                            "Top failure signatures", "Skips that are not not-applicable, per suite"},
    "harness-test-history": {"Outcome over time", "Duration", "Runs of this test, by commit",
                             "Culprits and flake record", "Culprits of this test"},
    "harness-benchmarks": {"Eager forward pass", "Time to first / second / third token", "Next token (mean)",
                           "Compiled generate, calls 1-4", "Roofline efficiency", "Device usage per benchmark",
                           "Benchmarks by commit", "Performance alerts", "Culprits"},
}


def test_committed_json_is_current() -> None:
    """Fails when dashboards/json/ was not regenerated after a change: run `harness dashboards build`."""
    assert stale(COMMITTED) == [], "run `harness dashboards build` and commit dashboards/json/"


def test_build_and_check_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "json"
    assert main(["dashboards", "build", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["harness-benchmarks.json", "harness-ci-overview.json",
                                                     "harness-test-history.json"]
    assert main(["dashboards", "build", "--out", str(out), "--check"]) == 0
    (out / "harness-benchmarks.json").write_text("{}")
    assert main(["dashboards", "build", "--out", str(out), "--check"]) == 1
    assert "stale: " in capsys.readouterr().out


def test_dashboard_structure() -> None:
    for board in boards():
        d = json.loads(render(board))
        ids = [p["id"] for p in d["panels"]]
        assert len(ids) == len(set(ids))
        for p in d["panels"]:
            assert p["datasource"]["uid"] == "harness-postgres"
            assert p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
            assert p["targets"][0]["rawSql"]
        assert {a["name"] for a in d["annotations"]["list"][1:]}  # culprits / perf alerts annotations


@pytest.fixture(scope="module")
def reader(populated: Populated) -> Iterator[Engine]:
    """The populated database, reached as the read-only role that the shipped SQL creates."""
    owner = create_engine(populated.url)
    raw = owner.raw_connection()  # the file as psql would run it (no parameter interpolation)
    try:
        raw.cursor().execute(READER_SQL.read_text())
        raw.commit()
    finally:
        raw.close()
    owner.dispose()
    engine = create_engine(make_url(populated.url).set(username="grafana_reader"))
    yield engine
    engine.dispose()


def _variables(engine: Engine, board: Board, test: str) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {"test": [nodeid_hash(test)]}
    with engine.connect() as conn:
        for var in board.variables:
            if var["type"] == "custom":
                values[var["name"]] = [var["current"]["value"]]
            elif var["name"] not in values:
                rows = conn.execute(text(expand(var["query"], values))).mappings().all()
                values[var["name"]] = [r["__value"] for r in rows] or ["(none)"]  # "All"
    return values


@pytest.mark.parametrize("uid", sorted(MUST_HAVE_ROWS))
def test_every_query_runs_and_returns_its_columns(reader: Engine, uid: str) -> None:
    board = next(b for b in boards() if b.uid == uid)
    variables = _variables(reader, board, "tests/test_llama.py::test_generate")
    assert all(variables.values())
    empty = []
    with reader.connect() as conn:
        for q in board.queries:
            result = conn.execute(text(expand(q.sql, variables)))
            if q.columns:
                assert tuple(result.keys()) == q.columns, q.where
            rows = result.all()
            if not rows:
                empty.append(q.where)
    assert not (MUST_HAVE_ROWS[uid] & set(empty)), f"no rows from {sorted(MUST_HAVE_ROWS[uid] & set(empty))}"


def test_queries_see_the_recorded_facts(reader: Engine, populated: Populated) -> None:
    board = next(b for b in boards() if b.uid == "harness-ci-overview")
    variables = _variables(reader, board, "")
    q = next(q for q in board.queries if q.where == "New failures")
    with reader.connect() as conn:
        rows = conn.execute(text(expand(q.sql, variables))).mappings().all()
    generate = [r for r in rows if r["test"] == "tests/test_llama.py::test_generate"]
    assert generate and generate[0]["culprit"] == populated.bad_sha[:10] and generate[0]["pr"] == 42
    assert generate[0]["runner_group"] == "single-gpu"
    assert all(r["test"] != "tests/test_mistral.py::test_old_bug" for r in rows)  # never passed: not new

    # Failure identity: the top signatures, the signature of each failing run, the explicit skips.
    sigs = next(q for q in board.queries if q.where == "Top failure signatures")
    skips = next(q for q in board.queries if q.where == "Skips that are not not-applicable, per suite")
    with reader.connect() as conn:
        top = conn.execute(text(expand(sigs.sql, variables))).mappings().all()
        per_suite = conn.execute(text(expand(skips.sql, variables))).mappings().all()
    generate_sig = next(r for r in top if "generate() produced" in (r["message"] or ""))
    assert generate_sig["exception"] == "AssertionError" and generate_sig["failures"] == 2  # two failing runs
    assert generate_sig["models"] == 1 and generate_sig["first_seen"] <= generate_sig["last_seen"]
    assert len({r["signature"] for r in top}) == len(top) and all(len(r["signature"]) == 16 for r in top)
    assert [(r["suite"], r["explicit_skips"], r["all_skips"], r["runs"]) for r in per_suite] == [("slow", 3, 6, 3)]
    history = next(b for b in boards() if b.uid == "harness-test-history")
    runs_q = next(q for q in history.queries if q.where == "Runs of this test, by commit")
    hist_vars = _variables(reader, history, "tests/test_llama.py::test_generate")
    with reader.connect() as conn:
        runs = conn.execute(text(expand(runs_q.sql, hist_vars))).mappings().all()
    failing = [r for r in runs if r["outcome"] == "failed"]
    assert len(failing) == 2 and {r["signature"] for r in failing} == {generate_sig["signature"]}
    assert all(r["signature"] is None for r in runs if r["outcome"] == "passed")

    bench = next(b for b in boards() if b.uid == "harness-benchmarks")
    variables = _variables(reader, bench, "")
    roof = next(q for q in bench.queries if q.where == "Roofline efficiency")
    ttft = next(q for q in bench.queries if q.where == "Time to first / second / third token")
    with reader.connect() as conn:
        metrics = {r.metric for r in conn.execute(text(expand(roof.sql, variables)))}
        firsts = [r[2] for r in conn.execute(text(expand(ttft.sql, variables)))]
    assert {"llama float32 decode_efficiency", "llama float32 prefill_efficiency"} <= metrics
    assert 0.51 in firsts  # the value the benchmark test recorded through the plugin


def test_reader_role_cannot_write(reader: Engine) -> None:
    with reader.connect() as conn, pytest.raises(DBAPIError, match="read-only transaction"):
        conn.execute(text("DELETE FROM culprits"))


def test_build_writes_into_any_folder(tmp_path: Path) -> None:
    paths = build_dashboards(tmp_path / "a" / "b")
    assert all(p.read_text() == render(b) for p, b in zip(paths, boards(), strict=True))


def test_new_failures_panel_equals_the_cli(pg_url: str) -> None:
    """One definition of "new failure": for a store seeded through the writers with per-model lanes,
    branches, runner groups, retries, skips and tests absent from the baseline, the ci-overview panel
    lists exactly what `harness new-failures --run ID --json` calls new, for every run."""
    store = Store.open(pg_url)
    lanes = [dict(branch="main", group="cpu", models="llama", model="llama"),
             dict(branch="main", group="cpu", models="gemma", model="gemma"),
             dict(branch="dev", group="multi-gpu", models="llama", model="llama")]
    days = [{"t::a": "passed", "t::b": "skipped", "t::c": "failed", "t::d": "passed"},
            {"t::a": "failed", "t::b": "error", "t::c": "failed", "t::d": ["failed", "passed"], "t::new": "timeout"},
            {"t::a": "passed", "t::b": "error", "t::c": "passed", "t::d": "crashed"},
            {"t::a": "failed", "t::b": "passed", "t::d": "crashed", "t::e": "failed"}]
    ids = []
    for li, lane in enumerate(lanes):
        for day, results in enumerate(days, start=1):
            if li == 1 and day == 3:
                ids.append(write_run(store, f"x{li}{day}", day, results, status="cancelled", **lane))
                continue
            mine = {f"{k}[{lane['model']}]": v for k, v in results.items()}
            ids.append(write_run(store, f"r{li}{day}", day, mine, hour=li, **lane))
    store.dispose()
    cli: set[tuple] = set()
    for run_id in ids:
        res = subprocess.run([sys.executable, "-m", "harness.cli", "new-failures", "--run", str(run_id), "--json",
                              "--db", pg_url], capture_output=True, text=True)
        if res.returncode == 2 and "has no baseline" in res.stderr:
            continue
        assert res.returncode in (0, 1), res.stderr
        cli |= {(run_id, d["nodeid"], d["outcome"]) for d in json.loads(res.stdout)["new"]}
    engine = create_engine(pg_url)
    board = next(b for b in boards() if b.uid == "harness-ci-overview")
    q = next(q for q in board.queries if q.where == "New failures")
    with engine.connect() as conn:
        rows = conn.execute(text(expand(q.sql, _variables(engine, board, "")))).mappings().all()
    engine.dispose()
    panel = {(r["run"], r["test"], r["outcome"]) for r in rows}
    assert panel == cli
    tests = {t for _, t, _ in panel}
    # cases the old panel rule (previous run passed, models ignored) got wrong
    assert "t::b[llama]" in tests and "t::new[llama]" in tests and "t::e[gemma]" in tests
    assert "t::d[llama]" in tests  # retry passed on day 2 (not new), crashed on day 3 after a pass



def test_pass_rate_panel_all_lanes_and_one_branch(pg_url: str) -> None:
    """The pass-rate panel reads per-day x model sums when every branch and runner group is selected,
    and the per-lane table otherwise; both give the share of non-skipped tests that passed."""
    store = Store.open(pg_url)
    write_run(store, "m", 1, {"t::a": "passed", "t::b": "failed", "t::c": "skipped"})
    write_run(store, "d", 1, {"t::a": "passed", "t::b": "passed"}, branch="dev", hour=5)
    store.dispose()
    engine = create_engine(pg_url)
    board = next(b for b in boards() if b.uid == "harness-ci-overview")
    q = next(q for q in board.queries if q.where == "Pass rate per model")
    every = _variables(engine, board, "")
    with engine.connect() as conn:
        all_rows = conn.execute(text(expand(q.sql, every))).all()
        main_rows = conn.execute(text(expand(q.sql, {**every, "branch": ["main"]}))).all()
        dev_rows = conn.execute(text(expand(q.sql, {**every, "branch": ["dev"]}))).all()
    engine.dispose()
    assert [(r.metric, r.pass_rate) for r in all_rows] == [("llama", 0.75)]  # 3 of 4 non-skipped
    assert [(r.metric, r.pass_rate) for r in main_rows] == [("llama", 0.5)]
    assert [(r.metric, r.pass_rate) for r in dev_rows] == [("llama", 1.0)]


def test_skips_panel_every_model_and_one_model(pg_url: str) -> None:
    """The skips-per-suite panel reads per-run x suite sums when every model is selected and the per-model
    counts otherwise; both count the same skips (explicit ones: a skip without a platform reason)."""
    store = Store.open(pg_url)
    write_run(store, "a", 1, {"t::a1": "skipped", "t::a2": "passed"}, model="llama")
    write_run(store, "b", 1, {"t::b1": "skipped", "t::b2": "skipped"}, model="mistral", hour=5)
    store.dispose()
    engine = create_engine(pg_url)
    board = next(b for b in boards() if b.uid == "harness-ci-overview")
    q = next(q for q in board.queries if q.where == "Skips that are not not-applicable, per suite")
    every = _variables(engine, board, "")
    assert sorted(every["model"]) == ["llama", "mistral"]
    with engine.connect() as conn:
        rows = {m: conn.execute(text(expand(q.sql, {**every, "model": models}))).mappings().all()
                for m, models in (("all", every["model"]), ("llama", ["llama"]), ("mistral", ["mistral"]))}
    engine.dispose()
    summed = {k: rows["llama"][0][k] + rows["mistral"][0][k] for k in ("explicit_skips", "all_skips", "runs")}
    assert [(r["suite"], r["all_skips"], r["runs"]) for r in rows["all"]] == [("slow", 3, 2)]
    assert {k: rows["all"][0][k] for k in summed} == summed
