"""FlashAttention-2 suite (CUDA): the flash backend matches eager attention in fp16 and bf16 for
each model's head layout (causal, GQA, sliding window, padded and variable-length batches,
cached decoding), and the flash kernel provably ran (forced backend, profiler)."""

from __future__ import annotations

import pytest
import torch

from models.attention import attention, attention_backend, flash_varlen_available, set_flash_varlen
from models.tokenizer import ByteTokenizer

pytestmark = pytest.mark.flash_attn_test

DTYPES = [torch.float16, torch.bfloat16]
EPS = {torch.float16: 2e-3, torch.bfloat16: 1.6e-2}  # allowed beyond 2x eager's own low-precision error
DENSE_CASES = ["causal", "noncausal", "window", "chunked_prefill", "decode_window"]
PADDED_CASES = ["left_padded", "right_padded", "padded_window", "decode_padded"]


def _dname(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


@pytest.fixture(params=DTYPES, ids=_dname)
def dtype(request: pytest.FixtureRequest) -> torch.dtype:
    return request.param


@pytest.fixture(params=["varlen", "per_sequence"])
def padded_impl(request: pytest.FixtureRequest):
    if request.param == "varlen" and not flash_varlen_available():
        pytest.skip("this torch has no varlen FlashAttention entry point (torch.nn.attention.varlen)")
    set_flash_varlen(request.param == "varlen")
    yield request.param
    set_flash_varlen(True)


def _heads(family) -> tuple[int, int, int, int | None]:
    c = family.ModelArgs.from_name("tiny")
    return c.n_heads, c.n_kv_heads, c.head_dim, c.sliding_window


def _case(name: str, tk: int, window: int) -> dict:
    lengths = [tk, tk // 2 + 3, 7]
    mask = torch.zeros(3, tk, dtype=torch.bool)
    for i, n in enumerate(lengths):
        if name == "right_padded":
            mask[i, :n] = True
        else:
            mask[i, tk - n :] = True
    return {
        "causal": dict(tq=tk, causal=True),
        "noncausal": dict(tq=tk, causal=False),
        "window": dict(tq=tk, causal=True, window=window),
        "left_padded": dict(tq=tk, causal=True, mask=mask),
        "right_padded": dict(tq=tk, causal=True, mask=mask),
        "padded_window": dict(tq=tk, causal=True, mask=mask, window=window),
        "decode_padded": dict(tq=1, causal=True, mask=mask, window=window),
        "chunked_prefill": dict(tq=17, causal=True, window=window),
        "decode_window": dict(tq=1, causal=True, window=window),
    }[name]


def _check(out: torch.Tensor, low: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype, what: str) -> None:
    err_flash = (out.float() - ref).abs().max().item()
    err_eager = (low.float() - ref).abs().max().item()
    assert torch.isfinite(out).all(), f"{what}: non-finite flash output"
    assert err_flash <= 2 * err_eager + EPS[dtype], (
        f"{what}: flash max error {err_flash:.2e} vs eager {err_eager:.2e} (allowed 2x + {EPS[dtype]})"
    )


@pytest.mark.parametrize("case", DENSE_CASES)
def test_flash_attention_matches_eager(family, dtype, case: str) -> None:
    _attention_case(family, dtype, case)


@pytest.mark.parametrize("case", PADDED_CASES)
def test_flash_padded_attention_matches_eager(family, dtype, case: str, padded_impl: str) -> None:
    _attention_case(family, dtype, case)


def _attention_case(family, dtype: torch.dtype, case: str) -> None:
    hq, hkv, d, window = _heads(family)
    tk = 96
    spec = _case(case, tk, window or 16)
    gen = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(3, hq, spec.pop("tq"), d, device="cuda", generator=gen)
    k = torch.randn(3, hkv, tk, d, device="cuda", generator=gen)
    v = torch.randn(3, hkv, tk, d, device="cuda", generator=gen)
    if spec.get("mask") is not None:
        spec["mask"] = spec["mask"].cuda()
    ref = attention(q, k, v, backend="eager", **spec)  # fp32 reference
    ql, kl, vl = q.to(dtype), k.to(dtype), v.to(dtype)
    low = attention(ql, kl, vl, backend="eager", **spec)
    out = attention(ql, kl, vl, backend="flash", **spec)
    assert out.dtype == dtype and out.shape == ref.shape
    _check(out, low, ref, dtype, f"{case} ({hq}q/{hkv}kv heads, d={d})")


REL_EPS = {torch.float16: 1e-3, torch.bfloat16: 4e-3}


def _check_logits(
    out: torch.Tensor, low: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype, what: str
) -> None:
    """Mean per-token relative error: robust to a rare MoE routing flip in low precision."""

    def rel(x: torch.Tensor) -> float:
        return ((x - ref).norm(dim=-1) / ref.norm(dim=-1)).mean().item()

    assert torch.isfinite(out).all(), f"{what}: non-finite flash output"
    err_flash, err_eager = rel(out), rel(low)
    assert err_flash <= 2 * err_eager + REL_EPS[dtype], (
        f"{what}: flash mean relative error {err_flash:.2e} vs eager {err_eager:.2e} "
        f"(allowed 2x + {REL_EPS[dtype]})"
    )
    agree = (out.argmax(-1) == low.argmax(-1)).float().mean().item()
    assert agree >= 0.9, f"{what}: top-1 agreement flash vs eager {agree:.2f}"


def _logits(model, ids, mask, backend: str) -> torch.Tensor:
    with attention_backend(backend), torch.no_grad():
        return model(ids, attention_mask=mask).float()


@pytest.mark.parametrize("padded", [False, True], ids=["dense", "left_padded"])
def test_flash_model_logits_match_eager(make_model, dtype, padded: bool) -> None:
    tok = ByteTokenizer()
    texts = (
        ["The quick brown fox jumps over the lazy dog", "hello"]
        if padded
        else ["The quick brown fox jumps"] * 2
    )
    ids, mask = tok.batch_encode(texts, device="cuda")
    mask = mask if padded else None
    model = make_model(torch.float32)
    ref = _logits(model, ids, mask, "eager")
    model = model.to(dtype)
    low, out = _logits(model, ids, mask, "eager"), _logits(model, ids, mask, "flash")
    real = mask.bool() if padded else torch.ones(ids.shape, dtype=torch.bool, device="cuda")
    _check_logits(out[real], low[real], ref[real], dtype, "model logits")


def _stepwise(model, tokens: torch.Tensor, prompt: int, static: bool, backend: str) -> torch.Tensor:
    """Teacher-forced cached decoding: logits of every step after the prompt."""
    b, t = tokens.shape
    with attention_backend(backend), torch.no_grad():
        model.setup_caches(b, t, static=static)
        try:
            steps = [model(tokens[:, :prompt], torch.arange(prompt, device="cuda"))[:, -1]]
            for pos in range(prompt, t - 1):
                steps.append(model(tokens[:, pos : pos + 1], torch.tensor([pos], device="cuda"))[:, -1])
        finally:
            model.clear_caches()
    return torch.stack(steps, 1).float()


@pytest.mark.parametrize("static", [True, False], ids=["static", "dynamic"])
def test_flash_cached_decode_matches_eager(make_model, dtype, static: bool) -> None:
    tokens = torch.randint(0, 259, (2, 40), generator=torch.Generator().manual_seed(0)).cuda()
    model = make_model(torch.float32)
    ref = _stepwise(model, tokens, 24, static, "eager")
    model = model.to(dtype)
    low = _stepwise(model, tokens, 24, static, "eager")
    out = _stepwise(model, tokens, 24, static, "flash")
    _check_logits(out, low, ref, dtype, "cached decode logits")


def test_flash_kernel_ran(make_model) -> None:
    model = make_model(torch.bfloat16)
    ids, mask = ByteTokenizer().batch_encode(["The quick brown fox", "hi"], device="cuda")
    from torch.profiler import ProfilerActivity, profile

    with (
        attention_backend("flash"),
        torch.no_grad(),
        profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof,
    ):
        model(ids)
        model(ids, attention_mask=mask)
        torch.cuda.synchronize()
    names = {e.key for e in prof.key_averages()}
    flash = sorted(n for n in names if "flash" in n.lower())
    others = sorted(
        n
        for n in names
        if any(s in n.lower() for s in ("efficient_attention", "cudnn_attention", "attention_math", "fmha"))
    )
    assert flash, f"no flash kernel in the profile: {sorted(names)[:40]}"
    assert not others, f"non-flash attention kernels ran: {others}"


def test_flash_refuses_instead_of_falling_back() -> None:
    q = torch.randn(1, 2, 8, 16, device="cuda")  # fp32: FlashAttention-2 cannot take it
    with pytest.raises(RuntimeError):
        attention(q, q, q, backend="flash")
    with pytest.raises(ValueError):  # arbitrary masks are not flash's business either
        attention(
            q.half(),
            q.half(),
            q.half(),
            backend="flash",
            mask=torch.ones(1, 1, 8, 8, dtype=torch.bool, device="cuda"),
        )
