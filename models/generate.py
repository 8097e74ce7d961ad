"""Greedy and seeded-sampling generation over any zoo model (prefill + one token per step)."""

from __future__ import annotations

import torch
from torch import nn


def sample(
    logits: torch.Tensor,
    temperature: float = 0.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Next token ids (B, 1) from last-position logits (B, V): argmax if ``temperature == 0``."""
    logits = logits.float()
    if temperature <= 0.0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator)


@torch.no_grad()
def prefill(
    model: nn.Module,
    idx: torch.Tensor,
    input_pos: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Run the prompt (B, T) through the model (filling its cache); last-position logits (B, V)."""
    return model(idx, input_pos, attention_mask)[:, -1]


@torch.no_grad()
def decode_one_token(model: nn.Module, cur_token: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
    """One cached decode step: token (B, 1) at slot ``input_pos`` (1,); logits (B, V)."""
    return model(cur_token, input_pos)[:, -1]


def _cache_fits(model: nn.Module, batch: int, length: int, static: bool) -> bool:
    state = getattr(model, "cache_state", None)
    return (
        state is not None
        and state.static == static
        and state.max_batch_size >= batch
        and state.max_seq_length >= length
    )


@torch.no_grad()
def generate(
    model: nn.Module,
    prompt_ids: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    seed: int | None = None,
    attention_mask: torch.Tensor | None = None,
    *,
    use_cache: bool = True,
    static_cache: bool = True,
    return_logits: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Prompt plus ``max_new_tokens`` generated ids, (B, T + N).

    ``prompt_ids`` is (T,) or (B, T); left-pad batches and pass ``attention_mask`` (B, T), 1 = real.
    ``temperature == 0`` is greedy; otherwise sampling (optionally top-k) from a generator seeded
    with ``seed``. ``use_cache=False`` recomputes the whole sequence every step (the reference for
    the cache). With ``return_logits`` also returns the logits of every generated step (B, N, V).
    Caches the call had to allocate are dropped again at the end.
    """
    if prompt_ids.dim() == 1:
        prompt_ids = prompt_ids[None]
    b, t = prompt_ids.shape
    device = prompt_ids.device
    generator = torch.Generator(device=device).manual_seed(seed) if seed is not None else None
    tokens, steps = prompt_ids, []
    mask = None if attention_mask is None else attention_mask.to(device=device, dtype=torch.long)
    allocated = False
    if use_cache and not _cache_fits(model, b, t + max_new_tokens, static_cache):
        model.setup_caches(b, t + max_new_tokens, static=static_cache)
        allocated = True
    elif not use_cache and getattr(model, "cache_state", None) is not None:
        raise ValueError("use_cache=False needs a model without caches (call model.clear_caches())")
    try:
        for step in range(max_new_tokens):
            if not use_cache:
                logits = model(tokens, None, mask)[:, -1]
            elif step == 0:
                logits = prefill(model, prompt_ids, torch.arange(t, device=device), mask)
            else:
                logits = decode_one_token(model, tokens[:, -1:], torch.tensor([t + step - 1], device=device))
            nxt = sample(logits, temperature, top_k, generator)
            steps.append(logits.float())
            tokens = torch.cat([tokens, nxt], dim=1)
            if mask is not None:
                mask = torch.cat([mask, mask.new_ones(b, 1)], dim=1)
    finally:
        if allocated:
            model.clear_caches()
    if return_logits:
        empty = torch.empty(b, 0, 0, device=device)
        return tokens, torch.stack(steps, dim=1) if steps else empty
    return tokens
