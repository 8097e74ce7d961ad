"""GPT-2: learned position embeddings, pre-LayerNorm, fused qkv projection, GELU MLP, tied head."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from models._base import ZooArgs, ZooTransformer, build_model
from models.kv_cache import AttnContext

FAMILY = "gpt2"

CONFIGS: dict[str, dict] = {
    "tiny": dict(dim=64, n_layers=2, n_heads=4, vocab_size=320, max_seq_len=256),
    "gpt2": dict(dim=768, n_layers=12, n_heads=12, vocab_size=50257, max_seq_len=1024),
    "gpt2-medium": dict(dim=1024, n_layers=24, n_heads=16, vocab_size=50257, max_seq_len=1024),
    "gpt2-large": dict(dim=1280, n_layers=36, n_heads=20, vocab_size=50257, max_seq_len=1024),
    "gpt2-xl": dict(dim=1600, n_layers=48, n_heads=25, vocab_size=50257, max_seq_len=1024),
}


@dataclass
class ModelArgs(ZooArgs):
    """``ZooArgs``'s fields; n_kv_heads is always n_heads (no GQA), head_dim dim // n_heads,
    intermediate_size 4 * dim unless set, max_seq_len the learned positions (n_positions)."""

    family: ClassVar[str] = FAMILY
    configs: ClassVar[dict[str, dict]] = CONFIGS

    sliding_window: int | None = None

    def __post_init__(self) -> None:
        if self.dim % self.n_heads:
            raise ValueError("dim must be a multiple of n_heads")
        self.n_kv_heads = self.n_heads
        self.head_dim = self.dim // self.n_heads
        self.intermediate_size = self.intermediate_size or 4 * self.dim


class Attention(nn.Module):
    def __init__(self, config: ModelArgs) -> None:
        super().__init__()
        self.n_heads, self.head_dim = config.n_heads, config.head_dim
        self.c_attn = nn.Linear(config.dim, 3 * config.dim)  # fused q, k, v
        self.c_proj = nn.Linear(config.dim, config.dim)
        self.kv_cache = None

    def forward(self, x: torch.Tensor, ctx: AttnContext) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.c_attn(x).split(d, dim=-1)
        q, k, v = (z.view(b, t, self.n_heads, self.head_dim).transpose(1, 2) for z in (q, k, v))
        y = ctx.attend(q, k, v, self.kv_cache)
        return self.c_proj(y.transpose(1, 2).reshape(b, t, d))


class MLP(nn.Module):
    def __init__(self, config: ModelArgs) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.dim, config.intermediate_size)
        self.c_proj = nn.Linear(config.intermediate_size, config.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, config: ModelArgs) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.dim, eps=config.norm_eps)
        self.attn = Attention(config)
        self.ln_2 = nn.LayerNorm(config.dim, eps=config.norm_eps)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, ctx: AttnContext) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), ctx)
        return x + self.mlp(self.ln_2(x))


class Transformer(ZooTransformer):
    args_class: ClassVar[type] = ModelArgs
    attention_attr: ClassVar[str] = "attn"

    def __init__(self, config: ModelArgs) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.dim)
        self.wpe = nn.Embedding(config.max_seq_len, config.dim)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.ln_f = nn.LayerNorm(config.dim, eps=config.norm_eps)
        self.lm_head = nn.Linear(config.dim, config.vocab_size, bias=False)
        self.tie_weights()
        self.cache_state = None

    def tie_weights(self) -> None:
        """The output projection is the token embedding matrix."""
        self.lm_head.weight = self.wte.weight

    def init_rule(self, name: str, p: nn.Parameter) -> tuple[str, float]:
        c = self.config
        if name.endswith(".bias"):
            return "zeros", 0.0
        if ".ln_" in f".{name}" and name.endswith("weight"):
            return "ones", 0.0
        if name in ("wte.weight", "wpe.weight"):
            return "normal", 2.0 * c.dim**-0.5
        std = p.shape[1] ** -0.5
        if name.endswith("c_proj.weight"):
            std *= 2.0  # outweigh the tied embedding, else a random model repeats its input token
        return "normal", std

    def logits(self, idx: torch.Tensor, ctx: AttnContext) -> torch.Tensor:
        if int(idx.shape[1]) > self.config.max_seq_len:
            raise ValueError(f"{idx.shape[1]} tokens exceed the {self.config.max_seq_len} learned positions")
        x = self.wte(idx) + self.wpe(ctx.pos_ids)
        for layer in self.layers:
            x = layer(x, ctx)
        return self.lm_head(self.ln_f(x))


def build(
    name: str = "tiny", device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, seed: int = 0
) -> Transformer:
    """``Transformer.from_name(name)`` built on meta, materialised on ``device``, seeded init."""
    return build_model(Transformer, name, device, dtype, seed)
