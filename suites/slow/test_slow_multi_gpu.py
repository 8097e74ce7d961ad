"""The model split across two GPUs (layers pipelined) gives the single-GPU result."""

from __future__ import annotations

import pytest
import torch

from models.generate import generate
from models.parallel import split_layers
from models.tokenizer import ByteTokenizer

pytestmark = [pytest.mark.slow, pytest.mark.multi_gpu]


@pytest.mark.parametrize("static", [True, False], ids=["static", "dynamic"])
def test_two_gpu_split_matches_one_gpu(make_model, static: bool) -> None:
    tok = ByteTokenizer()
    ids, mask = tok.batch_encode(["The quick brown fox", "hi"], device="cuda:0")
    model = make_model(torch.float32, device_=torch.device("cuda:0"))
    ref, ref_logits = generate(model, ids, 10, attention_mask=mask, static_cache=static, return_logits=True)
    split_layers(model, ["cuda:0", "cuda:1"])
    devices = {p.device for p in model.layers.parameters()}
    assert devices == {torch.device("cuda:0"), torch.device("cuda:1")}, devices
    out, logits = generate(model, ids, 10, attention_mask=mask, static_cache=static, return_logits=True)
    assert out.tolist() == ref.tolist()
    torch.testing.assert_close(logits, ref_logits, atol=1e-5, rtol=1e-5)
