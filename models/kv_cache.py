"""KV cache (static or dynamic) and the per-forward attention context shared by all families.

A model owns one :class:`CacheState` (which slots hold real tokens, how far a dynamic cache got)
and one :class:`KVCache` per layer. Each forward builds an :class:`AttnContext` once with
:func:`make_context`; every layer hands it its q/k/v and gets the attention output back.

* static cache (``static=True``): fixed (B, H, S, D) buffers written at ``input_pos``; attention
  runs over all S slots with a (B, 1, T, S) boolean mask built from tensors only, so a decode step
  compiles once with ``torch.compile``. Under the flash backend (no masks in FA2) the keys are cut
  to the filled length instead.
* dynamic cache (``static=False``): keys grow by concatenation; attention sees exactly the keys so far.

Positions (RoPE or learned) count real tokens only, so a left-padded row gets the same positions
as the same prompt run alone.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from models.attention import attention, get_attention_backend


class KVCache(nn.Module):
    """Keys and values of one attention layer."""

    def __init__(
        self,
        max_batch_size: int,
        max_seq_length: int,
        n_kv_heads: int,
        head_dim: int,
        *,
        dtype: torch.dtype,
        device: torch.device | str | None = None,
        static: bool = True,
    ) -> None:
        super().__init__()
        self.static = static
        self.max_batch_size = max_batch_size
        self.max_seq_length = max_seq_length
        shape = (max_batch_size, n_kv_heads, max_seq_length, head_dim)
        if static:
            self.register_buffer("k_cache", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
            self.register_buffer("v_cache", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        else:
            self.k_cache: torch.Tensor | None = None
            self.v_cache: torch.Tensor | None = None

    def update(
        self, input_pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor, start: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k/v (B, H, T, D) at ``input_pos``; return all cached keys and values."""
        b = k.shape[0]
        if b > self.max_batch_size:
            raise ValueError(f"batch {b} exceeds the cache's max_batch_size {self.max_batch_size}")
        if self.static:
            kc, vc = self.k_cache[:b], self.v_cache[:b]
            kc.index_copy_(2, input_pos, k.to(kc.dtype))
            vc.index_copy_(2, input_pos, v.to(vc.dtype))
            return kc, vc
        if start is None:
            raise ValueError("a dynamic cache needs the start offset of the new tokens")
        if start == 0 or self.k_cache is None:
            if start != 0:
                raise ValueError(f"dynamic cache is empty but the new tokens start at {start}")
            self.k_cache, self.v_cache = k, v
        else:
            if start != self.k_cache.shape[2]:
                raise ValueError(
                    f"dynamic cache holds {self.k_cache.shape[2]} tokens, new ones start at {start}"
                )
            self.k_cache = torch.cat([self.k_cache, k], dim=2)
            self.v_cache = torch.cat([self.v_cache, v], dim=2)
        if self.k_cache.shape[2] > self.max_seq_length:
            raise ValueError(f"dynamic cache grew past max_seq_length {self.max_seq_length}")
        return self.k_cache, self.v_cache


class CacheState:
    """Model-wide cache bookkeeping: which slots hold real (non-padding) tokens."""

    def __init__(
        self,
        max_batch_size: int,
        max_seq_length: int,
        *,
        static: bool,
        device: torch.device | str | None = None,
    ) -> None:
        self.static = static
        self.max_batch_size = max_batch_size
        self.max_seq_length = max_seq_length
        self.valid: torch.Tensor | None = (
            torch.zeros(max_batch_size, max_seq_length, dtype=torch.bool, device=device) if static else None
        )
        self.padded = False  # dynamic only: was any slot padding?

    def to(self, device: torch.device | str) -> CacheState:
        if self.valid is not None:
            self.valid = self.valid.to(device)
        return self


@dataclass
class AttnContext:
    """What every layer of one forward needs to attend (built once by :func:`make_context`)."""

    pos_ids: torch.Tensor  # (B|1, T) token positions for RoPE / learned position embeddings
    input_pos: torch.Tensor  # (T,) cache slots written by this forward
    causal: bool
    mask: torch.Tensor | None  # (B, Tk) key padding mask, or (B, 1, T, S) full mask
    window: int | None
    kv_len: int | None = None  # cut cached keys to this many slots
    start: int | None = None  # dynamic cache: offset of the new tokens

    def attend(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        kv_cache: KVCache | None,
        scale: float | None = None,
    ) -> torch.Tensor:
        """Update ``kv_cache`` with k/v (if any) and attend q over everything cached."""
        if kv_cache is not None:
            k, v = kv_cache.update(self.input_pos, k, v, self.start)
            if self.kv_len is not None:
                k, v = k[:, :, : self.kv_len], v[:, :, : self.kv_len]
        return attention(q, k, v, causal=self.causal, mask=self.mask, window=self.window, scale=scale)

    def to(self, device: torch.device | str) -> AttnContext:
        """A copy with its tensors on ``device`` (for models split across devices)."""
        return replace(
            self,
            pos_ids=self.pos_ids.to(device),
            input_pos=self.input_pos.to(device),
            mask=None if self.mask is None else self.mask.to(device),
        )


def _positions(valid: torch.Tensor) -> torch.Tensor:
    return (valid.long().cumsum(-1) - 1).clamp(min=0)


def make_context(
    state: CacheState | None,
    idx: torch.Tensor,
    input_pos: torch.Tensor | None,
    attention_mask: torch.Tensor | None,
    window: int | None = None,
) -> AttnContext:
    """Build the attention context of one forward over tokens ``idx`` (B, T).

    ``input_pos`` (T,) are the cache slots of the new tokens (default ``0..T-1``).
    ``attention_mask`` (1 = real token) covers either the new tokens (B, T) or everything so far
    (B, past + T); only its last T columns are read, earlier ones come from the cache.
    """
    b, t = idx.shape
    device = idx.device
    if input_pos is None:
        input_pos = torch.arange(t, device=device)
    input_pos = input_pos.to(device=device, dtype=torch.long).reshape(-1)
    if input_pos.numel() != t:
        raise ValueError(f"input_pos has {input_pos.numel()} entries for {t} tokens")
    chunk = None
    if attention_mask is not None:
        if attention_mask.dim() != 2 or attention_mask.shape[0] != b or attention_mask.shape[1] < t:
            raise ValueError(
                f"attention_mask must be (B, >=T) = ({b}, >={t}), got {tuple(attention_mask.shape)}"
            )
        chunk = attention_mask[:, -t:].to(device=device, dtype=torch.bool)

    if state is None:  # no cache: the keys are exactly the new tokens
        pos_ids = input_pos[None] if chunk is None else _positions(chunk) + input_pos[:1]
        return AttnContext(pos_ids, input_pos, True, chunk, window)

    if b > state.max_batch_size:
        raise ValueError(f"batch {b} exceeds the cache's max_batch_size {state.max_batch_size}")
    if state.static:
        valid = state.valid[:b]
        valid.index_copy_(
            1, input_pos, chunk if chunk is not None else torch.ones(b, t, dtype=torch.bool, device=device)
        )
        pos_ids = _positions(valid).index_select(1, input_pos)
        if get_attention_backend() == "flash":  # FA2 takes no masks: cut keys to the filled length
            kv_len = int(input_pos.max()) + 1
            return AttnContext(pos_ids, input_pos, True, valid[:, :kv_len], window, kv_len=kv_len)
        slots = torch.arange(state.max_seq_length, device=device)[None, :]
        allowed = slots <= input_pos[:, None]
        if window is not None:
            allowed = allowed & (slots > input_pos[:, None] - window)
        mask = (
            allowed[None, None] & valid[:, None, None, :] & valid.index_select(1, input_pos)[:, None, :, None]
        )
        return AttnContext(pos_ids, input_pos, False, mask, None)

    start = int(input_pos[0])
    if start + t > state.max_seq_length:
        raise ValueError(
            f"positions up to {start + t} exceed the cache's max_seq_length {state.max_seq_length}"
        )
    new = chunk if chunk is not None else torch.ones(b, t, dtype=torch.bool, device=device)
    if start == 0:
        state.valid, state.padded = new, False
    elif state.valid is None or state.valid.shape != (b, start):
        raise ValueError(f"dynamic cache does not hold {start} tokens for batch {b}")
    else:
        state.valid = torch.cat([state.valid, new], dim=1)
    if chunk is not None and not bool(chunk.all()):
        state.padded = True
    if state.padded:
        pos_ids = _positions(state.valid)[:, start:]
        mask = state.valid
    else:
        pos_ids, mask = input_pos[None], None
    return AttnContext(pos_ids, input_pos, True, mask, window, start=start)
