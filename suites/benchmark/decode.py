"""Greedy prefill / decode steps and the decode loop the suite times, eager or compiled."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .zoo import Settings

__all__ = ["prefill_step", "decode_step", "Decoder", "cache_tensors"]


def prefill_step(model: nn.Module, idx: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
    """Prompt through the model (filling the cache); greedy next token (B, 1)."""
    return model(idx, input_pos)[:, -1].argmax(dim=-1, keepdim=True)


def decode_step(model: nn.Module, tok: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
    """One cached decode step of token (B, 1) at slot ``input_pos`` (1,); greedy next token."""
    return model(tok, input_pos)[:, -1].argmax(dim=-1, keepdim=True)


class Decoder:
    """Prefill + decode loop over persistent device buffers: no host sync, no per-step H2D copy.

    ``compile()`` swaps in ``torch.compile``d steps (decode with ``mode="reduce-overhead"``,
    i.e. one CUDA graph per step, on CUDA + inductor); the loop itself is the same eager or
    compiled, so the two are timed alike.
    """

    def __init__(self, model: nn.Module, settings: Settings, batch: int, prompt_len: int, max_tokens: int):
        dev = next(model.parameters()).device
        self.model, self.settings = model, settings
        self.prompt_pos = torch.arange(prompt_len, device=dev)
        self.prompt_len = prompt_len
        self.cur = torch.zeros(batch, 1, dtype=torch.long, device=dev)
        self.pos = torch.zeros(1, dtype=torch.long, device=dev)
        self.out = torch.zeros(batch, max_tokens, dtype=torch.long, device=dev)
        self.n = 0
        self.fullgraph = True
        self.prefill_fn: Any = prefill_step
        self.decode_fn: Any = decode_step
        self.cudagraphs = False

    def compile(self, fullgraph: bool = True) -> None:
        s = self.settings
        self.cudagraphs = s.cudagraphs
        mode = "reduce-overhead" if self.cudagraphs else None
        if self.cudagraphs:
            for t in (self.prompt_pos, self.cur, self.pos, *cache_tensors(self.model)):
                torch._dynamo.mark_static_address(t)
        self.fullgraph = fullgraph
        self.decode_fn = torch.compile(decode_step, mode=mode, fullgraph=fullgraph, backend=s.compile_backend)
        self.prefill_fn = (
            torch.compile(
                prefill_step, mode=mode, fullgraph=fullgraph, dynamic=False, backend=s.compile_backend
            )
            if s.compile_prefill
            else prefill_step
        )

    def _mark(self) -> None:
        if self.cudagraphs:
            torch.compiler.cudagraph_mark_step_begin()

    def prefill(self, prompt: torch.Tensor) -> torch.Tensor:
        """First generated token (B, 1); also starts the decode state after the prompt."""
        self._mark()
        tok = self.prefill_fn(self.model, prompt, self.prompt_pos)
        self.out[:, :1].copy_(tok)
        self.cur.copy_(tok)
        self.pos.fill_(self.prompt_len)
        self.n = 1
        return self.out[:, :1]

    def step(self) -> None:
        """Decode one more token (queued on the device, nothing waits)."""
        self._mark()
        nxt = self.decode_fn(self.model, self.cur, self.pos)
        self.out[:, self.n : self.n + 1].copy_(nxt)
        self.cur.copy_(nxt)
        self.pos.add_(1)
        self.n += 1

    def generate(self, prompt: torch.Tensor, new_tokens: int) -> torch.Tensor:
        self.prefill(prompt)
        for _ in range(new_tokens - 1):
            self.step()
        return self.tokens()

    def tokens(self) -> torch.Tensor:
        return self.out[:, : self.n]


def cache_tensors(model: nn.Module) -> list[torch.Tensor]:
    """KV buffers and cache bookkeeping tensors (mutated by every step: static addresses)."""
    out = [
        t
        for m in model.modules()
        for t in (getattr(m, "k_cache", None), getattr(m, "v_cache", None))
        if isinstance(t, torch.Tensor)
    ]
    state = getattr(model, "cache_state", None)
    out += [v for v in vars(state).values() if isinstance(v, torch.Tensor)] if state is not None else []
    return out
