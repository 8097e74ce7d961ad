"""Byte tokenizer, safetensors save / load, and splitting layers across devices."""

from __future__ import annotations

import pytest
import torch

from models import load_family
from models.generate import generate
from models.parallel import split_layers
from models.tokenizer import ByteTokenizer


def test_tokenizer_round_trip_and_specials() -> None:
    tok = ByteTokenizer()
    text = "héllo, wörld ✓"
    ids = tok.encode(text, bos=True, eos=True)
    assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id and max(ids) < tok.vocab_size
    assert tok.decode(ids) == text and tok.decode(torch.tensor(ids)) == text
    assert tok.decode([0xE2, 0x9C]) == "\ufffd"


def test_batch_encode_left_and_right() -> None:
    tok = ByteTokenizer()
    ids, mask = tok.batch_encode(["abc", "a"])
    assert ids.tolist()[1] == [tok.pad_id] * 2 + [tok.bos_id, 97] and mask.tolist() == [[1] * 4, [0, 0, 1, 1]]
    ids, mask = tok.batch_encode(["abc", "a"], left_pad=False, bos=False)
    assert ids.tolist()[1] == [97, tok.pad_id, tok.pad_id] and mask.tolist()[1] == [1, 0, 0]


@pytest.mark.parametrize("family", ["gemma", "llama"])
def test_safetensors_round_trip(tmp_path, family) -> None:
    pytest.importorskip("safetensors", reason="safetensors is not installed")
    from models import io

    model = load_family(family).build("tiny", dtype=torch.bfloat16, seed=5)
    path = io.save(model, tmp_path / "m.safetensors", metadata={"note": "x"})
    meta = io.read_metadata(path)
    assert meta["family"] == family and meta["note"] == "x"
    loaded = io.load(path)
    assert loaded.config == model.config and next(loaded.parameters()).dtype == torch.bfloat16
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    if family == "gemma":
        assert loaded.output.weight is loaded.tok_embeddings.weight
    with pytest.raises(RuntimeError):
        io.load_into(load_family("gpt2").build("tiny"), path)


def test_split_layers_keeps_results() -> None:
    model = load_family("mixtral").build("tiny")
    ids, mask = ByteTokenizer().batch_encode(["abc def", "x"])
    ref = generate(model, ids, 5, attention_mask=mask)
    split_layers(model, ["cpu", "cpu"])
    assert generate(model, ids, 5, attention_mask=mask).tolist() == ref.tolist()
    with pytest.raises(ValueError):
        split_layers(model, [])
