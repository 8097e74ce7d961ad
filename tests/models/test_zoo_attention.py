"""attention(): backends agree (eager reference, sdpa, flash on CPU's flash kernel), masks, windows."""

from __future__ import annotations

import pytest
import torch

from models.attention import (
    BACKENDS,
    allowed_mask,
    attention,
    attention_backend,
    get_attention_backend,
    repeat_kv,
    set_attention_backend,
)


def _qkv(b=3, hq=4, hkv=2, tq=9, tk=9, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(b, hq, tq, d, generator=g),
        torch.randn(b, hkv, tk, d, generator=g),
        torch.randn(b, hkv, tk, d, generator=g),
    )


def _pad_mask(b: int, tk: int, right: bool = False) -> torch.Tensor:
    mask = torch.ones(b, tk, dtype=torch.bool)
    for i in range(b):
        if right:
            mask[i, tk - 2 * i :] = False
        else:
            mask[i, : 2 * i] = False
    return mask


def _manual(q, k, v, allowed):
    k, v = repeat_kv(k, q.shape[1] // k.shape[1]), repeat_kv(v, q.shape[1] // k.shape[1])
    s = (q @ k.transpose(-1, -2)) / q.shape[-1] ** 0.5
    if allowed is not None:
        s = s.masked_fill(~allowed, float("-inf"))
    return torch.nan_to_num(torch.softmax(s, -1), nan=0.0) @ v


CASES = [
    # (tq, tk, causal, window, padding)
    (9, 9, True, None, None),
    (9, 9, False, None, None),
    (1, 9, True, None, None),
    (4, 12, True, None, None),
    (16, 16, True, 4, None),
    (17, 17, True, 5, None),
    (16, 16, True, 1, None),
    (7, 20, True, 3, None),
    (1, 20, True, 6, None),
    (9, 9, True, None, "left"),
    (9, 9, True, None, "right"),
    (9, 9, False, None, "left"),
    (16, 16, True, 4, "left"),
    (1, 9, True, 3, "left"),
    (9, 9, True, 40, None),
]


@pytest.mark.parametrize("backend", ["sdpa", "flash"])
@pytest.mark.parametrize("tq,tk,causal,window,pad", CASES)
def test_backends_match_eager(backend, tq, tk, causal, window, pad) -> None:
    q, k, v = _qkv(tq=tq, tk=tk)
    mask = None if pad is None else _pad_mask(3, tk, right=pad == "right")
    ref = attention(q, k, v, causal=causal, mask=mask, window=window, backend="eager")
    out = attention(q, k, v, causal=causal, mask=mask, window=window, backend=backend)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_eager_is_bottom_right_causal_with_window() -> None:
    q, k, v = _qkv(b=1, tq=3, tk=8)
    out = attention(q, k, v, causal=True, window=4, backend="eager")
    qpos = torch.arange(5, 8)[:, None]
    kpos = torch.arange(8)[None]
    allowed = (kpos <= qpos) & (kpos > qpos - 4)
    torch.testing.assert_close(out, _manual(q, k, v, allowed[None, None]), atol=1e-6, rtol=1e-6)


def test_gqa_query_head_reads_kv_head_h_over_group() -> None:
    q, k, v = _qkv(hq=6, hkv=2)
    out = attention(q, k, v, causal=False, backend="eager")
    for h in range(6):
        one = attention(
            q[:, h : h + 1],
            k[:, h // 3 : h // 3 + 1],
            v[:, h // 3 : h // 3 + 1],
            causal=False,
            backend="eager",
        )
        torch.testing.assert_close(out[:, h : h + 1], one)


@pytest.mark.parametrize("backend", BACKENDS)
def test_padded_queries_and_empty_rows_are_zero(backend) -> None:
    q, k, v = _qkv(tq=6, tk=6)
    mask = _pad_mask(3, 6)
    out = attention(q, k, v, causal=True, mask=mask, backend=backend)
    assert torch.equal(out[2, :, :4], torch.zeros_like(out[2, :, :4]))
    assert torch.isfinite(out).all() and out[2, :, 4:].abs().sum() > 0


def test_full_mask_on_eager_and_sdpa_but_not_flash() -> None:
    q, k, v = _qkv(tq=5, tk=5)
    full = torch.rand(3, 1, 5, 5, generator=torch.Generator().manual_seed(1)) > 0.3
    ref = attention(q, k, v, causal=False, mask=full, backend="eager")
    torch.testing.assert_close(attention(q, k, v, causal=False, mask=full, backend="sdpa"), ref)
    torch.testing.assert_close(ref, _manual(q, k, v, full), atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError, match="flash"):
        attention(q, k, v, causal=False, mask=full, backend="flash")


def test_input_validation() -> None:
    q, k, v = _qkv(tq=5, tk=4)
    with pytest.raises(ValueError, match="Tq <= Tk"):
        attention(q, k, v, causal=True)
    q, k, v = _qkv(hq=3, hkv=2)
    with pytest.raises(ValueError, match="multiple"):
        attention(q, k, v)
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="causal"):
        attention(q, k, v, causal=False, window=2)
    with pytest.raises(ValueError, match="unknown attention backend"):
        attention(q, k, v, backend="magic")
    with pytest.raises(ValueError, match="key padding mask"):
        allowed_mask(3, 9, 9, causal=True, mask=torch.ones(2, 9, dtype=torch.bool), window=None, device="cpu")


def test_backend_switch_and_context_manager() -> None:
    assert get_attention_backend() == "sdpa"
    with attention_backend("eager"):
        assert get_attention_backend() == "eager"
        with attention_backend("flash"):
            assert get_attention_backend() == "flash"
        assert get_attention_backend() == "eager"
    assert get_attention_backend() == "sdpa"
    with pytest.raises(ValueError):
        set_attention_backend("nope")
    assert get_attention_backend() == "sdpa"


def test_flash_backend_runs_the_flash_kernel_on_cpu() -> None:
    q, k, v = _qkv(tq=16, tk=16)
    with torch.profiler.profile() as prof:
        attention(q, k, v, causal=True, window=4, backend="flash")
        attention(q, k, v, causal=True, mask=_pad_mask(3, 16), backend="flash")
    names = {e.key for e in prof.key_averages()}
    assert any("flash" in n for n in names), sorted(names)
    assert not any("math" in n or "efficient" in n for n in names), sorted(names)
