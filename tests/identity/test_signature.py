"""The failure signature, exception type, skip category and output tail (harness/signature.py)."""

from __future__ import annotations

from harness.signature import (
    NOT_APPLICABLE,
    SKIPPED,
    TAIL_BYTES,
    exception_type,
    model_of_nodeid,
    normalise,
    signature,
    skip_category,
    tail,
)

# The same dtype bug seen on two machines: other temp dirs, addresses, tensor values, line numbers, uuids.
MACHINE_A = ("RuntimeError: expected scalar type BFloat16 but found Float: tensor([[0.1234, -1.5e-03],\n"
             " [2.0000, 3.0000]], dtype=torch.bfloat16) at 0x7f3a2b1c4d50 in "
             "/tmp/pytest-of-ci/pytest-12/test_forward_llama0/cache/f81d4fae-7dec-11d0-a765-00a0c91e6bf6.bin "
             "(/home/runner/work/zoo/zoo/models/attention.py line 42)")
MACHINE_B = ("RuntimeError: expected scalar type BFloat16 but found Float: tensor([0.5000, 0.2500, 9.0000, 1.0000],"
             " dtype=torch.bfloat16) at 0x55d1e2a3 in "
             "/var/folders/xy/T/pytest-of-mac/pytest-3/test_forward_llama1/cache/0b7e3f1c-1111-2222-3333-444455556666.bin"
             " (/Users/dev/src/zoo/models/attention.py line 57)")


def test_same_failure_on_different_machines_has_one_signature() -> None:
    assert normalise(MACHINE_A) == normalise(MACHINE_B)
    assert signature("RuntimeError", MACHINE_A) == signature("RuntimeError", MACHINE_B)
    assert len(signature("RuntimeError", MACHINE_A) or "") == 16


def test_model_names_are_normalised_out_but_not_inside_other_words() -> None:
    llama = "RuntimeError: expected scalar type BFloat16 in LlamaAttention.forward (llama_attention.py)"
    qwen = "RuntimeError: expected scalar type BFloat16 in Qwen2Attention.forward (qwen2_attention.py)"
    assert signature("RuntimeError", llama, "llama") == signature("RuntimeError", qwen, "qwen2")
    assert "optional" in normalise("opt: optional argument missing", "opt")
    assert normalise("OPTForCausalLM failed", "opt") == "<model>ForCausalLM failed"
    assert model_of_nodeid("tests/test_x.py::test_forward[llama]") == "llama"
    assert model_of_nodeid("tests/test_x.py::test_forward[1-2]") is None


def test_different_exceptions_or_messages_never_share_a_signature() -> None:
    base = signature("RuntimeError", "RuntimeError: expected scalar type BFloat16 but found Float")
    assert base != signature("ValueError", "ValueError: expected scalar type BFloat16 but found Float")
    assert base != signature("RuntimeError", "RuntimeError: expected scalar type Half but found Float")
    assert base != signature("RuntimeError", "RuntimeError: CUDA error: device-side assert triggered")
    assert base != signature(None, "expected scalar type BFloat16 but found Float")
    assert signature("TypeError", "TypeError: forward() got an unexpected keyword argument 'mask'") != \
        signature("TypeError", "TypeError: forward() got an unexpected keyword argument 'cache'")
    assert signature(None, None) is None


def test_exception_type_from_the_message() -> None:
    assert exception_type("torch.OutOfMemoryError: CUDA out of memory.") == "torch.OutOfMemoryError"
    assert exception_type("assert 1 == 2") == "AssertionError"
    assert exception_type("Failed: DID NOT RAISE") == "Failed"
    assert exception_type("some text: with a colon") is None
    assert exception_type("whatever", "pkg.CustomError") == "pkg.CustomError"


def test_skip_categories() -> None:
    not_applicable = ["could not import 'flash_attn': No module named 'flash_attn'", "Skipped: requires CUDA",
                      "condition: torch.cuda.device_count() < 2", "test is slow", "needs 2 GPUs",
                      "Skipped: only on linux", "set RUN_SLOW=1 to run", "not supported on this runner group"]
    # seen on an H100 with torch 2.11 (docs/GPU_RUNS.md §4): a missing capability of this torch, not a developer's skip
    assert skip_category("Skipped: this torch has no varlen FlashAttention entry point "
                         "(torch.nn.attention.varlen)") == NOT_APPLICABLE
    assert skip_category("Skipped: torch >= 2.13 needed for this path") == NOT_APPLICABLE
    explicit = ["broken, see #123", "Skipped: TODO fix after refactor", "flaky on CI", "", None]
    assert [skip_category(r) for r in not_applicable] == [NOT_APPLICABLE] * len(not_applicable)
    assert [skip_category(r) for r in explicit] == [SKIPPED] * len(explicit)
    assert skip_category("requires CUDA", xfail=True) == SKIPPED


def test_tail_keeps_the_end_within_the_bound() -> None:
    big = "x" * 5_000_000 + "THE END"
    kept = tail(big) or ""
    assert len(kept.encode("utf-8")) <= TAIL_BYTES and kept.endswith("THE END") and kept.startswith("[")
    wide = tail("é" * 10_000 + "\x00end") or ""
    assert len(wide.encode("utf-8")) <= TAIL_BYTES and wide.endswith("\\0end")
    assert tail("short") == "short" and tail("") is None
    assert len(normalise("a" * 5_000_000)) <= 1000  # a 5 MB message costs one bounded pass
