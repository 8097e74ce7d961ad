"""Quantization suite: per model and method, logits stay near the unquantized model, bytes shrink,
generation runs; the packed formats and BitNet's integer arithmetic are checked exactly."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from models._base import param_bytes
from models.generate import generate
from models.quantize import (
    METHODS,
    BitLinear,
    Int4Linear,
    Int8Linear,
    activation_dequantize,
    activation_quantize,
    pack_ternary,
    quantize,
    quantized_bytes,
    ternary_quantize,
    unpack_int4,
    unpack_ternary,
)

# (max relative L2 error of the logits, min top-1 agreement, min cosine similarity) vs unquantized.
# Random tiny models; BitNet is meant for quantization-aware-trained weights, so on random ones it
# only has to stay clearly better than chance (its arithmetic is checked exactly below).
BOUNDS = {"int8": (0.05, 0.90, 0.99), "int4": (0.45, 0.45, 0.90), "bitnet": (1.5, 0.02, 0.2)}
BYTES = {"int8": 0.55, "int4": 0.30, "bitnet": 0.20}  # stored bytes / bf16 bytes of the same layers
QTYPE = {"int8": Int8Linear, "int4": Int4Linear, "bitnet": BitLinear}


def _inputs(device: torch.device) -> torch.Tensor:
    return torch.randint(0, 259, (4, 32), generator=torch.Generator().manual_seed(0)).to(device)


@pytest.fixture(params=METHODS)
def method(request: pytest.FixtureRequest) -> str:
    return request.param


def test_logits_close_to_unquantized(make_model, device, method: str) -> None:
    model = make_model(torch.float32)
    idx = _inputs(device)
    with torch.no_grad():
        ref = model(idx).float()
        out = quantize(copy.deepcopy(model), method)(idx).float()
    rel = ((out - ref).norm() / ref.norm()).item()
    top1 = (out.argmax(-1) == ref.argmax(-1)).float().mean().item()
    cos = F.cosine_similarity(out.flatten(), ref.flatten(), dim=0).item()
    max_rel, min_top1, min_cos = BOUNDS[method]
    assert torch.isfinite(out).all()
    assert rel <= max_rel, f"{method}: relative logit error {rel:.3f} > {max_rel}"
    assert top1 >= min_top1, f"{method}: top-1 agreement {top1:.2f} < {min_top1}"
    assert cos >= min_cos, f"{method}: cosine similarity {cos:.3f} < {min_cos}"


def test_layers_match_their_dequantized_weights(make_model, device, method: str) -> None:
    """Every quantized layer computes what its stored (dequantized) weights say."""
    model = quantize(make_model(torch.float32), method)
    layers = [m for m in model.modules() if isinstance(m, QTYPE[method])]
    assert layers, f"{method} quantized no layer"
    x = torch.randn(3, 5, layers[0].in_features, generator=torch.Generator().manual_seed(1)).to(device)
    for layer in layers:
        if layer.in_features != x.shape[-1]:
            continue
        with torch.no_grad():
            got = layer(x)
            xin = x if method != "bitnet" else activation_dequantize(*activation_quantize(x))
            want = F.linear(xin, layer.dequantize().to(x.dtype), layer.bias)
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_parameter_bytes_reduced(make_model, method: str) -> None:
    model = make_model(torch.bfloat16)
    before = param_bytes(model)
    q = quantize(model, method)
    stored, bf16 = quantized_bytes(q)
    assert q.quantization["quantized"], "nothing was quantized"
    assert stored / bf16 <= BYTES[method], (
        f"{method}: {stored}/{bf16} bytes = {stored / bf16:.3f} > {BYTES[method]}"
    )
    assert param_bytes(q) < before


@pytest.mark.parametrize("static", [True, False], ids=["static", "dynamic"])
def test_quantized_generation_runs_and_caches(make_model, device, method: str, static: bool) -> None:
    model = quantize(make_model(torch.float32), method)
    prompt = _inputs(device)[:2, :10]
    out, logits = generate(model, prompt, 8, static_cache=static, return_logits=True)
    ref = generate(model, prompt, 8, use_cache=False)
    assert out.shape == (2, 18) and int(out.max()) < model.config.vocab_size and torch.isfinite(logits).all()
    assert out.tolist() == ref.tolist(), "quantized model: cached generation differs from recompute"


def test_int4_packs_two_values_per_byte(make_model) -> None:
    model = make_model(torch.float32)
    originals = {
        n: m.weight.detach().clone() for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)
    }
    q = quantize(model, "int4")
    for name in q.quantization["quantized"]:
        layer = q.get_submodule(name)
        assert layer.weight.dtype == torch.uint8 and layer.weight.shape[1] * 2 == layer.in_features
        codes = unpack_int4(layer.weight)
        assert int(codes.max()) <= 15
        # each group's dequantized weights lie within half a step of the originals (clamped range)
        w = originals[name].float().reshape(layer.out_features, -1, layer.group_size)
        dq = layer.dequantize().reshape_as(w)
        step = layer.scales.float()[..., None]
        assert bool(((dq - w).abs() <= step * 0.5 + 1e-3 * w.abs().amax()).all()), name


def test_bitnet_packing_and_round_trip_exact(make_model) -> None:
    model = make_model(torch.float32)
    originals = {
        n: m.weight.detach().clone() for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)
    }
    q = quantize(model, "bitnet")
    assert q.quantization["quantized"]
    for name in q.quantization["quantized"]:
        layer, w = q.get_submodule(name), originals[name]
        w_q, scale = ternary_quantize(w)
        assert set(w_q.unique().tolist()) <= {-1, 0, 1}
        assert torch.equal(layer.ternary_weight(), w_q), name
        assert torch.equal(unpack_ternary(pack_ternary(w_q), w.shape[1]), w_q)
        assert layer.weight.numel() == w.shape[0] * -(-w.shape[1] // 4)  # four weights per byte
        assert torch.equal(layer.weight_scale, scale)
        # dequantization divides by the scale: within half a step wherever rounding did not clamp
        dq = layer.dequantize()
        assert torch.equal(dq, w_q.float() / scale)
        inside = (w * scale).abs() <= 1.5
        assert bool(((dq - w).abs()[inside] <= 0.5 / scale + 1e-6).all()), name


def test_bitnet_activation_round_trip(device) -> None:
    x = torch.randn(4, 7, 64, generator=torch.Generator().manual_seed(2)).to(device) * 3
    x_q, scale = activation_quantize(x)
    assert float(x_q.min()) >= -128 and float(x_q.max()) <= 127 and torch.equal(x_q, x_q.round())
    back = activation_dequantize(x_q, scale)
    assert bool(((back - x).abs() <= 0.5 / scale + 1e-6).all()), "x_q / scale must be within half a step of x"
    assert torch.allclose(back.abs().amax(-1), x.abs().amax(-1), rtol=1e-6), "absmax maps to +-127 and back"


def test_bitnet_integer_arithmetic_exact(make_model, device) -> None:
    q = quantize(make_model(torch.float32), "bitnet")
    layer = q.get_submodule(q.quantization["quantized"][0])
    x = torch.randn(6, layer.in_features, generator=torch.Generator().manual_seed(3)).to(device)
    x_q, x_scale = activation_quantize(x)
    exact = x_q.cpu().long() @ layer.ternary_weight().cpu().long().t()  # int64 reference
    got = layer.integer_matmul(x_q)
    assert torch.equal(got.cpu().long(), exact) and torch.equal(got, got.round())
    with torch.no_grad():
        y = layer(x)
    want = exact.double() / (x_scale.cpu().double() * layer.weight_scale.cpu().double())
    if layer.bias is not None:
        want = want + layer.bias.detach().cpu().double()
    torch.testing.assert_close(y.cpu().double(), want, atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the tinygemm int4 kernel needs a CUDA GPU")
def test_int4_cuda_kernel_matches_dequant(model_name: str) -> None:
    torch.manual_seed(0)
    lin = torch.nn.Linear(512, 256, bias=False, device="cuda", dtype=torch.bfloat16)
    layer = Int4Linear.from_linear(lin, 128)
    x = torch.randn(5, 512, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        got = layer(x)
        want = F.linear(x.float(), layer.dequantize()).to(torch.bfloat16)
    assert layer.kernel == "tinygemm", "the int4 kernel did not run"
    torch.testing.assert_close(got.float(), want.float(), atol=5e-2, rtol=2e-2)
