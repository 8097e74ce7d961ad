"""Gemma (v1): GeGLU MLP, (1 + w) RMSNorm, embeddings scaled by sqrt(dim), tied embeddings.

The attention (rotary, grouped-query) and the pre-norm block are the llama decoder's (:mod:`models.blocks`).

Also multi-query attention in ``gemma-2b`` (one kv head) and a head_dim independent of dim
(256 in the real shapes; the tiny config keeps head_dim != dim / n_heads to exercise that).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from models import blocks
from models._base import build_model

FAMILY = "gemma"

# fmt: off
CONFIGS: dict[str, dict] = {
    "tiny": dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=1, head_dim=32, intermediate_size=128, vocab_size=320, max_seq_len=256),
    "small": dict(dim=512, n_layers=6, n_heads=4, n_kv_heads=1, head_dim=128, intermediate_size=4096, vocab_size=32000, max_seq_len=2048),
    "gemma-2b": dict(dim=2048, n_layers=18, n_heads=8, n_kv_heads=1, head_dim=256, intermediate_size=16384, vocab_size=256000, max_seq_len=8192),
    "gemma-7b": dict(dim=3072, n_layers=28, n_heads=16, n_kv_heads=16, head_dim=256, intermediate_size=24576, vocab_size=256000, max_seq_len=8192),
}
# fmt: on


@dataclass
class ModelArgs(blocks.LlamaArgs):
    family: ClassVar[str] = FAMILY
    configs: ClassVar[dict[str, dict]] = CONFIGS

    n_kv_heads: int = 1
    head_dim: int = 32  # independent of dim // n_heads
    norm_eps: float = 1e-6


class RMSNorm(blocks.RMSNorm):
    """Gemma's RMSNorm: scales by (1 + weight), weight initialised to zero, all in fp32."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__(dim, eps)
        nn.init.zeros_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.normalize(x) * (1.0 + self.weight.float())).to(x.dtype)


class FeedForward(nn.Module):
    """GeGLU: down(gelu_tanh(gate x) * up x)."""

    def __init__(self, config: ModelArgs) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(config.dim, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.dim, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.gelu(self.gate_proj(x), approximate="tanh") * self.up_proj(x))


class Transformer(blocks.LlamaTransformer):
    """The llama model with gemma's norm and MLP, a tied output head and scaled input embeddings."""

    args_class: ClassVar[type] = ModelArgs
    feed_forward_class: ClassVar[type[nn.Module]] = FeedForward
    norm_class: ClassVar[type[nn.Module]] = RMSNorm

    def __init__(self, config: ModelArgs) -> None:
        super().__init__(config)
        self.tie_weights()

    def tie_weights(self) -> None:
        """The output projection is the embedding matrix."""
        self.output.weight = self.tok_embeddings.weight

    def init_rule(self, name: str, p: nn.Parameter) -> tuple[str, float]:
        c = self.config
        if name.endswith("norm.weight"):
            return "zeros", 0.0  # (1 + w) scaling: zero is identity
        if name == "tok_embeddings.weight":  # scaled by sqrt(dim) on input; also the output head
            return "normal", 1.5 * c.dim**-0.5
        std = p.shape[1] ** -0.5
        if name.endswith(("wo.weight", "down_proj.weight")):
            # Tied head + sqrt(dim) input scale: with weak layers every token predicts itself
            # (a degenerate random model), so the layers' outputs are made to dominate.
            std *= 8.0
        return "normal", std

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        """Token embeddings times sqrt(dim) (rounded to the activation dtype first, as gemma does)."""
        x = self.tok_embeddings(idx)
        return x * torch.tensor(self.config.dim**0.5, dtype=x.dtype)


def build(
    name: str = "tiny", device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, seed: int = 0
) -> Transformer:
    """``Transformer.from_name(name)`` built on meta, materialised on ``device``, seeded init."""
    return build_model(Transformer, name, device, dtype, seed)
