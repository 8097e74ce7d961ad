"""Fused q/k/v and gate/up projections: same seeded weights as separate ones, old state dicts load,
quantization and compilation take the fused layers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from models import load_family
from models._base import param_seed
from models._fused import FusedLinear
from models.quantize import Int4Linear, Int8Linear, quantize

FAMILIES = ["llama", "mistral", "mixtral", "gemma"]
# fused module -> unfused names, per family (where the MLP lives: a dense block or expert 1)
FUSED = {
    "llama": {"attention.wqkv": ("wq", "wk", "wv"), "feed_forward.w13": ("w1", "w3")},
    "mistral": {"attention.wqkv": ("wq", "wk", "wv"), "feed_forward.w13": ("w1", "w3")},
    "mixtral": {"attention.wqkv": ("wq", "wk", "wv"), "feed_forward.experts.1.w13": ("w1", "w3")},
    "gemma": {"attention.wqkv": ("wq", "wk", "wv"), "feed_forward.gate_up_proj": ("gate_proj", "up_proj")},
}
IDX = torch.tensor([[1, 5, 9, 33, 100, 7, 3]])


def _unfused_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict as it was before fusion: one weight per projection."""
    out = {}
    for name, t in model.state_dict().items():
        module_name = name.rpartition(".")[0]
        module = model.get_submodule(module_name) if module_name else model
        if not isinstance(module, FusedLinear):
            out[name] = t
            continue
        parent = module_name.rpartition(".")[0]
        for part, rows in zip(module.parts, t.split(list(module.parts.values())), strict=True):
            out[f"{parent}.{part}.weight"] = rows.clone()
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_fused_rows_are_the_separate_seeded_draws(family: str) -> None:
    """Each part holds exactly the values the unfused parameter of that name was given."""
    model = load_family(family).build("tiny", seed=3)
    std = model.config.dim**-0.5  # every fused projection reads the model width
    for suffix, parts in FUSED[family].items():
        fused = model.get_submodule(f"layers.1.{suffix}")
        assert isinstance(fused, FusedLinear) and tuple(fused.parts) == parts
        parent = f"layers.1.{suffix.rpartition('.')[0]}"
        for part, rows in zip(parts, fused.weight.split(list(fused.parts.values())), strict=True):
            name = f"{parent}.{part}.weight"
            gen = torch.Generator().manual_seed(param_seed(3, name))
            want = torch.empty(rows.shape).normal_(0.0, std, generator=gen)
            assert torch.equal(rows, want), name


@pytest.mark.parametrize("family", FAMILIES)
def test_unfused_state_dict_loads_into_fused_model(family: str) -> None:
    fam = load_family(family)
    ref = fam.build("tiny", seed=1)
    old = _unfused_state(ref)
    assert any(k.endswith(".wq.weight") for k in old) and not any("wqkv" in k for k in old)
    fresh = fam.build("tiny", seed=2)
    fresh.load_state_dict(old, strict=True)
    with torch.no_grad():
        assert torch.equal(fresh(IDX), ref(IDX))


def test_unfused_safetensors_file_loads(tmp_path) -> None:
    st = pytest.importorskip("safetensors.torch", reason="safetensors is not installed")
    from models import io

    ref = load_family("llama").build("tiny", seed=4)
    path = tmp_path / "old.safetensors"
    st.save_file(_unfused_state(ref), str(path))
    fresh = io.load_into(load_family("llama").build("tiny", seed=5), path)
    with torch.no_grad():
        assert torch.equal(fresh(IDX), ref(IDX))
    with pytest.raises(RuntimeError, match="wqkv"):  # a part missing: reported, not half-loaded
        partial = {k: v for k, v in _unfused_state(ref).items() if "layers.0.attention.wv" not in k}
        load_family("llama").build("tiny").load_state_dict(partial, strict=True)


def test_fused_linear_equals_its_parts() -> None:
    lin = FusedLinear(16, {"a": 8, "b": 4, "c": 4})
    torch.nn.init.normal_(lin.weight)
    x = torch.randn(3, 16, generator=torch.Generator().manual_seed(0))
    got = lin(x).split([8, 4, 4], dim=-1)
    for part, w in zip(got, lin.weight.split([8, 4, 4]), strict=True):
        torch.testing.assert_close(part, F.linear(x, w))
    assert "parts=(a=8, b=4, c=4)" in repr(lin)
    with pytest.raises(ValueError):
        FusedLinear(16, {})


@pytest.mark.parametrize("method,cls", [("int8", Int8Linear), ("int4", Int4Linear)])
def test_quantize_replaces_fused_layers_and_keeps_output_close(method: str, cls: type) -> None:
    model = load_family("llama").build("tiny")
    with torch.no_grad():
        ref = model(IDX)
        q = quantize(load_family("llama").build("tiny"), method)
        out = q(IDX)
    assert isinstance(q.layers[0].attention.wqkv, cls) and isinstance(q.layers[0].feed_forward.w13, cls)
    assert q.layers[0].attention.wqkv.out_features == sum(q.layers[0].attention.widths)
    cos = F.cosine_similarity(out.flatten(), ref.flatten(), dim=0).item()
    assert cos > (0.99 if method == "int8" else 0.9)


def test_meta_build_has_fused_shapes() -> None:
    model = load_family("mistral").build("mistral-7b", device="meta", dtype=torch.bfloat16)
    attn, ff = model.layers[0].attention, model.layers[0].feed_forward
    assert attn.wqkv.weight.shape == (4096 + 2 * 1024, 4096) and ff.w13.weight.shape == (2 * 14336, 4096)
    assert attn.wqkv.weight.is_meta
