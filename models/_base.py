"""Helpers shared by the family files: config lookup, seeded init on any device, cache setup,
and ``ZooTransformer``, the base of every family's ``Transformer``.

No ``ModelArgs`` here (``ZooArgs`` is their base): the platform finds families by that class name
in ``models/*.py``.
"""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from models.kv_cache import AttnContext, CacheState, KVCache, make_context

# init rule: (parameter name, parameter) -> ("normal", std) | ("ones", 0) | ("zeros", 0)
InitRule = Callable[[str, nn.Parameter], tuple[str, float]]


def lookup_config(configs: dict[str, dict], name: str, family: str) -> dict:
    """The config called ``name`` (``family-`` prefix optional); a KeyError lists the known ones."""
    for key in (name, name.removeprefix(f"{family}-"), f"{family}-{name}"):
        if key in configs:
            return dict(configs[key], name=key)
    raise KeyError(f"unknown {family} config {name!r}; known: {', '.join(configs)}")


@dataclass
class ZooArgs:
    """The fields every family's ``ModelArgs`` starts with (a family adds its own after them and
    may change a default), and ``from_name``: the family sets ``family`` and ``configs``."""

    family: ClassVar[str]
    configs: ClassVar[dict[str, dict]]

    name: str = "tiny"
    dim: int = 64
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int = 0
    head_dim: int = 0  # 0: dim // n_heads
    intermediate_size: int = 0
    vocab_size: int = 320
    max_seq_len: int = 256
    norm_eps: float = 1e-5

    @classmethod
    def from_name(cls, name: str) -> ZooArgs:
        """The config called ``name`` in ``configs`` (``<family>-`` prefix optional)."""
        return cls(**lookup_config(cls.configs, name, cls.family))


def param_seed(seed: int, name: str) -> int:
    """A stable per-parameter seed, independent of construction order."""
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % (2**62)


@torch.no_grad()
def init_parameters(model: nn.Module, seed: int, rule: InitRule) -> None:
    """(Re)initialise every parameter in place, deterministically from ``seed`` and its name."""
    for name, p in model.named_parameters():
        kind, std = rule(name, p)
        if kind == "ones":
            p.fill_(1.0)
        elif kind == "zeros":
            p.zero_()
        elif kind == "normal":
            gen = torch.Generator(device=p.device).manual_seed(param_seed(seed, name))
            tmp = torch.empty(p.shape, device=p.device, dtype=torch.float32).normal_(0.0, std, generator=gen)
            p.copy_(tmp)
        else:
            raise ValueError(f"unknown init kind {kind!r} for {name}")


def instantiate(
    factory: Callable[[], nn.Module], device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> nn.Module:
    """``factory()`` with uninitialised weights of ``dtype`` on ``device``, built on meta first.

    No weights are allocated before the target device (a 7B model never lands in CPU memory on
    its way to a GPU). A CPU target skips the meta step: same memory, and no meta-kernel import.
    """
    target = torch.device(device)
    with torch.device("cpu" if target.type == "cpu" else "meta"):
        model = factory().to(dtype=dtype)
    if target.type not in ("cpu", "meta"):
        model = model.to_empty(device=target)
    if target.type != "meta" and hasattr(model, "tie_weights"):
        model.tie_weights()
    return model


def build_model(
    cls: type[nn.Module],
    name: str,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> nn.Module:
    """``cls.from_name(name)`` materialised on ``device`` and initialised from ``seed`` (see init_parameters)."""
    model = instantiate(lambda: cls.from_name(name), device, dtype)
    if torch.device(device).type != "meta":
        init_parameters(model, seed, model.init_rule)
    return model.eval()


def setup_kv_caches(
    model: nn.Module,
    attn_layers: Iterable[nn.Module],
    max_batch_size: int,
    max_seq_length: int,
    static: bool,
    n_kv_heads: int,
    head_dim: int,
    max_positions: int | None = None,
) -> None:
    """Give every attention layer a :class:`KVCache` (on its own device) and the model a :class:`CacheState`."""
    if max_positions is not None and max_seq_length > max_positions:
        raise ValueError(f"max_seq_length {max_seq_length} exceeds the model's {max_positions} positions")
    first = next(p for p in model.parameters() if p.is_floating_point())  # the embedding: model dtype
    model.cache_state = CacheState(max_batch_size, max_seq_length, static=static, device=first.device)
    for layer in attn_layers:
        device = next(itertools.chain(layer.parameters(), layer.buffers())).device  # quantized: buffers only
        layer.kv_cache = KVCache(
            max_batch_size,
            max_seq_length,
            n_kv_heads,
            head_dim,
            dtype=first.dtype,
            device=device,
            static=static,
        )


def clear_kv_caches(model: nn.Module, attn_layers: Iterable[nn.Module]) -> None:
    """Drop all caches: the model runs cache-free again."""
    model.cache_state = None
    for layer in attn_layers:
        layer.kv_cache = None


def rope_cos_sin(
    pos_ids: torch.Tensor, head_dim: int, base: float, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotary cos/sin of shape (B|1, 1, T, head_dim) for positions (B|1, T), rotate-half layout."""
    inv_freq = 1.0 / (
        base ** (torch.arange(0, head_dim, 2, device=pos_ids.device, dtype=torch.float32) / head_dim)
    )
    freqs = pos_ids.float()[..., None] * inv_freq
    emb = torch.cat([freqs, freqs], dim=-1)[:, None]
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, H, T, D) by cos/sin (rotate-half convention)."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


def param_bytes(model: nn.Module) -> int:
    """Bytes of parameters and persistent buffers (tied tensors counted once)."""
    seen: set[int] = set()
    total = 0
    for t in list(model.parameters()) + [b for n, b in model.named_buffers() if "cache" not in n]:
        if id(t) not in seen:
            seen.add(id(t))
            total += t.numel() * t.element_size()
    return total


class ZooTransformer(nn.Module):
    """What every family's ``Transformer`` shares: ``from_name``, KV caches, seeded reset.

    A subclass sets ``args_class`` (its family's ``ModelArgs``), keeps its blocks in ``self.layers``
    and its config in ``self.config``, and defines ``init_rule`` and ``logits`` (the network after
    ``forward`` made the attention context); ``attention_attr`` names each block's attention module.
    """

    args_class: ClassVar[type]
    attention_attr: ClassVar[str] = "attention"

    @classmethod
    def from_name(cls, name: str) -> ZooTransformer:
        return cls(cls.args_class.from_name(name))

    def attention_layers(self) -> Iterator[nn.Module]:
        return (getattr(blk, self.attention_attr) for blk in self.layers)

    def setup_caches(self, max_batch_size: int, max_seq_length: int, static: bool = True) -> None:
        """Allocate a KV cache per layer (static buffers for torch.compile, or growing ones)."""
        c = self.config
        setup_kv_caches(
            self,
            self.attention_layers(),
            max_batch_size,
            max_seq_length,
            static,
            c.n_kv_heads,
            c.head_dim,
            c.max_seq_len,
        )

    def clear_caches(self) -> None:
        clear_kv_caches(self, self.attention_layers())

    def init_rule(self, name: str, p: nn.Parameter) -> tuple[str, float]:
        raise NotImplementedError

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
        return self.logits(idx, ctx)

    def logits(self, idx: torch.Tensor, ctx: AttnContext) -> torch.Tensor:
        """The family's network on tokens ``idx`` given the attention context (see ``forward``)."""
        raise NotImplementedError
