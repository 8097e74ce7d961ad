"""Every family: registry, configs, shapes, cache equivalence, padding, determinism, generation."""

from __future__ import annotations

import pytest
import torch

from models import list_families, load_family
from models.attention import attention_backend
from models.generate import generate, sample
from models.tokenizer import ByteTokenizer

FAMILIES = ["gemma", "gpt2", "llama", "mistral", "mixtral"]
REAL = {
    "llama": ("llama-2-7b", 6.74e9),
    "mistral": ("mistral-7b", 7.24e9),
    "gemma": ("gemma-2b", 2.51e9),
    "mixtral": ("mixtral-8x7b", 46.7e9),
    "gpt2": ("gpt2", 124.4e6),
}
TOK = ByteTokenizer()


@pytest.fixture(params=FAMILIES)
def fam(request):
    return load_family(request.param)


def test_registry_lists_exactly_the_family_files() -> None:
    assert list_families() == FAMILIES
    with pytest.raises(ValueError, match="known"):
        load_family("bert")


def test_real_configs_have_real_parameter_counts(fam) -> None:
    name, expected = REAL[fam.FAMILY]
    model = fam.build(name, device="meta")
    n = sum(p.numel() for p in model.parameters())
    assert abs(n - expected) / expected < 0.01, f"{name}: {n:,} parameters"
    assert all(p.device.type == "meta" for p in model.parameters())


def test_config_lookup(fam) -> None:
    assert fam.ModelArgs.from_name("tiny") == fam.ModelArgs.from_name(f"{fam.FAMILY}-tiny")
    assert isinstance(fam.Transformer.from_name("tiny"), fam.Transformer)
    with pytest.raises(KeyError, match="known: tiny"):
        fam.ModelArgs.from_name("enormous")


def test_tiny_forward_shape_dtype(fam) -> None:
    for dtype in (torch.float32, torch.bfloat16):
        model = fam.build("tiny", dtype=dtype)
        idx = torch.randint(0, 259, (2, 11))
        with torch.no_grad():
            out = model(idx)
        assert out.shape == (2, 11, model.config.vocab_size) and out.dtype == dtype
        assert torch.isfinite(out).all()


@pytest.mark.parametrize("static", [True, False], ids=["static", "dynamic"])
@pytest.mark.parametrize("backend", ["eager", "sdpa", "flash"])
def test_incremental_decode_matches_full_forward(fam, static, backend) -> None:
    model = fam.build("tiny")
    idx = torch.randint(0, 259, (2, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), attention_backend(backend):
        full = model(idx)
        model.setup_caches(2, 24, static=static)
        parts = [model(idx[:, :9], torch.arange(9))]
        parts += [model(idx[:, i : i + 1], torch.tensor([i])) for i in range(9, 20)]
        model.clear_caches()
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=1e-5)


def test_left_padding_gives_the_unpadded_result(fam) -> None:
    model = fam.build("tiny")
    ids, mask = TOK.batch_encode(["hello there, world", "hey"])
    with torch.no_grad():
        batch = model(ids, attention_mask=mask)
        alone = model(torch.tensor([TOK.encode("hey")]))
    n = alone.shape[1]
    torch.testing.assert_close(batch[1, -n:], alone[0], atol=1e-5, rtol=1e-5)


def test_generation_greedy_padded_and_cache_free_agree(fam) -> None:
    model = fam.build("tiny")
    ids, mask = TOK.batch_encode(["the cat sat", "a dog ran away fast"])
    a = generate(model, ids, 6, attention_mask=mask)
    b = generate(model, ids, 6, attention_mask=mask, use_cache=False)
    c = generate(model, ids, 6, attention_mask=mask, static_cache=False)
    assert a.shape == (2, ids.shape[1] + 6) and a.tolist() == b.tolist() == c.tolist()
    assert model.cache_state is None, "generate must drop the caches it allocated"


def test_build_is_seeded(fam) -> None:
    a, b, c = fam.build("tiny", seed=1), fam.build("tiny", seed=1), fam.build("tiny", seed=2)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)


def test_cache_limits_are_enforced(fam) -> None:
    model = fam.build("tiny")
    model.setup_caches(1, 8, static=False)
    with torch.no_grad():
        with pytest.raises(ValueError, match="max_seq_length|exceed"):
            model(torch.zeros(1, 9, dtype=torch.long))
        with pytest.raises(ValueError, match="batch"):
            model(torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="positions"):
        model.setup_caches(1, model.config.max_seq_len + 1)


def test_family_specifics() -> None:
    gemma, gpt2, mistral, mixtral = (
        load_family(n).build("tiny") for n in ("gemma", "gpt2", "mistral", "mixtral")
    )
    assert gemma.output.weight is gemma.tok_embeddings.weight
    assert gpt2.lm_head.weight is gpt2.wte.weight
    assert gemma.config.head_dim * gemma.config.n_heads != gemma.config.dim
    assert mistral.config.sliding_window == 8
    moe = mixtral.layers[0].feed_forward
    weights, ids = moe.route(torch.randn(5, mixtral.config.dim))
    assert ids.shape == (5, 2) and torch.allclose(weights.sum(-1), torch.ones(5))
    with pytest.raises(ValueError, match="learned positions"):
        gpt2(torch.zeros(1, gpt2.config.max_seq_len + 1, dtype=torch.long))


def test_sliding_window_changes_long_range_attention() -> None:
    mistral = load_family("mistral")
    model = mistral.build("tiny")
    idx = torch.randint(0, 259, (1, 24), generator=torch.Generator().manual_seed(3))
    other = idx.clone()
    other[0, 0] = (idx[0, 0] + 1) % 259
    with torch.no_grad():
        a, b = model(idx), model(other)
    # token 0 is outside every window of positions >= 2 * window - 1 (two layers deep)
    torch.testing.assert_close(a[0, 15:], b[0, 15:])
    assert not torch.allclose(a[0, 1], b[0, 1])


def test_sampling() -> None:
    logits = torch.tensor([[0.0, 5.0, 1.0, -2.0]])
    assert sample(logits).item() == 1
    g = torch.Generator().manual_seed(0)
    draws = {sample(logits, temperature=1.0, top_k=2, generator=g).item() for _ in range(50)}
    assert draws <= {1, 2} and 1 in draws


def test_compiled_static_decode_is_fullgraph_and_matches_eager() -> None:
    """torch.compile(fullgraph=True) traces prefill and decode (mixtral: the dense MoE path)."""
    model = load_family("mixtral").build("tiny")
    idx = torch.randint(0, 259, (2, 6), generator=torch.Generator().manual_seed(4))
    ref = generate(model, idx, 4)[:, 6:]

    def step(m, tokens, pos):
        return m(tokens, pos)[:, -1].argmax(-1, keepdim=True)

    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True, backend="eager")
    model.setup_caches(2, 16, static=True)
    with torch.no_grad():
        toks = [compiled(model, idx, torch.arange(6))]
        for pos in range(6, 9):
            toks.append(compiled(model, toks[-1], torch.tensor([pos])))
    model.clear_caches()
    assert torch.cat(toks, 1).tolist() == ref.tolist()


def test_moe_dense_path_equals_sparse_path() -> None:
    model = load_family("mixtral").build("tiny")
    moe = model.layers[0].feed_forward
    x = torch.randn(7, model.config.dim, generator=torch.Generator().manual_seed(5))
    weights, ids = moe.route(x)
    with torch.no_grad():
        torch.testing.assert_close(moe._dense(x, weights, ids), moe(x), atol=1e-6, rtol=1e-6)
