"""The llama-style decoder shared by the llama, mistral, mixtral and gemma families.

RMSNorm, rotary positions, grouped-query attention (through :mod:`models.attention`), SwiGLU MLP,
pre-norm blocks. A family file subclasses :class:`LlamaArgs` as its ``ModelArgs`` (configs and
defaults) and :class:`LlamaTransformer` as its ``Transformer`` (its feed-forward, norm, embedding
and init rule). Family files import this module, never each other, so a change to one family file
changes that family alone (``harness plan`` relies on it); a change here concerns them all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from models._base import ZooArgs, ZooTransformer, apply_rope, rope_cos_sin
from models.kv_cache import AttnContext


@dataclass
class LlamaArgs(ZooArgs):
    """``ZooArgs``'s fields (name, dim, n_layers, n_heads, n_kv_heads, head_dim: 0 for dim // n_heads,
    intermediate_size, vocab_size, max_seq_len, norm_eps), then rope_base and sliding_window."""

    n_kv_heads: int = 2
    intermediate_size: int = 128
    rope_base: float = 10000.0
    sliding_window: int | None = None  # a query at p reads keys in (p - W, p]; None: all before it

    def __post_init__(self) -> None:
        if self.head_dim == 0:
            self.head_dim = self.dim // self.n_heads
        if self.n_heads % self.n_kv_heads:
            raise ValueError("n_heads must be a multiple of n_kv_heads")
        if self.sliding_window is not None and self.sliding_window < 1:
            raise ValueError("sliding_window must be >= 1 (or None for full attention)")


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` over its root mean square, in fp32."""
        xf = x.float()
        return xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * self.normalize(x).to(x.dtype)


class Attention(nn.Module):
    """Grouped-query attention with rotary positions (``models.attention`` through the context)."""

    def __init__(self, config: LlamaArgs) -> None:
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

    def __init__(self, config: LlamaArgs) -> None:
        super().__init__()
        self.w1 = nn.Linear(config.dim, config.intermediate_size, bias=False)
        self.w3 = nn.Linear(config.dim, config.intermediate_size, bias=False)
        self.w2 = nn.Linear(config.intermediate_size, config.dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class TransformerBlock(nn.Module):
    """Pre-norm residual block: attention, then the feed-forward (both classes chosen by the family)."""

    def __init__(
        self,
        config: LlamaArgs,
        feed_forward: type[nn.Module] = FeedForward,
        norm: type[nn.Module] = RMSNorm,
    ) -> None:
        super().__init__()
        self.attention = Attention(config)
        self.feed_forward = feed_forward(config)
        self.attention_norm = norm(config.dim, config.norm_eps)
        self.ffn_norm = norm(config.dim, config.norm_eps)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, ctx: AttnContext
    ) -> torch.Tensor:
        h = x + self.attention(self.attention_norm(x), cos, sin, ctx)
        return h + self.feed_forward(self.ffn_norm(h))


class LlamaTransformer(ZooTransformer):
    """Embeddings, ``n_layers`` blocks, final norm, output head.

    Hooks for the families built on it: ``args_class`` (the family's ``ModelArgs``),
    ``feed_forward_class``, ``norm_class``, ``embed`` and ``init_rule``.
    """

    feed_forward_class: ClassVar[type[nn.Module]] = FeedForward
    norm_class: ClassVar[type[nn.Module]] = RMSNorm

    def __init__(self, config: LlamaArgs) -> None:
        super().__init__()
        self.config = config
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.dim)
        self.layers = nn.ModuleList(
            TransformerBlock(config, self.feed_forward_class, self.norm_class) for _ in range(config.n_layers)
        )
        self.norm = self.norm_class(config.dim, config.norm_eps)
        self.output = nn.Linear(config.dim, config.vocab_size, bias=False)
        self.cache_state = None

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

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        """Input embeddings of tokens ``idx`` (B, T)."""
        return self.tok_embeddings(idx)

    def logits(self, idx: torch.Tensor, ctx: AttnContext) -> torch.Tensor:
        x = self.embed(idx)
        cos, sin = rope_cos_sin(ctx.pos_ids, self.config.head_dim, self.config.rope_base, x.dtype)
        for layer in self.layers:
            x = layer(x, cos, sin, ctx)
        return self.output(self.norm(x))
