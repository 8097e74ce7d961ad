"""Mistral: named configs of the llama decoder (:mod:`models.blocks`) with sliding-window attention.

Every layer attends to at most ``sliding_window`` keys: a query at position p reads keys in
(p - W, p]. The network is llama's; only the configs differ (tiny and small are llama's shapes, and
tiny's W=8 makes windows bite within a few tokens on CPU).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from models import blocks
from models._base import build_model

FAMILY = "mistral"

# fmt: off
CONFIGS: dict[str, dict] = {
    "tiny": dict(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, intermediate_size=128, vocab_size=320, max_seq_len=256, sliding_window=8),
    "small": dict(dim=512, n_layers=8, n_heads=8, n_kv_heads=2, intermediate_size=1408, vocab_size=32000, max_seq_len=4096, sliding_window=256),
    "mistral-7b": dict(dim=4096, n_layers=32, n_heads=32, n_kv_heads=8, intermediate_size=14336, vocab_size=32000, max_seq_len=32768, sliding_window=4096),
}
# fmt: on


@dataclass
class ModelArgs(blocks.LlamaArgs):
    """The llama config; by default with tiny's window of 8."""

    family: ClassVar[str] = FAMILY
    configs: ClassVar[dict[str, dict]] = CONFIGS

    sliding_window: int | None = 8


class Transformer(blocks.LlamaTransformer):
    args_class: ClassVar[type] = ModelArgs


def build(
    name: str = "tiny", device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, seed: int = 0
) -> Transformer:
    """``Transformer.from_name(name)`` built on meta, materialised on ``device``, seeded init."""
    return build_model(Transformer, name, device, dtype, seed)
