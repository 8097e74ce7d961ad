"""Seeded weights stay bit-identical across refactors of the zoo (the suites' expectations rest on them).

The digests below were recorded from the zoo BEFORE the model files were merged into shared code
(one llama family for llama/mistral/mixtral, shared attention for gemma). Two digests per named config:

* ``layout``: every state-dict key in order, with its shape, dtype, init rule (kind, std) and the
  config; ``build`` draws each parameter from (seed, key, shape, rule) alone, so an equal layout means
  equal seeded weights on any device, the real 7B shapes included (built on meta, nothing allocated);
* ``values``: sha256 of the tiny config's seeded fp32 CPU tensors themselves.

Old checkpoints load because the keys are part of the layout digest. To re-record after an
intentional change: ``python tests/models/test_zoo_seeded_weights.py`` prints the table.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys

import pytest
import torch

from models import list_families, load_family

LAYOUT: dict[str, str] = {
    "gemma/tiny": "6ff954a3b3bbd7bb",
    "gemma/small": "d9cc5b83342313f6",
    "gemma/gemma-2b": "10e0f2b66a257d8e",
    "gemma/gemma-7b": "0647361b2112b430",
    "gpt2/tiny": "fe47f54b95f72933",
    "gpt2/gpt2": "2969c940dc1e8174",
    "gpt2/gpt2-medium": "485e72ca95638c86",
    "gpt2/gpt2-large": "6d20e9f0d3f39c8b",
    "gpt2/gpt2-xl": "e2477a1ee7003309",
    "llama/tiny": "da8b7e74b699366a",
    "llama/small": "9fec5c7f4b5cd9f7",
    "llama/llama-2-7b": "0a02c6f6b591bd19",
    "llama/llama-2-13b": "04af6d18a957745d",
    "llama/llama-3-8b": "f9c52ce06cb924e1",
    "mistral/tiny": "e07b84ea5bad1ff7",
    "mistral/small": "d4b7b4f10f77878e",
    "mistral/mistral-7b": "c025c52c33b730a4",
    "mixtral/tiny": "0c0611c0744adbc9",
    "mixtral/small": "42c6d4fe62e73426",
    "mixtral/mixtral-8x7b": "4848557a66190346",
}
VALUES: dict[str, str] = {
    "gemma": "b29ad9ba56e63f0e",
    "gpt2": "8ecd20983969a63e",
    "llama": "abef2abd56f678dc",
    "mistral": "abef2abd56f678dc",
    "mixtral": "da9878370a5cff23",
}


def layout_digest(family: str, config: str) -> str:
    """sha256 (16 hex) of keys, shapes, dtypes, init rules and config of ``family``/``config`` on meta."""
    model = load_family(family).build(config, device="meta")
    h = hashlib.sha256(json.dumps(dataclasses.asdict(model.config), sort_keys=True).encode())
    params = dict(model.named_parameters(remove_duplicate=False))
    for key, t in model.state_dict(keep_vars=True).items():
        rule = model.init_rule(key, params[key]) if key in params else ("buffer", 0.0)
        h.update(f"{key}|{tuple(t.shape)}|{t.dtype}|{rule[0]}|{rule[1]!r}\n".encode())
    return h.hexdigest()[:16]


def values_digest(family: str, config: str = "tiny", seed: int = 0) -> str:
    """sha256 (16 hex) of the seeded fp32 CPU state dict (keys and raw bytes)."""
    model = load_family(family).build(config, device="cpu", dtype=torch.float32, seed=seed)
    h = hashlib.sha256()
    for key, t in model.state_dict().items():
        h.update(key.encode())
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def named_configs() -> list[tuple[str, str]]:
    return [(fam, name) for fam in list_families() for name in load_family(fam).CONFIGS]


@pytest.mark.parametrize(("family", "config"), named_configs(), ids="/".join)
def test_seeded_layout_is_unchanged(family: str, config: str) -> None:
    assert layout_digest(family, config) == LAYOUT[f"{family}/{config}"]


@pytest.mark.parametrize("family", list_families())
def test_tiny_seeded_values_are_unchanged(family: str) -> None:
    assert values_digest(family) == VALUES[family]


def test_every_named_config_has_a_recorded_digest() -> None:
    assert sorted(LAYOUT) == sorted("/".join(fc) for fc in named_configs())
    assert sorted(VALUES) == list_families()


if __name__ == "__main__":
    torch.set_num_threads(1)
    print("LAYOUT = {")
    for fam, name in named_configs():
        print(f'    "{fam}/{name}": "{layout_digest(fam, name)}",')
    print("}\nVALUES = {")
    for fam in list_families():
        print(f'    "{fam}": "{values_digest(fam)}",')
    print("}")
    sys.exit(0)
