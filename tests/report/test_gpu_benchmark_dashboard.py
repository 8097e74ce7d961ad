"""The benchmark dashboard over the real GPU run: the H200 results bundle committed in
suites/benchmark/results/ is ingested into Postgres, and the benchmark panels' SQL shows it."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from harness.ingest import ingest
from harness.report.dashboards import boards

from .grafana_sql import expand

RESULTS = Path(__file__).resolve().parents[2] / "suites" / "benchmark" / "results"
BUNDLES = sorted(RESULTS.glob("*.bundle.jsonl"))


@pytest.mark.skipif(not BUNDLES, reason="no GPU benchmark bundle committed in suites/benchmark/results/")
def test_gpu_bundle_shows_in_benchmark_panels(pg_url: str) -> None:
    report = ingest([str(p) for p in BUNDLES], pg_url)
    assert report.added.benchmarks >= 3
    board = next(b for b in boards() if b.uid == "harness-benchmarks")
    engine = create_engine(pg_url.replace("postgresql://", "postgresql+psycopg2://", 1))
    with engine.connect() as conn:
        variables: dict[str, list[str]] = {}
        for var in board.variables:
            if var["type"] == "custom":
                variables[var["name"]] = [var["current"]["value"]]
            else:
                rows = conn.execute(text(expand(var["query"], variables))).mappings().all()
                variables[var["name"]] = [r["__value"] for r in rows]
        assert "NVIDIA H200" in variables.get("gpu", [])
        panels = {q.where: q for q in board.queries}
        rows = conn.execute(text(expand(panels["Benchmarks by commit"].sql, variables))).mappings().all()
        roof = conn.execute(text(expand(panels["Roofline efficiency"].sql, variables))).mappings().all()
        nxt = conn.execute(text(expand(panels["Next token (mean)"].sql, variables))).all()
    engine.dispose()
    configs = {(r["config"], r["gpu_name"]) for r in rows}
    assert ("llama-2-7b", "NVIDIA H200") in configs
    llama = next(r for r in rows if r["config"] == "llama-2-7b")
    assert 0.0 < llama["next_token_s"] < 0.05 and 0.3 < llama["decode_efficiency"] <= 1.0
    assert any("decode_efficiency" in r["metric"] for r in roof) and nxt
