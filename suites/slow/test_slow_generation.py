"""Slow suite: generation and logits against device-keyed expectations, plus the invariants that
must hold on any device (cache vs recompute, padded batch vs one by one, save/load, determinism)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from models import io
from models.attention import attention_backend
from models.generate import generate
from models.tokenizer import ByteTokenizer

pytestmark = pytest.mark.slow

TOK = ByteTokenizer()
PROMPT = "The quick brown fox"
PROMPTS = ["Hello, world! How are you", "hi", "The quick brown fox jumps"]
NEW = 12
TOL = {torch.float32: (2e-3, 1e-3), torch.bfloat16: (1e-1, 5e-2), torch.float16: (3e-2, 2e-2)}


def _dname(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _prompt(device: torch.device) -> torch.Tensor:
    return torch.tensor([TOK.encode(PROMPT)], device=device)


def test_greedy_generation_matches_expectations(make_model, native_dtype, device, expect) -> None:
    model = make_model(native_dtype)
    ids = _prompt(device)
    out = generate(model, ids, NEW)
    expect(f"greedy_tokens/{_dname(native_dtype)}", out[0, ids.shape[1] :].tolist())


def test_logits_slice_matches_expectations(make_model, native_dtype, device, expect) -> None:
    model = make_model(native_dtype)
    with torch.no_grad():
        logits = model(_prompt(device))[0, -3:, :8].float()
    atol, rtol = TOL[native_dtype]
    expect(
        f"logits_slice/{_dname(native_dtype)}",
        [[round(v, 4) for v in row] for row in logits.tolist()],
        atol=atol,
        rtol=rtol,
    )


def test_seeded_sampling_matches_expectations(make_model, native_dtype, device, expect) -> None:
    model = make_model(native_dtype)
    ids = _prompt(device)
    out = generate(model, ids, NEW, temperature=0.8, top_k=40, seed=1234)
    expect(f"sampled_tokens/{_dname(native_dtype)}", out[0, ids.shape[1] :].tolist())


@pytest.mark.parametrize("static", [True, False], ids=["static", "dynamic"])
def test_kv_cache_matches_recompute(make_model, device, static: bool) -> None:
    model = make_model(torch.float32)
    ids = _prompt(device)
    cached, cached_logits = generate(model, ids, NEW, static_cache=static, return_logits=True)
    full, full_logits = generate(model, ids, NEW, use_cache=False, return_logits=True)
    assert cached.tolist() == full.tolist()
    torch.testing.assert_close(cached_logits, full_logits, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("static", [True, False], ids=["static", "dynamic"])
def test_left_padded_batch_matches_one_by_one(make_model, device, static: bool) -> None:
    model = make_model(torch.float32)
    ids, mask = TOK.batch_encode(PROMPTS, device=device)
    batch, batch_logits = generate(
        model, ids, NEW, attention_mask=mask, static_cache=static, return_logits=True
    )
    assert bool((mask == 0).any()), "the batch should contain padding"
    for i, text in enumerate(PROMPTS):
        one = torch.tensor([TOK.encode(text)], device=device)
        single, single_logits = generate(model, one, NEW, static_cache=static, return_logits=True)
        assert batch[i, ids.shape[1] :].tolist() == single[0, one.shape[1] :].tolist(), f"prompt {i} {text!r}"
        torch.testing.assert_close(batch_logits[i], single_logits[0], atol=1e-4, rtol=1e-4)


def test_attention_backends_agree(make_model, device) -> None:
    model = make_model(torch.float32)
    ids, mask = TOK.batch_encode(PROMPTS, device=device)
    outs = {}
    for backend in ("eager", "sdpa"):
        with attention_backend(backend), torch.no_grad():
            outs[backend] = model(ids, attention_mask=mask)
    real = mask.bool()
    torch.testing.assert_close(outs["sdpa"][real], outs["eager"][real], atol=1e-4, rtol=1e-4)


@pytest.mark.skipif(importlib.util.find_spec("safetensors") is None, reason="safetensors is not installed")
def test_save_load_round_trip(make_model, device, tmp_path) -> None:
    model = make_model(torch.float32, seed=7)
    path = io.save(model, tmp_path / "model.safetensors")
    loaded = io.load(path, device=device)
    assert type(loaded) is type(model) and loaded.config == model.config
    ref, got = model.state_dict(), loaded.state_dict()
    assert ref.keys() == got.keys()
    for name in ref:
        assert torch.equal(ref[name], got[name]), name
    ids = _prompt(device)
    assert generate(loaded, ids, NEW).tolist() == generate(model, ids, NEW).tolist()


def test_build_and_forward_are_deterministic(make_model, device) -> None:
    a, b, c = make_model(seed=3), make_model(seed=3), make_model(seed=4)
    for (name, pa), (_, pb), (_, pc) in zip(
        a.named_parameters(), b.named_parameters(), c.named_parameters(), strict=True
    ):
        assert torch.equal(pa, pb), f"{name} differs between two builds with the same seed"
        if pa.numel() > 1 and pa.std() > 0:
            assert not torch.equal(pa, pc), f"{name} ignores the seed"
    ids = _prompt(device)
    with torch.no_grad():
        assert torch.equal(a(ids), a(ids))


def test_seeded_sampling_is_reproducible(make_model, device) -> None:
    model = make_model(torch.float32)
    ids = _prompt(device)
    runs = [
        generate(model, ids, NEW, temperature=1.0, seed=s)[0, ids.shape[1] :].tolist() for s in (11, 11, 12)
    ]
    assert runs[0] == runs[1]
    assert runs[0] != runs[2], "a different seed should sample differently"
