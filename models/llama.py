"""Llama (1/2/3): RMSNorm, rotary positions, SwiGLU MLP, grouped-query attention.

Pure PyTorch, gpt-fast style. ``build("tiny")`` runs in milliseconds on CPU; the real shapes
(``llama-2-7b``, ``llama-3-8b``) are built on the meta device first, then materialised on the target.

The network is :mod:`models.blocks`' llama decoder, which mistral (llama configs with a sliding
window), mixtral (a mixture-of-experts feed-forward) and gemma (its own norm and MLP) share.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from models._base import build_model
from models.blocks import LlamaArgs, LlamaTransformer

FAMILY = "llama"

# fmt: off
CONFIGS: dict[str, dict] = {
    "tiny": dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, intermediate_size=128, vocab_size=320, max_seq_len=256),
    "small": dict(dim=512, n_layers=8, n_heads=8, n_kv_heads=2, intermediate_size=1408, vocab_size=32000, max_seq_len=2048),
    "llama-2-7b": dict(dim=4096, n_layers=32, n_heads=32, n_kv_heads=32, intermediate_size=11008, vocab_size=32000, max_seq_len=4096),
    "llama-2-13b": dict(dim=5120, n_layers=40, n_heads=40, n_kv_heads=40, intermediate_size=13824, vocab_size=32000, max_seq_len=4096),
    "llama-3-8b": dict(dim=4096, n_layers=32, n_heads=32, n_kv_heads=8, intermediate_size=14336, vocab_size=128256, max_seq_len=8192, rope_base=500000.0),
}
# fmt: on


@dataclass
class ModelArgs(LlamaArgs):
    family: ClassVar[str] = FAMILY
    configs: ClassVar[dict[str, dict]] = CONFIGS


class Transformer(LlamaTransformer):
    args_class: ClassVar[type] = ModelArgs


def build(
    name: str = "tiny", device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, seed: int = 0
) -> Transformer:
    """``Transformer.from_name(name)`` built on meta, materialised on ``device``, seeded init."""
    return build_model(Transformer, name, device, dtype, seed)
