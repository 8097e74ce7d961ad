"""KVCache and the attention context: slots, growth, positions of padded rows, limits."""

from __future__ import annotations

import pytest
import torch

from models.attention import attention_backend
from models.kv_cache import CacheState, KVCache, make_context


def test_static_cache_writes_slots_in_place() -> None:
    cache = KVCache(2, 8, 1, 4, dtype=torch.float32)
    k = torch.ones(2, 1, 3, 4)
    kc, vc = cache.update(torch.tensor([2, 3, 4]), k, 2 * k)
    assert kc.shape == (2, 1, 8, 4) and kc.data_ptr() == cache.k_cache.data_ptr()
    assert kc[:, :, 2:5].eq(1).all() and kc[:, :, :2].eq(0).all() and vc[:, :, 2:5].eq(2).all()
    kc1, _ = cache.update(torch.tensor([0]), torch.full((1, 1, 1, 4), 5.0), torch.zeros(1, 1, 1, 4))
    assert kc1.shape[0] == 1 and cache.k_cache[0, 0, 0].eq(5).all()
    assert "k_cache" not in cache.state_dict()


def test_dynamic_cache_grows_and_checks_offsets() -> None:
    cache = KVCache(1, 6, 1, 2, dtype=torch.float32, static=False)
    k, _ = cache.update(torch.arange(3), torch.ones(1, 1, 3, 2), torch.ones(1, 1, 3, 2), start=0)
    assert k.shape[2] == 3
    k, _ = cache.update(torch.tensor([3]), torch.ones(1, 1, 1, 2), torch.ones(1, 1, 1, 2), start=3)
    assert k.shape[2] == 4
    with pytest.raises(ValueError, match="holds 4"):
        cache.update(torch.tensor([6]), torch.ones(1, 1, 1, 2), torch.ones(1, 1, 1, 2), start=6)
    with pytest.raises(ValueError, match="max_seq_length"):
        cache.update(torch.arange(4, 7), torch.ones(1, 1, 3, 2), torch.ones(1, 1, 3, 2), start=4)
    k, _ = cache.update(torch.arange(2), torch.ones(1, 1, 2, 2), torch.ones(1, 1, 2, 2), start=0)
    assert k.shape[2] == 2, "start 0 resets"


def test_positions_count_real_tokens_only() -> None:
    idx = torch.zeros(2, 5, dtype=torch.long)
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    ctx = make_context(None, idx, None, mask)
    assert ctx.pos_ids.tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]]
    for static in (True, False):
        state = CacheState(2, 8, static=static)
        ctx = make_context(state, idx, torch.arange(5), mask)
        assert ctx.pos_ids.tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]]
        ctx = make_context(state, idx[:, :1], torch.tensor([5]), None)
        assert ctx.pos_ids.tolist() == [[3], [5]]


def test_static_context_masks_unwritten_and_padded_slots() -> None:
    state = CacheState(1, 6, static=True)
    make_context(state, torch.zeros(1, 3, dtype=torch.long), torch.arange(3), torch.tensor([[0, 1, 1]]))
    ctx = make_context(state, torch.zeros(1, 1, dtype=torch.long), torch.tensor([3]), None, window=2)
    assert not ctx.causal and ctx.mask.shape == (1, 1, 1, 6)
    assert ctx.mask[0, 0, 0].tolist() == [False, False, True, True, False, False]
    with attention_backend("flash"):
        ctx = make_context(state, torch.zeros(1, 1, dtype=torch.long), torch.tensor([3]), None, window=2)
    assert ctx.kv_len == 4 and ctx.causal and ctx.mask.tolist() == [[False, True, True, True]]


def test_context_validation() -> None:
    with pytest.raises(ValueError, match="input_pos"):
        make_context(None, torch.zeros(1, 3, dtype=torch.long), torch.arange(2), None)
    with pytest.raises(ValueError, match="attention_mask"):
        make_context(None, torch.zeros(1, 3, dtype=torch.long), None, torch.ones(1, 2))
    state = CacheState(1, 4, static=False)
    with pytest.raises(ValueError, match="does not hold"):
        make_context(state, torch.zeros(1, 1, dtype=torch.long), torch.tensor([2]), None)
