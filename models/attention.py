"""One attention function for the whole zoo, with switchable backends.

Backends:
  * ``eager``: explicit ``softmax(q k^T * scale) v`` (softmax in fp32), the numerical reference;
  * ``sdpa``:  ``torch.nn.functional.scaled_dot_product_attention``, any kernel PyTorch picks;
  * ``flash``: PyTorch's FlashAttention-2 kernel, forced with ``sdpa_kernel([FLASH_ATTENTION])``
    (or the flash op itself), so an unsupported input raises instead of silently falling back.
    Padded batches are unpadded (varlen flash where PyTorch offers it, else one call per sequence);
    sliding windows are built from two flash calls merged through their log-sum-exp.

Switch the backend without touching model code: ``set_attention_backend("flash")``, the
``attention_backend("eager")`` context manager, or env ``MODELS_ATTN_BACKEND`` at import.

Conventions: ``q`` is (B, Hq, Tq, D); ``k``/``v`` are (B, Hkv, Tk, D) with ``Hq % Hkv == 0`` (GQA:
query head ``h`` reads kv head ``h // (Hq // Hkv)``). ``causal`` is bottom-right aligned: query ``i``
sits at key position ``Tk - Tq + i`` (as in FlashAttention-2), so a decode step (Tq=1) sees every
key. ``window=W`` restricts a query at position ``p`` to keys in ``(p - W, p]``. ``mask`` is boolean,
True = may attend: either a (B, Tk) key-padding mask (every backend; padding must be contiguous,
left or right; a query whose own position is padding reads nothing) or any mask broadcastable to
(B, Hq, Tq, Tk) (eager and sdpa only). Query rows with no key to attend output zeros in every backend.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
import os
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

BACKENDS = ("eager", "sdpa", "flash")
_state: dict = {"backend": os.environ.get("MODELS_ATTN_BACKEND", "sdpa"), "flash_varlen": True}
if _state["backend"] not in BACKENDS:
    raise ValueError(f"MODELS_ATTN_BACKEND={_state['backend']!r}; expected one of {BACKENDS}")


def set_flash_varlen(enabled: bool) -> None:
    """Let padded flash batches use PyTorch's varlen kernel (default) or one flash call per sequence."""
    _state["flash_varlen"] = bool(enabled)


def set_attention_backend(name: str) -> None:
    """Select the process-wide default backend: "eager", "sdpa" or "flash"."""
    if name not in BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; expected one of {BACKENDS}")
    _state["backend"] = name


def get_attention_backend() -> str:
    """The current default backend."""
    return _state["backend"]


@contextlib.contextmanager
def attention_backend(name: str) -> Iterator[None]:
    """Temporarily switch the default backend."""
    old = get_attention_backend()
    set_attention_backend(name)
    try:
        yield
    finally:
        set_attention_backend(old)


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = True,
    mask: torch.Tensor | None = None,
    window: int | None = None,
    backend: str | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """Attention of ``q`` over ``k``/``v``; returns (B, Hq, Tq, D) in ``q``'s dtype."""
    name = backend or get_attention_backend()
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError("q, k, v must be 4-D (batch, heads, seq, head_dim)")
    if q.shape[1] % k.shape[1]:
        raise ValueError(f"{q.shape[1]} query heads are not a multiple of {k.shape[1]} kv heads")
    if causal and q.shape[2] > k.shape[2]:
        raise ValueError(f"causal attention needs Tq <= Tk, got Tq={q.shape[2]} Tk={k.shape[2]}")
    if window is not None and not causal:
        raise ValueError("a sliding window needs causal=True")
    if window is not None and window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    scale = scale if scale is not None else 1.0 / math.sqrt(q.shape[-1])
    if name == "eager":
        return _eager(q, k, v, causal, mask, window, scale)
    if name == "sdpa":
        return _sdpa(q, k, v, causal, mask, window, scale)
    if name == "flash":
        return _flash(q, k, v, causal, mask, window, scale)
    raise ValueError(f"unknown attention backend {name!r}; expected one of {BACKENDS}")


def allowed_mask(
    batch: int,
    tq: int,
    tk: int,
    *,
    causal: bool,
    mask: torch.Tensor | None,
    window: int | None,
    device: torch.device,
) -> torch.Tensor | None:
    """Boolean (B|1, 1, Tq, Tk) mask of the keys each query may read, or None for "all"."""
    allowed = None
    if causal:
        qpos = torch.arange(tk - tq, tk, device=device)[:, None]
        kpos = torch.arange(tk, device=device)[None, :]
        allowed = kpos <= qpos
        if window is not None:
            allowed = allowed & (kpos > qpos - window)
        allowed = allowed[None, None]
    if mask is not None:
        m = mask.to(device=device, dtype=torch.bool)
        if m.dim() == 2:
            if m.shape != (batch, tk):
                raise ValueError(f"key padding mask must be (B, Tk)=({batch}, {tk}), got {tuple(m.shape)}")
            m = m[:, None, None, :] & m[:, None, tk - tq :, None]  # padded queries read nothing
        allowed = m if allowed is None else allowed & m
    return allowed


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """Expand (B, Hkv, T, D) kv heads to (B, Hkv * n_rep, T, D)."""
    return x if n_rep == 1 else x.repeat_interleave(n_rep, dim=1)


def _eager(q, k, v, causal, mask, window, scale) -> torch.Tensor:
    n_rep = q.shape[1] // k.shape[1]
    k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)
    scores = torch.matmul(q, k.transpose(-1, -2)).float() * scale
    allowed = allowed_mask(
        q.shape[0], q.shape[2], k.shape[2], causal=causal, mask=mask, window=window, device=q.device
    )
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    if allowed is not None:
        probs = torch.nan_to_num(probs, nan=0.0)  # rows with no key at all
    return torch.matmul(probs.to(v.dtype), v)


def _sdpa(q, k, v, causal, mask, window, scale) -> torch.Tensor:
    tq, tk = q.shape[2], k.shape[2]
    gqa = q.shape[1] != k.shape[1]
    if mask is None and window is None and (not causal or tq == 1 or tq == tk):
        is_causal = causal and tq > 1
        return F.scaled_dot_product_attention(q, k, v, is_causal=is_causal, scale=scale, enable_gqa=gqa)
    allowed = allowed_mask(q.shape[0], tq, tk, causal=causal, mask=mask, window=window, device=q.device)
    row_ok = allowed.any(dim=-1, keepdim=True)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed | ~row_ok, scale=scale, enable_gqa=gqa)
    return out.masked_fill(~row_ok, 0.0)


# ---------------------------------------------------------------- flash


def _flash(q, k, v, causal, mask, window, scale) -> torch.Tensor:
    if mask is not None:
        if mask.dim() != 2:
            raise ValueError("the flash backend takes only a (B, Tk) key padding mask, not a full mask")
        if bool(mask.all()):
            mask = None
    if mask is None:
        return _flash_dense(q, k, v, causal, window, scale)
    if q.is_cuda and _state["flash_varlen"] and _varlen_fn() is not None:
        return _flash_varlen(q, k, v, causal, mask.bool(), window, scale)
    return _flash_per_sequence(q, k, v, causal, mask.bool(), window, scale)


def _fa(q, k, v, is_causal: bool, scale: float) -> torch.Tensor:
    """One forced FlashAttention-2 call (square when causal); raises if flash cannot run."""
    n_rep = q.shape[1] // k.shape[1]
    k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)  # SDPA's GQA flag is not on every flash build
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        return F.scaled_dot_product_attention(q, k, v, is_causal=is_causal, scale=scale)


def _fa_lse(q, k, v, is_causal: bool, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Flash op returning (out, logsumexp (B, H, Tq) fp32)."""
    n_rep = q.shape[1] // k.shape[1]
    k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)
    if q.is_cuda:
        res = torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, 0.0, is_causal, False, scale=scale)
    else:
        res = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, is_causal, scale=scale)
    return res[0], res[1]


def _flash_dense(q, k, v, causal, window, scale) -> torch.Tensor:
    tq, tk = q.shape[2], k.shape[2]
    if not causal:
        return _fa(q, k, v, False, scale)
    if window is not None and window >= tk:
        window = None
    if tq == 1:
        if window is not None:
            k, v = k[:, :, -window:], v[:, :, -window:]
        return _fa(q, k, v, False, scale)
    if tq < tk:  # bottom-right causal: pad queries in front, drop their outputs
        pad = q.new_zeros(q.shape[0], q.shape[1], tk - tq, q.shape[3])
        return _flash_dense(torch.cat([pad, q], dim=2), k, v, causal, window, scale)[:, :, -tq:]
    if window is None:
        return _fa(q, k, v, True, scale)
    return _flash_window(q, k, v, window, scale)


def _flash_window(q, k, v, w: int, scale) -> torch.Tensor:
    """Causal sliding window (Tq == Tk) from flash calls on blocks of ``w`` queries.

    Block ``b`` of queries reads its own block causally (one flash call) and the previous block's
    keys strictly above the diagonal; flipping both makes that a causal (w-1)-square (second call).
    The two partial results are merged with their log-sum-exps.
    """
    b, h, t, d = q.shape
    hk = k.shape[1]
    nb = -(-t // w)
    pad = nb * w - t

    def blocks(x: torch.Tensor) -> torch.Tensor:  # (B, H, T, D) -> (B, nb, H, w, D)
        x = F.pad(x, (0, 0, 0, pad))
        return x.reshape(x.shape[0], x.shape[1], nb, w, d).transpose(1, 2)

    qb, kb, vb = blocks(q), blocks(k), blocks(v)
    flat = (b * nb, -1, w, d)
    o1, l1 = _fa_lse(qb.reshape(b * nb, h, w, d), kb.reshape(flat), vb.reshape(flat), True, scale)
    if w == 1:
        out = o1
    else:
        kp = torch.cat([torch.zeros_like(kb[:, :1]), kb[:, :-1]], dim=1).flip(-2)[..., : w - 1, :]
        vp = torch.cat([torch.zeros_like(vb[:, :1]), vb[:, :-1]], dim=1).flip(-2)[..., : w - 1, :]
        qf = qb.flip(-2)[..., 1:, :]
        o2, l2 = _fa_lse(
            qf.reshape(b * nb, h, w - 1, d),
            kp.reshape(b * nb, hk, w - 1, d),
            vp.reshape(b * nb, hk, w - 1, d),
            True,
            scale,
        )
        o2 = torch.cat([o2.new_zeros(b * nb, h, 1, d), o2], dim=2).flip(-2)
        l2 = torch.cat([l2.new_full((b * nb, h, 1), float("-inf")), l2], dim=2).flip(-1)
        l2 = l2.reshape(b, nb, h, w)
        l2[:, 0] = float("-inf")  # block 0 has no previous block
        l2 = l2.reshape(b * nb, h, w)
        m = torch.maximum(l1, l2)
        w1, w2 = torch.exp(l1 - m), torch.exp(l2 - m)
        out = (o1.float() * w1[..., None] + o2.float() * w2[..., None]) / (w1 + w2)[..., None]
        out = out.to(q.dtype)
    out = out.reshape(b, nb, h, w, d).transpose(1, 2).reshape(b, h, nb * w, d)
    return out[:, :, :t]


def _flash_per_sequence(q, k, v, causal, mask, window, scale) -> torch.Tensor:
    """Unpad each sequence and run dense flash on it (real queries are the last real keys)."""
    tq, tk = q.shape[2], k.shape[2]
    qmask = mask[:, tk - tq :]
    out = q.new_zeros(q.shape)
    for i in range(q.shape[0]):
        qm, km = qmask[i], mask[i]
        if not bool(qm.any()):
            continue
        res = _flash_dense(
            q[i : i + 1][:, :, qm], k[i : i + 1][:, :, km], v[i : i + 1][:, :, km], causal, window, scale
        )
        out[i, :, qm] = res[0]
    return out


@functools.lru_cache(maxsize=1)
def _varlen_fn():
    """PyTorch's varlen FlashAttention entry point, if this torch has one with windows and GQA."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    params = inspect.signature(varlen_attn).parameters
    return varlen_attn if {"window_size", "enable_gqa"} <= set(params) else None


def _flash_varlen(q, k, v, causal, mask, window, scale) -> torch.Tensor:
    """Unpad the whole batch into one packed sequence and call varlen flash once."""
    b, h, tq, d = q.shape
    tk = k.shape[2]
    qmask = mask[:, tk - tq :]
    qlens, klens = qmask.sum(-1), mask.sum(-1)
    cu_q = F.pad(qlens.cumsum(0), (1, 0)).to(torch.int32)
    cu_k = F.pad(klens.cumsum(0), (1, 0)).to(torch.int32)
    qp = q.transpose(1, 2)[qmask]  # (total_q, H, D)
    kp, vp = k.transpose(1, 2)[mask], v.transpose(1, 2)[mask]
    left = -1 if window is None else window - 1  # FA2 counts the keys left of the diagonal
    kwargs = dict(scale=scale, window_size=(left, 0) if causal else (-1, -1), enable_gqa=h != k.shape[1])
    if "is_causal" in inspect.signature(_varlen_fn()).parameters:
        kwargs["is_causal"] = causal
    out = _varlen_fn()(qp, kp, vp, cu_q, cu_k, int(qlens.max()), int(klens.max()), **kwargs)
    full = q.new_zeros(b, tq, h, d)
    full[qmask] = out
    return full.transpose(1, 2)


def flash_varlen_available() -> bool:
    """True when this torch has a varlen FlashAttention entry point with windows and GQA."""
    return _varlen_fn() is not None
