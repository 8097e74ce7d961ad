"""Mixtral: the llama decoder (:mod:`models.blocks`) with a sparse mixture-of-experts feed-forward.

Each token is routed to the top ``n_active_experts`` (2) of ``n_experts`` (8) SwiGLU experts by a
linear gate; the chosen experts' outputs are summed with their renormalised softmax weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from models import blocks
from models._base import build_model

FAMILY = "mixtral"

# fmt: off
CONFIGS: dict[str, dict] = {
    "tiny": dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, intermediate_size=64, vocab_size=320, max_seq_len=256),
    "small": dict(dim=512, n_layers=4, n_heads=8, n_kv_heads=2, intermediate_size=1024, vocab_size=32000, max_seq_len=2048),
    # Mistral 7B's shapes, 8 experts of its MLP in every layer, full attention, rope base 1e6
    "mixtral-8x7b": dict(dim=4096, n_layers=32, n_heads=32, n_kv_heads=8, intermediate_size=14336, vocab_size=32000, max_seq_len=32768, rope_base=1e6),
}
# fmt: on


@dataclass
class ModelArgs(blocks.LlamaArgs):
    family: ClassVar[str] = FAMILY
    configs: ClassVar[dict[str, dict]] = CONFIGS

    intermediate_size: int = 64  # per expert
    n_experts: int = 8
    n_active_experts: int = 2

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.n_active_experts <= self.n_experts:
            raise ValueError("need 1 <= n_active_experts <= n_experts")


class MOEFeedForward(nn.Module):
    """Top-k routed mixture of SwiGLU experts."""

    def __init__(self, config: ModelArgs) -> None:
        super().__init__()
        self.top_k = config.n_active_experts
        self.gate = nn.Linear(config.dim, config.n_experts, bias=False)
        self.experts = nn.ModuleList(blocks.FeedForward(config) for _ in range(config.n_experts))

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Expert weights and ids (N, top_k) for flat tokens x (N, dim)."""
        probs = torch.softmax(self.gate(x).float(), dim=-1)
        weights, ids = torch.topk(probs, self.top_k, dim=-1)
        return weights / weights.sum(-1, keepdim=True), ids

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        weights, ids = self.route(flat)
        if torch.compiler.is_compiling():
            return self._dense(flat, weights, ids).reshape(shape)
        out = torch.zeros_like(flat)
        for e, expert in enumerate(self.experts):  # sparse: each expert sees only its tokens
            token, slot = torch.where(ids == e)
            if token.numel():
                y = expert(flat[token]) * weights[token, slot, None].to(flat.dtype)
                out.index_add_(0, token, y)
        return out.reshape(shape)

    def _dense(self, flat: torch.Tensor, weights: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Same sum without data-dependent shapes (for torch.compile): every expert on every token,
        weighted by its routing weight (zero where not chosen)."""
        out = torch.zeros_like(flat)
        for e, expert in enumerate(self.experts):
            w = (weights * (ids == e)).sum(-1, keepdim=True).to(flat.dtype)
            out = out + expert(flat) * w
        return out


class Transformer(blocks.LlamaTransformer):
    """The llama model with :class:`MOEFeedForward` in every block."""

    args_class: ClassVar[type] = ModelArgs
    feed_forward_class: ClassVar[type[nn.Module]] = MOEFeedForward

    def init_rule(self, name: str, p: nn.Parameter) -> tuple[str, float]:
        if name.endswith("gate.weight"):
            return "normal", 2.0 * self.config.dim**-0.5
        return super().init_rule(name, p)


def build(
    name: str = "tiny", device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, seed: int = 0
) -> Transformer:
    """``Transformer.from_name(name)`` built on meta, materialised on ``device``, seeded init."""
    return build_model(Transformer, name, device, dtype, seed)
