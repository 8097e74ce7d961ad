"""Roofline ceilings (measured once per session) and per-model bytes / FLOPs arithmetic.

Decode is bound by bytes: every weight that a step uses is read once, plus the KV cache
up to the current position. Prefill is bound by FLOPs: 2 per weight per token for the
matrix products plus causal attention. Efficiency = floor time / achieved time, in (0, 1]
for an honest measurement (a value above 1 means the accounting is wrong).
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from .timing import time_repeats

__all__ = [
    "Ceilings",
    "measure_ceilings",
    "ModelCost",
    "model_cost",
    "decode_bytes_per_step",
    "prefill_flops",
    "efficiency",
    "expected_distinct_experts",
]


@dataclass(frozen=True)
class Ceilings:
    """Measured copy bandwidth (bytes read + written per second) and matmul rate."""

    device_name: str
    copy_bytes_per_s: float
    matmul_flops_per_s: float
    matmul_dtype: str
    copy_nbytes: int
    matmul_n: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure_ceilings(
    device: torch.device | str,
    dtype: torch.dtype = torch.bfloat16,
    copy_nbytes: int | None = None,
    matmul_n: int | None = None,
    repeats: int = 10,
) -> Ceilings:
    """Median device-to-device copy bandwidth and ``n x n x n`` matmul rate on random data."""
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    copy_nbytes = copy_nbytes or (1 << 30 if cuda else 32 << 20)
    matmul_n = matmul_n or (8192 if cuda else 256)
    gen = torch.Generator(device=dev).manual_seed(0)
    copy_s = _median_copy_s(dev, copy_nbytes, gen, repeats)
    mm_s = _median_matmul_s(dev, matmul_n, dtype, gen, repeats)
    if cuda:
        torch.cuda.empty_cache()
        name = torch.cuda.get_device_name(dev)
    else:
        name = "cpu"
    return Ceilings(
        device_name=name,
        copy_bytes_per_s=2 * copy_nbytes / copy_s,
        matmul_flops_per_s=2 * matmul_n**3 / mm_s,
        matmul_dtype=str(dtype).removeprefix("torch."),
        copy_nbytes=copy_nbytes,
        matmul_n=matmul_n,
    )


def _median_copy_s(dev: torch.device, nbytes: int, gen: torch.Generator, repeats: int) -> float:
    src = torch.randint(0, 255, (nbytes,), dtype=torch.uint8, device=dev, generator=gen)
    dst = torch.empty_like(src)
    return statistics.median(time_repeats(lambda: dst.copy_(src), dev, repeats, warmup=2))


def _median_matmul_s(
    dev: torch.device, n: int, dtype: torch.dtype, gen: torch.Generator, repeats: int
) -> float:
    a = torch.randn(n, n, device=dev, dtype=dtype, generator=gen)
    b = torch.randn(n, n, device=dev, dtype=dtype, generator=gen)
    return statistics.median(time_repeats(lambda: torch.mm(a, b), dev, repeats, warmup=3))


@dataclass(frozen=True)
class ModelCost:
    """What one token costs a model, split the way the roofline needs it."""

    dense_weight_bytes: int  # read once per step whatever the batch (linears, norms, tied head)
    expert_weight_bytes: int  # MoE expert tensors: only the routed experts are read
    embedding_row_bytes: int  # untied embedding tables: one row per token
    embedding_table_bytes: int  # ... whose whole tables a naive count would add
    dense_matmul_params: int  # weights in matrix products, per token (2 FLOPs each)
    expert_matmul_params: int  # all experts' matmul weights (each token uses top_k of them)
    num_experts: int
    top_k: int
    n_layers: int
    attn_width: int  # n_heads * head_dim of the queries
    kv_bytes_per_position: int  # K and V, all layers, whole batch, one position

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def expected_distinct_experts(num_experts: int, top_k: int, tokens: int) -> float:
    """Expected number of experts that ``tokens`` uniformly routed tokens touch."""
    if num_experts <= 0:
        return 0.0
    p_miss = (1.0 - top_k / num_experts) ** tokens
    return num_experts * (1.0 - p_miss)


def _is_expert(name: str, p: torch.Tensor, num_experts: int) -> bool:
    """Expert weights: under an ``experts`` container, or stacked (num_experts, ...) tensors."""
    if num_experts <= 1:
        return False
    return ".experts." in f".{name}" or (p.dim() == 3 and p.shape[0] == num_experts)


def model_cost(
    model: nn.Module,
    *,
    n_layers: int,
    attn_width: int,
    num_experts: int = 0,
    top_k: int = 0,
    kv_bytes_per_position: int = 0,
) -> ModelCost:
    """Walk ``model``'s parameters once; shared tensors (tied embeddings) count once."""
    linear_weights = {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear)}
    embed_weights = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    seen: set[int] = set()
    dense_bytes = expert_bytes = embed_row = embed_table = dense_mm = expert_mm = 0
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen:
            continue
        seen.add(id(p))
        nbytes = p.numel() * p.element_size()
        if id(p) in embed_weights and id(p) not in linear_weights:
            embed_row += p.shape[-1] * p.element_size()  # lookup reads one row per token
            embed_table += nbytes
        elif _is_expert(name, p, num_experts):
            expert_bytes += nbytes
            expert_mm += p.numel()
        else:
            dense_bytes += nbytes
            if id(p) in linear_weights and p.dim() == 2:
                dense_mm += p.numel()
    return ModelCost(
        dense_weight_bytes=dense_bytes,
        expert_weight_bytes=expert_bytes,
        embedding_row_bytes=embed_row,
        embedding_table_bytes=embed_table,
        dense_matmul_params=dense_mm,
        expert_matmul_params=expert_mm,
        num_experts=num_experts,
        top_k=top_k,
        n_layers=n_layers,
        attn_width=attn_width,
        kv_bytes_per_position=kv_bytes_per_position,
    )


def decode_bytes_per_step(cost: ModelCost, batch_size: int, context: float) -> float:
    """Fewest bytes one decode step (``batch_size`` tokens) must move at ``context`` positions."""
    experts = (
        expected_distinct_experts(cost.num_experts, cost.top_k, batch_size) / cost.num_experts
        if cost.num_experts
        else 0.0
    )
    return (
        cost.dense_weight_bytes
        + cost.expert_weight_bytes * experts
        + cost.embedding_row_bytes * batch_size
        + cost.kv_bytes_per_position * (context + 1)  # read the context, write the new position
    )


def prefill_flops(cost: ModelCost, batch_size: int, prompt_length: int) -> float:
    """Matmul FLOPs of a causal prefill of ``batch_size x prompt_length`` tokens."""
    tokens = batch_size * prompt_length
    expert_share = cost.top_k / cost.num_experts if cost.num_experts else 0.0
    linear = 2.0 * tokens * (cost.dense_matmul_params + cost.expert_matmul_params * expert_share)
    # QK^T and PV, causal: each query attends to (i + 1) keys.
    pairs = batch_size * prompt_length * (prompt_length + 1) / 2.0
    attention = 4.0 * cost.n_layers * cost.attn_width * pairs
    return linear + attention


def efficiency(floor_s: float, achieved_s: float) -> float:
    """Floor time over achieved time (1.0 = at the roofline)."""
    if achieved_s <= 0:
        raise ValueError("achieved time must be positive")
    return floor_s / achieved_s
