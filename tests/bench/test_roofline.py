"""Roofline arithmetic, statistics, settings parsing and plausibility rules of the benchmark suite."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from suites.benchmark import roofline as rl
from suites.benchmark.generation import SEED_METRICS, cost_of, plausibility_problems
from suites.benchmark.stats import percentile, summarize
from suites.benchmark.zoo import load_settings


class _Toy(nn.Module):
    """Embedding 10x4, two linears, a norm weight; optionally tied head and 4 experts."""

    def __init__(self, tied: bool = False, experts: int = 0) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.up = nn.Linear(4, 8, bias=False)
        self.down = nn.Linear(8, 4, bias=True)
        self.norm = nn.Parameter(torch.ones(4))
        self.experts = nn.ModuleList(nn.Linear(4, 4, bias=False) for _ in range(experts))
        self.head = nn.Linear(4, 10, bias=False)
        if tied:
            self.head.weight = self.emb.weight


def test_model_cost_untied() -> None:
    c = rl.model_cost(_Toy(), n_layers=1, attn_width=4)
    assert c.embedding_row_bytes == 4 * 4  # one fp32 row of the table per token
    assert c.dense_weight_bytes == 4 * (32 + 32 + 4 + 4 + 40)  # up, down (+bias), norm, head
    assert c.dense_matmul_params == 32 + 32 + 40
    assert c.expert_weight_bytes == 0


def test_model_cost_tied_counts_shared_table_once() -> None:
    c = rl.model_cost(_Toy(tied=True), n_layers=1, attn_width=4)
    assert c.embedding_row_bytes == 0
    assert c.dense_weight_bytes == 4 * (32 + 32 + 4 + 4 + 40)
    assert c.dense_matmul_params == 32 + 32 + 40


def test_experts_read_only_when_routed() -> None:
    c = rl.model_cost(_Toy(experts=4), n_layers=1, attn_width=4, num_experts=4, top_k=2)
    assert c.expert_weight_bytes == 4 * 4 * 16
    one = rl.decode_bytes_per_step(c, batch_size=1, context=0)
    assert one == pytest.approx(c.dense_weight_bytes + c.expert_weight_bytes / 2 + c.embedding_row_bytes)
    many = rl.decode_bytes_per_step(c, batch_size=1000, context=0)
    assert many == pytest.approx(c.dense_weight_bytes + c.expert_weight_bytes + 1000 * c.embedding_row_bytes)
    assert rl.expected_distinct_experts(8, 2, 1) == pytest.approx(2.0)
    assert rl.expected_distinct_experts(8, 2, 2) == pytest.approx(8 * (1 - 0.75**2))


def test_kv_and_prefill_flops() -> None:
    c = rl.ModelCost(
        dense_weight_bytes=1000,
        expert_weight_bytes=0,
        embedding_row_bytes=0,
        embedding_table_bytes=0,
        dense_matmul_params=100,
        expert_matmul_params=0,
        num_experts=0,
        top_k=0,
        n_layers=2,
        attn_width=8,
        kv_bytes_per_position=10,
    )
    assert rl.decode_bytes_per_step(c, 1, context=5) == 1000 + 10 * 6
    # 2 FLOPs per weight per token + causal attention 4 * layers * width * (B * P * (P + 1) / 2)
    assert rl.prefill_flops(c, 2, 3) == 2 * 6 * 100 + 4 * 2 * 8 * (2 * 3 * 4 / 2)


def test_llama_2_7b_reference_numbers() -> None:
    """The brief's reference: 4.46 ms/token on a 4.28 TB/s copy floor is about 70.6 %."""
    from models import llama

    model = llama.build("llama-2-7b", device="meta", dtype=torch.bfloat16)
    model.setup_caches(1, 256)
    c = cost_of(model)
    assert c.dense_weight_bytes + c.embedding_table_bytes == 2 * 6_738_415_616  # every parameter
    assert c.embedding_table_bytes == 2 * 32000 * 4096  # ... of which a lookup reads one row
    assert c.kv_bytes_per_position == 32 * 2 * 32 * 128 * 2
    all_params_floor = (c.dense_weight_bytes + c.embedding_table_bytes) / 4.28e12
    assert rl.efficiency(all_params_floor, 4.46e-3) == pytest.approx(0.706, abs=0.001)
    floor = rl.decode_bytes_per_step(c, 1, context=0) / 4.28e12  # tighter: 2 % fewer bytes
    assert rl.efficiency(floor, 4.46e-3) == pytest.approx(0.692, abs=0.001)
    assert rl.prefill_flops(c, 1, 1) == pytest.approx(2 * 6.607e9 + 4 * 32 * 4096, rel=1e-3)


def test_efficiency_rejects_zero_time() -> None:
    with pytest.raises(ValueError):
        rl.efficiency(1.0, 0.0)


def test_measure_ceilings_on_cpu() -> None:
    c = rl.measure_ceilings("cpu", torch.float32, copy_nbytes=1 << 20, matmul_n=64, repeats=3)
    assert c.device_name == "cpu" and c.matmul_dtype == "float32"
    assert 1e8 < c.copy_bytes_per_s < 1e13 and 1e6 < c.matmul_flops_per_s < 1e14


def test_stats() -> None:
    xs = [1.0, 2.0, 3.0, 4.0, 10.0]
    assert percentile(xs, 50) == 3.0 and percentile(xs, 100) == 10.0 and percentile(xs, 0) == 1.0
    assert percentile(xs, 90) == pytest.approx(7.6)  # numpy's linear interpolation
    s = summarize([2.0, 2.0, 2.0])
    assert s["median"] == 2.0 and s["cv"] == 0.0 and s["n"] == 3
    s = summarize([1.0, 3.0])
    assert s["cv"] == pytest.approx(math.sqrt(2) / 2)
    with pytest.raises(ValueError):
        summarize([])


def test_settings_defaults_and_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("HARNESS_BENCH_SHAPES", "HARNESS_BENCH_NEW_TOKENS", "HARNESS_BENCH_BATCH_SIZES"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HARNESS_BENCH_DEVICE", "cpu")
    s = load_settings()
    assert (s.shapes, s.dtype, s.compile_backend, s.cudagraphs) == ("tiny", "float32", "eager", False)
    assert s.eager_decode_steps <= s.new_tokens - 2
    monkeypatch.setenv("HARNESS_BENCH_BATCH_SIZES", "1,4")
    assert load_settings().batch_sizes == (1, 4)
    for var, value in [
        ("HARNESS_BENCH_BATCH_SIZES", "x"),
        ("HARNESS_BENCH_BATCH_SIZES", "0"),
        ("HARNESS_BENCH_SHAPES", "huge"),
        ("HARNESS_BENCH_NEW_TOKENS", "2"),
        ("HARNESS_BENCH_DTYPE", "nope"),
    ]:
        with monkeypatch.context() as mp:
            mp.setenv(var, value)
            with pytest.raises(ValueError, match=var):
                load_settings()


def _good() -> tuple[dict[str, float], dict[str, float]]:
    m = {k: 0.5 for k in SEED_METRICS}
    m.update(
        time_to_first_token_secs=5.0,
        first_compile_generate_time_secs=3.0,
        time_per_token_median_secs=0.004,
        eager_time_per_token_secs=0.02,
        time_per_token_cv=0.005,
        cudagraph_skips=0.0,
        graph_breaks=0.0,
    )
    return m, {"decode_efficiency": 0.85, "prefill_efficiency": 0.6}


def test_plausibility(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HARNESS_BENCH_DEVICE", "cpu")
    s = load_settings()
    m, r = _good()
    assert plausibility_problems(m, r, s) == []
    assert "time_to_third_token_secs missing" in plausibility_problems(
        {k: v for k, v in m.items() if k != "time_to_third_token_secs"}, r, s
    )
    assert plausibility_problems({**m, "model_load_time": float("nan")}, r, s)
    assert plausibility_problems({**m, "second_eager_generate_time_secs": 0.0}, r, s)
    assert plausibility_problems({**m, "time_to_first_token_secs": 0.001}, r, s)
    gated = s.__class__(**{**s.__dict__, "min_decode_efficiency": 0.9, "max_decode_cv": 0.001})
    problems = plausibility_problems(m, r, gated)
    assert len(problems) == 2 and "decode_efficiency" in problems[0] and "cv" in problems[1]
    gpu = s.__class__(**{**s.__dict__, "device": "cuda", "shapes": "real", "compile_backend": "inductor"})
    slow = {**m, "time_per_token_median_secs": 0.03, "cudagraph_skips": 1.0}
    problems = plausibility_problems(slow, {**r, "decode_efficiency": 1.3}, gpu)
    assert any("CUDA graphs" in p for p in problems) and any("slower than eager" in p for p in problems)
    assert any("above the roofline" in p for p in problems)
