"""Mistral: the Llama block (RMSNorm, RoPE, SwiGLU, GQA) with sliding-window attention.

Every layer attends to at most ``sliding_window`` keys: a query at position p reads keys in
(p - W, p]. The tiny config uses W=8 so windows bite within a few tokens on CPU.
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

FAMILY = "mistral"

CONFIGS: dict[str, dict] = {
    "tiny": dict(
        dim=64,
        n_layers=2,
        n_heads=4,
        n_kv_heads=2,
        intermediate_size=128,
        vocab_size=320,
        max_seq_len=256,
        sliding_window=8,
    ),
    "small": dict(
        dim=512,
        n_layers=8,
        n_heads=8,
        n_kv_heads=2,
        intermediate_size=1408,
        vocab_size=32000,
        max_seq_len=4096,
        sliding_window=256,
    ),
    "mistral-7b": dict(
        dim=4096,
        n_layers=32,
        n_heads=32,
        n_kv_heads=8,
        intermediate_size=14336,
        vocab_size=32000,
        max_seq_len=32768,
        sliding_window=4096,
    ),
}


@dataclass
class ModelArgs:
    name: str = "tiny"
    dim: int = 64
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int = 2
    head_dim: int = 0  # 0: dim // n_heads
    intermediate_size: int = 128
    vocab_size: int = 320
    max_seq_len: int = 256
    norm_eps: float = 1e-5
    rope_base: float = 10000.0
    sliding_window: int | None = 8

    def __post_init__(self) -> None:
        if self.head_dim == 0:
            self.head_dim = self.dim // self.n_heads
        if self.n_heads % self.n_kv_heads:
            raise ValueError("n_heads must be a multiple of n_kv_heads")
        if self.sliding_window is not None and self.sliding_window < 1:
            raise ValueError("sliding_window must be >= 1 (or None for full attention)")

    @classmethod
    def from_name(cls, name: str) -> ModelArgs:
        return cls(**lookup_config(CONFIGS, name, FAMILY))


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


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
    """SwiGLU: w2(silu(w1 x) * w3 x)."""

    def __init__(self, config: ModelArgs) -> None:
        super().__init__()
        self.w1 = nn.Linear(config.dim, config.intermediate_size, bias=False)
        self.w3 = nn.Linear(config.dim, config.intermediate_size, bias=False)
        self.w2 = nn.Linear(config.intermediate_size, config.dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


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
        self.cache_state = None

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
            return "ones", 0.0
        if name == "tok_embeddings.weight":
            return "normal", 1.0
        if name == "output.weight":
            return "normal", 2.0 * c.dim**-0.5
        std = p.shape[1] ** -0.5
        if name.endswith(("wo.weight", "w2.weight")):
            std /= (2 * c.n_layers) ** 0.5
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
        cos, sin = rope_cos_sin(ctx.pos_ids, self.config.head_dim, self.config.rope_base, x.dtype)
        for layer in self.layers:
            x = layer(x, cos, sin, ctx)
        return self.output(self.norm(x))


def build(
    name: str = "tiny", device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, seed: int = 0
) -> Transformer:
    """``Transformer.from_name(name)`` built on meta, materialised on ``device``, seeded init."""
    return build_model(Transformer, name, device, dtype, seed)
