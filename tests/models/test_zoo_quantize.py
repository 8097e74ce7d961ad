"""Quantization formats: exact packing round trips, error bounds, BitNet arithmetic, model walk."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from models import load_family
from models._base import param_bytes
from models.quantize import (
    BitLinear,
    Int4Linear,
    Int8Linear,
    activation_dequantize,
    activation_quantize,
    int4_quantize,
    int8_quantize,
    pack_int4,
    pack_ternary,
    pick_group_size,
    quantize,
    quantized_bytes,
    ternary_dequantize,
    ternary_quantize,
    unpack_int4,
    unpack_ternary,
)

G = torch.Generator().manual_seed(0)


def test_int4_pack_round_trip_every_value() -> None:
    q = torch.arange(16, dtype=torch.uint8).repeat(3, 4)  # (3, 64): every nibble in both positions
    q = torch.cat([q, q.flip(-1)], dim=1)
    packed = pack_int4(q)
    assert packed.shape == (3, 64) and packed.dtype == torch.uint8
    assert torch.equal(unpack_int4(packed), q)
    assert packed[0, 0].item() == (0 << 4) | 1, "even column in the high nibble"


def test_ternary_pack_round_trip() -> None:
    w_q = torch.randint(-1, 2, (5, 13), generator=G).to(torch.int8)  # 13: not a multiple of 4
    packed = pack_ternary(w_q)
    assert packed.shape == (5, 4)
    assert torch.equal(unpack_ternary(packed, 13), w_q)


def test_int8_error_within_half_a_step() -> None:
    w = torch.randn(16, 64, generator=G)
    q, scale = int8_quantize(w)
    assert q.dtype == torch.int8 and int(q.abs().max()) == 127
    assert ((q.float() * scale[:, None] - w).abs() <= scale[:, None] / 2 + 1e-7).all()


def test_int4_group_error_within_half_a_step() -> None:
    w = torch.randn(8, 256, generator=G)
    q, scales, zeros = int4_quantize(w, 64)
    assert scales.shape == (8, 4) and scales.dtype == torch.bfloat16 and int(q.max()) <= 15
    layer = Int4Linear.from_linear(_linear(w), 64)
    err = (layer.dequantize() - w).reshape(8, 4, 64).abs()
    assert (err <= scales.float()[..., None] * 0.51 + 1e-3).all()
    assert pick_group_size(256) == 128 and pick_group_size(64) == 64 and pick_group_size(48) is None


def _linear(w: torch.Tensor, bias: bool = False) -> torch.nn.Linear:
    lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=bias)
    lin.weight.data.copy_(w)
    return lin


@pytest.mark.parametrize("cls", [Int8Linear, Int4Linear])
def test_weight_only_layers_equal_dequantized_linear(cls) -> None:
    lin = _linear(torch.randn(32, 128, generator=G), bias=True)
    layer = cls.from_linear(lin) if cls is Int8Linear else cls.from_linear(lin, 64)
    x = torch.randn(2, 3, 128, generator=G)
    torch.testing.assert_close(layer(x), F.linear(x, layer.dequantize(), lin.bias), atol=1e-5, rtol=1e-5)


def test_bitnet_scales_multiply_in_and_divide_out() -> None:
    w = torch.randn(16, 64, generator=G)
    w_q, scale = ternary_quantize(w)
    assert torch.isclose(scale, 1 / w.abs().mean())
    assert torch.equal(w_q, torch.round(w * scale).clamp(-1, 1).to(torch.int8))
    assert torch.equal(ternary_dequantize(w_q, scale), w_q.float() / scale)
    x = torch.randn(3, 64, generator=G)
    x_q, sx = activation_quantize(x)
    assert torch.allclose(sx.squeeze(-1), 127 / x.abs().amax(-1))
    back = activation_dequantize(x_q, sx)
    assert ((back - x).abs() <= 0.5 / sx + 1e-6).all()
    assert not torch.allclose(x_q * sx, x), "multiplying by the scale is not the inverse"


def test_bitlinear_integer_matmul_is_exact() -> None:
    layer = BitLinear.from_linear(_linear(torch.randn(24, 4096, generator=G)))
    x_q = torch.randint(-128, 128, (5, 4096), generator=G).float()
    exact = x_q.long() @ layer.ternary_weight().long().t()
    assert torch.equal(layer.integer_matmul(x_q).long(), exact)
    x = torch.randn(5, 4096, generator=G)
    xq, sx = activation_quantize(x)
    want = (xq.long() @ layer.ternary_weight().long().t()).double() / (
        sx.double() * layer.weight_scale.double()
    )
    torch.testing.assert_close(layer(x).double(), want, atol=1e-6, rtol=1e-6)


def test_quantize_walks_the_model_and_skips_tied_and_routers() -> None:
    gemma = quantize(load_family("gemma").build("tiny"), "int8")
    assert isinstance(gemma.output, torch.nn.Linear) and gemma.output.weight is gemma.tok_embeddings.weight
    mixtral = quantize(load_family("mixtral").build("tiny"), "int4")
    assert isinstance(mixtral.layers[0].feed_forward.gate, torch.nn.Linear)
    assert isinstance(mixtral.layers[0].feed_forward.experts[3].w2, Int4Linear)
    llama = quantize(load_family("llama").build("tiny"), "bitnet")
    assert isinstance(llama.output, torch.nn.Linear) and "output" not in llama.quantization["quantized"]
    assert isinstance(llama.layers[1].attention.wq, BitLinear)
    with pytest.raises(ValueError, match="unknown quantization"):
        quantize(load_family("llama").build("tiny"), "fp3")


@pytest.mark.parametrize("method,limit", [("int8", 0.55), ("int4", 0.30), ("bitnet", 0.20)])
def test_bytes_shrink(method, limit) -> None:
    model = load_family("llama").build("tiny", dtype=torch.bfloat16)
    before = param_bytes(model)
    q = quantize(copy.deepcopy(model), method)
    stored, bf16 = quantized_bytes(q)
    assert stored / bf16 <= limit and param_bytes(q) < before


def test_quantized_model_state_round_trips(tmp_path) -> None:
    pytest.importorskip("safetensors", reason="safetensors is not installed")
    from models import io

    fam = load_family("gpt2")
    q = quantize(fam.build("tiny"), "int4")
    path = io.save(q, tmp_path / "q.safetensors")
    fresh = quantize(fam.build("tiny", seed=9), "int4")
    io.load_into(fresh, path)
    idx = torch.randint(0, 259, (1, 7), generator=G)
    with torch.no_grad():
        assert torch.equal(fresh(idx), q(idx))
