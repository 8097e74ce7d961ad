"""Gemma (v1): GeGLU MLP, (1 + w) RMSNorm, embeddings scaled by sqrt(dim), tied embeddings.

Also multi-query attention in ``gemma-2b`` (one kv head) and a head_dim independent of dim
(256 in the real shapes; the tiny config keeps head_dim != dim / n_heads to exercise that).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models._base import (
    apply_rope,
    build_model,
    clear_kv_caches,
    init_parameters,
    lookup_config,
    rope_cos_sin,
    setup_kv_caches,
)
from models.kv_cache import AttnContext, make_context

FAMILY = "gemma"

CONFIGS: dict[str, dict] = {
    "tiny": dict(
        dim=64,
        n_layers=2,
        n_heads=4,
        n_kv_heads=1,
        head_dim=32,
        intermediate_size=128,
        vocab_size=320,
        max_seq_len=256,
    ),
    "small": dict(
        dim=512,
        n_layers=6,
        n_heads=4,
        n_kv_heads=1,
        head_dim=128,
        intermediate_size=4096,
        vocab_size=32000,
        max_seq_len=2048,
    ),
    "gemma-2b": dict(
        dim=2048,
        n_layers=18,
        n_heads=8,
        n_kv_heads=1,
        head_dim=256,
        intermediate_size=16384,
        vocab_size=256000,
        max_seq_len=8192,
    ),
    "gemma-7b": dict(
        dim=3072,
        n_layers=28,
        n_heads=16,
        n_kv_heads=16,
        head_dim=256,
        intermediate_size=24576,
        vocab_size=256000,
        max_seq_len=8192,
    ),
}


@dataclass
class ModelArgs:
    name: str = "tiny"
    dim: int = 64
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int = 1
    head_dim: int = 32
    intermediate_size: int = 128
    vocab_size: int = 320
    max_seq_len: int = 256
    norm_eps: float = 1e-6
    rope_base: float = 10000.0
    sliding_window: int | None = None

    def __post_init__(self) -> None:
        if self.head_dim == 0:
            self.head_dim = self.dim // self.n_heads
        if self.n_heads % self.n_kv_heads:
            raise ValueError("n_heads must be a multiple of n_kv_heads")

    @classmethod
    def from_name(cls, name: str) -> ModelArgs:
        return cls(**lookup_config(CONFIGS, name, FAMILY))


class RMSNorm(nn.Module):
    """Gemma's RMSNorm: scales by (1 + weight), weight initialised to zero, all in fp32."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (xf * (1.0 + self.weight.float())).to(x.dtype)


class Attention(nn.Module):
    def __init__(self, config: ModelArgs) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = config.n_heads, config.n_kv_heads, config.head_dim
        self.wq = nn.Linear(config.dim, config.n_heads * config.head_dim, bias=False)
        self.wk = nn.Linear(config.dim, config.n_kv_heads * config.head_dim, bias=False)
        self.wv = nn.Linear(config.dim, config.n_kv_heads * config.head_dim, bias=False)
        self.wo = nn.Linear(config.n_heads * config.head_dim, config.dim, bias=False)
        self.kv_cache = None

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, ctx: AttnContext
    ) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.wq(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.wk(x).view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.wv(x).view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        y = ctx.attend(q, k, v, self.kv_cache)
        return self.wo(y.transpose(1, 2).reshape(b, t, self.n_heads * self.head_dim))


class FeedForward(nn.Module):
    """GeGLU: down(gelu_tanh(gate x) * up x)."""

    def __init__(self, config: ModelArgs) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(config.dim, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.dim, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.gelu(self.gate_proj(x), approximate="tanh") * self.up_proj(x))


class TransformerBlock(nn.Module):
    def __init__(self, config: ModelArgs) -> None:
        super().__init__()
        self.attention = Attention(config)
        self.feed_forward = FeedForward(config)
        self.attention_norm = RMSNorm(config.dim, config.norm_eps)
        self.ffn_norm = RMSNorm(config.dim, config.norm_eps)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, ctx: AttnContext
    ) -> torch.Tensor:
        h = x + self.attention(self.attention_norm(x), cos, sin, ctx)
        return h + self.feed_forward(self.ffn_norm(h))


class Transformer(nn.Module):
    def __init__(self, config: ModelArgs) -> None:
        super().__init__()
        self.config = config
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.dim)
        self.layers = nn.ModuleList(TransformerBlock(config) for _ in range(config.n_layers))
        self.norm = RMSNorm(config.dim, config.norm_eps)
        self.output = nn.Linear(config.dim, config.vocab_size, bias=False)
        self.tie_weights()
        self.cache_state = None

    def tie_weights(self) -> None:
        """The output projection is the embedding matrix."""
        self.output.weight = self.tok_embeddings.weight

    @classmethod
    def from_name(cls, name: str) -> Transformer:
        return cls(ModelArgs.from_name(name))

    def setup_caches(self, max_batch_size: int, max_seq_length: int, static: bool = True) -> None:
        """Allocate a KV cache per layer (static buffers for torch.compile, or growing ones)."""
        c = self.config
        setup_kv_caches(
            self,
            (blk.attention for blk in self.layers),
            max_batch_size,
            max_seq_length,
            static,
            c.n_kv_heads,
            c.head_dim,
            c.max_seq_len,
        )

    def clear_caches(self) -> None:
        clear_kv_caches(self, (blk.attention for blk in self.layers))

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

    def reset_parameters(self, seed: int = 0) -> None:
        init_parameters(self, seed, self.init_rule)

    def forward(
        self,
        idx: torch.Tensor,
        input_pos: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits (B, T, vocab) for tokens ``idx`` (B, T) written at cache slots ``input_pos``."""
        ctx = make_context(self.cache_state, idx, input_pos, attention_mask, self.config.sliding_window)
        x = self.tok_embeddings(idx)
        x = x * torch.tensor(self.config.dim**0.5, dtype=x.dtype)
        cos, sin = rope_cos_sin(ctx.pos_ids, self.config.head_dim, self.config.rope_base, x.dtype)
        for layer in self.layers:
            x = layer(x, cos, sin, ctx)
        return self.output(self.norm(x))


def build(
    name: str = "tiny", device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, seed: int = 0
) -> Transformer:
    """``Transformer.from_name(name)`` built on meta, materialised on ``device``, seeded init."""
    return build_model(Transformer, name, device, dtype, seed)
