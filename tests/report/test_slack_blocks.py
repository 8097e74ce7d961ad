"""Block Kit of the Slack report: golden JSON for a realistic run, escaping, Slack's limits, mentions."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from harness_bisect.flaky import Flaky

from harness.report.blocks import MAX_BLOCKS, Links, Mentions, build_report, escape, iter_texts
from harness.report.data import (
    CulpritInfo,
    FailureItem,
    ModelRow,
    PerfAlertItem,
    ReportData,
)

GOLDEN = Path(__file__).parent / "golden" / "slack_report.json"
REPO = "https://github.com/acme/models"
LINKS = Links(REPO, f"{REPO}/actions/runs/9001", "https://grafana.example/d/harness-ci")
EVIL = "<!channel> & <https://evil.example|click>"


def realistic() -> ReportData:
    """A nightly run on two runner groups: new failures with culprits, a flake, old failures, a perf alert."""
    ada = CulpritInfo("1f3c2d9e8b7a6c5d4e3f2a1b0c9d8e7f6a5b4c3d", "Ada Lovelace", "ada@example.com",
                      f"Speed up generate {EVIL}", 4242)
    bob = CulpritInfo("9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b", "Bob", "1234+bobdev@users.noreply.github.com",
                      "Refactor rotary embeddings", None)
    eve = CulpritInfo("0123456789abcdef0123456789abcdef01234567", "Eve Unmapped", "eve@example.org",
                      "Bump torch", 77)
    sg, mg = "single-gpu", "multi-gpu"
    return ReportData(
        run_id=812, run_ids=[812, 813], workflow="Nightly CI", event="schedule", branch="main",
        repo=REPO, commit_sha="c0ffee0123456789c0ffee0123456789c0ffee01", commit_subject="Merge #4242",
        runner_groups=[sg, mg], gpu_name="NVIDIA A10G", gpu_count=2, status="completed",
        totals={"passed": 1520, "failed": 9, "error": 1, "crashed": 1, "timeout": 1, "skipped": 230, "xfail": 4},
        wall_time_s=3725.0, baseline_run_id=790,
        models=[ModelRow("llama", {sg: 4, mg: 2}), ModelRow("mistral", {sg: 3}), ModelRow("gemma", {sg: 1, mg: 1}),
                ModelRow("qwen2", {sg: 1})],
        failing=[
            # One dtype bug in the shared attention, seen by every family: one signature, one report line.
            *[FailureItem(f"tests/models/{m}/test_modeling_{m}.py::test_forward_bf16", m, "slow", "failed",
                          f"RuntimeError: expected scalar type BFloat16 but found Float: tensor([{v}]) at {a} in "
                          f"{m.capitalize()}Attention", sg, ada, "new", "RuntimeError", "3a332bad74b33102")
              for m, v, a in (("llama", "0.1250, -1.5000", "0x7f3a2b1c4d50"), ("mistral", "2.0000", "0x55d1e2a3"),
                              ("gemma", "0.5000, 0.2500, 9.0000", "0x7f00aa10"), ("qwen2", "-3.1400", "0x7fee0040"))],
            FailureItem("tests/models/llama/test_modeling_llama.py::LlamaIntegrationTest::test_generate[<!here>]",
                        "llama", "slow", "failed", f"AssertionError: {EVIL}", sg, ada),
            FailureItem("tests/models/llama/test_modeling_llama.py::LlamaIntegrationTest::test_tp_generate",
                        "llama", "slow", "failed", "RuntimeError: NCCL error", mg, ada),
            FailureItem("tests/models/mistral/test_modeling_mistral.py::test_rope_scaling", "mistral",
                        "slow", "error", "ValueError: rope_theta must be > 0", sg, bob),
            FailureItem("tests/models/gemma/test_modeling_gemma.py::test_fa2_padding", "gemma", "fa2",
                        "crashed", "worker 'gw1' crashed while running", mg, eve),
            FailureItem("tests/models/llama/test_modeling_llama.py::test_sdpa_equivalence", "llama", "slow",
                        "timeout", "Timeout (>600.0s) from pytest-timeout", sg, None),
            FailureItem("tests/models/llama/test_modeling_llama.py::test_compile_static_cache", "llama", "slow",
                        "failed", "torch._dynamo.exc.Unsupported: data-dependent branch", mg, None, "still"),
            FailureItem("tests/models/llama/test_modeling_llama.py::test_batched_beam_search", "llama", "slow",
                        "failed", "AssertionError: beams differ", sg, None, "flaky"),
            FailureItem("tests/models/mistral/test_modeling_mistral.py::test_sliding_window", "mistral", "slow",
                        "failed", "AssertionError: window", sg, None, "flaky"),
        ],
        fixed=2,
        flaky=[Flaky("tests/models/llama/test_modeling_llama.py::test_batched_beam_search", "cuda:0", 3, 10),
               Flaky("tests/models/mistral/test_modeling_mistral.py::test_sliding_window", "cuda:1", 1, 20)],
        perf_alerts=[PerfAlertItem("time_to_first_token_secs", "llama", "NVIDIA A10G", "b" * 40, "c0ffee0" + "1" * 33,
                                   0.512, 0.571, 0.115, 2.1e-9, "regression"),
                     PerfAlertItem("roofline.decode_efficiency", "llama", "NVIDIA A10G", "b" * 40,
                                   "c0ffee0" + "1" * 33, 0.41, 0.37, -0.097, 4.0e-6, "regression")],
    )


MENTIONS = Mentions({"ada@example.com": "U0ADA", "bobdev": "U0BOB"})


def assert_within_slack_limits(payload: dict) -> None:
    """Slack's limits on every message of a payload: 50 blocks, 3000 characters a section text,
    150 a header, 2000 a field."""
    for message in [payload, *payload["thread_replies"]]:
        assert len(message["blocks"]) <= MAX_BLOCKS
        for block in message["blocks"]:
            if block["type"] == "header":
                assert len(block["text"]["text"]) <= 150
            elif "text" in block:
                assert len(block["text"]["text"]) <= 3000
            for f in block.get("fields", []):
                assert len(f["text"]) <= 2000


def test_golden_blocks() -> None:
    """The whole payload of a realistic run; UPDATE_GOLDEN=1 rewrites the file after a deliberate change."""
    payload = build_report(realistic(), LINKS, MENTIONS).payload("#ci-reports")
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
    assert payload == json.loads(GOLDEN.read_text())
    assert_within_slack_limits(json.loads(GOLDEN.read_text()))


def test_content_of_realistic_report() -> None:
    report = build_report(realistic(), LINKS, MENTIONS)
    texts = "\n".join(iter_texts(report.main.blocks))
    assert report.main.blocks[0]["text"]["text"] == "🔴 Nightly CI · schedule · main"
    assert f"<{REPO}/commit/c0ffee0123456789c0ffee0123456789c0ffee01|c0ffee0>" in texts
    assert "1h 02m" in texts and "single-gpu, multi-gpu" in texts and "NVIDIA A10G ×2" in texts
    assert "1520 passed · 9 failed · 1 error · 1 crashed · 1 timeout · 230 skipped · 4 xfail" in texts
    assert "model    single-gpu   multi-gpu" in texts and "llama             4           2" in texts
    assert "*🆕 New failures* (9 in 4 groups, by culprit)" in texts
    assert f"culprit <{REPO}/commit/1f3c2d9e8b7a6c5d4e3f2a1b0c9d8e7f6a5b4c3d|1f3c2d9>" in texts
    assert (f"by <@U0ADA> · PR <{REPO}/pull/4242|#4242> — *6 tests* (gemma, llama, mistral, qwen2 · multi-gpu, "
            "single-gpu)") in texts
    # the shared-attention dtype bug: one line for the four models, not four lines
    assert ("    4 models: `RuntimeError: expected scalar type BFloat16 but found Float: tensor([0.5000, 0.2500, "
            f"9.0000]) at 0x7f00aa10 in GemmaAttention` since <{REPO}/commit/1f3c2d9e8b7a6c5d4e3f2a1b0c9d8e7f6a5b4c3d"
            "|1f3c2d9> (gemma, llama, mistral, qwen2) — 4× failed: ") in texts
    assert texts.count("expected scalar type BFloat16") == 1
    assert "by <@U0BOB>" in texts  # GitHub noreply email -> login -> Slack id
    assert "by Eve Unmapped · PR" in texts  # unmapped: named, not mentioned
    assert "culprit not found yet" in texts
    assert "3/10 failed (30%) on cuda:0" in texts
    assert "*12* failing: *9* new · *1* still failing · *2* flaky · *2* fixed vs run #790" in texts
    assert "`time_to_first_token_secs` (llama, NVIDIA A10G) +11.5%, p=2e-09" in texts
    assert [r.text for r in report.replies] == ["gemma: 2 failing", "llama: 6 failing", "mistral: 3 failing",
                                                "qwen2: 1 failing"]
    assert "RuntimeError: NCCL error" in "\n".join(iter_texts(report.replies[1].blocks))


def test_counts_tell_one_story() -> None:
    """Header totals, the counts line, the per-model table and the thread add up to the same failing count."""
    data = realistic()
    report = build_report(data, LINKS, MENTIONS)
    assert data.failed == len(data.failing) == 12
    assert sum(r.total for r in data.models) == 12
    assert sum(int(r.text.split(": ")[1].split()[0]) for r in report.replies) == 12
    assert report.main.text.startswith("🔴 Nightly CI on main: 12 failing, 9 new")
    texts = "\n".join(iter_texts(report.main.blocks))
    assert "*12* failing: *9* new · *1* still failing · *2* flaky" in texts and "single-GPU" not in texts


def test_labels_come_from_the_runs_runner_group() -> None:
    data = realistic()
    data.runner_groups = ["cpu"]
    data.failing = [FailureItem(f"tests/test_m.py::test_{i}", "llama", "slow", "failed", "boom", "cpu", None)
                    for i in range(3)]
    data.models = [ModelRow("llama", {"cpu": 3})]
    report = build_report(data, LINKS, MENTIONS)
    blob = json.dumps(report.payload(), ensure_ascii=False)
    assert "single-GPU" not in blob and "multi-GPU" not in blob and "gpu" not in blob  # a CPU run is a CPU run
    assert "(llama · cpu)" in blob and "model         cpu" in blob


def test_nothing_from_tests_or_commits_becomes_a_mention_or_link() -> None:
    report = build_report(realistic(), LINKS, MENTIONS)
    blob = json.dumps(report.payload(), ensure_ascii=False)
    assert "<!channel>" not in blob and "<!here>" not in blob and "<https://evil" not in blob
    assert "&lt;!channel&gt; &amp; &lt;https://evil.example|click&gt;" in blob
    for message in [report.main, *report.replies]:
        for text in iter_texts(message.blocks):
            for target in re.findall(r"<([^>|]*)", text):
                assert target.startswith((REPO, "https://grafana.example", "@U0")), target


def test_escape() -> None:
    assert escape("a < b && c > d") == "a &lt; b &amp;&amp; c &gt; d"
    assert escape(None) == ""


def test_limits_with_thousands_of_failures() -> None:
    data = realistic()
    long_msg = "E" * 5000
    data.failing = [FailureItem(f"tests/test_big.py::test_case_{i}_" + "x" * 200, "llama", "slow", "failed",
                                long_msg + str(i % 70), "single-gpu", CulpritInfo(f"{i % 300:040x}"))
                    for i in range(3000)]
    data.flaky = [Flaky(f"tests/test_flaky.py::test_{i}", "cpu", 1, 3) for i in range(500)]
    data.models = [ModelRow(f"model_{i}", {"single-gpu": i, "multi-gpu": i}) for i in range(200)]
    report = build_report(data, LINKS, MENTIONS)
    for message in [report.main, *report.replies]:
        assert len(message.blocks) <= MAX_BLOCKS
        for block in message.blocks:
            if block["type"] == "section" and "text" in block:
                assert len(block["text"]["text"]) <= 3000
            for f in block.get("fields", []):
                assert len(f["text"]) <= 2000
    texts = "\n".join(iter_texts(report.main.blocks))
    assert re.search(r"… \d+ more \(<https://github.com/acme/models/actions/runs/9001\|see all>\)", texts)
    assert "… 175 more models" in texts
    assert report.main.blocks[-1]["type"] == "context"  # the counts survive truncation
    assert "*3000* new" in texts
    assert "(3000 in 300 groups, by culprit)" in texts  # one entry per culprit, not per test
    shown = sum(t.count("• culprit ") for t in iter_texts(report.main.blocks))
    hidden = int(re.search(r"… (\d+) more \(<https://github.com/acme/models/actions", texts).group(1))
    assert shown + hidden == 300
    assert sum(int(r.text.split(": ")[1].split()[0]) for r in report.replies) == 3000  # the thread has them all


@pytest.mark.parametrize(("author", "email", "expected"), [
    ("Ada", "ADA@example.com", "<@U0ADA>"),
    ("bob", "1234+bobdev@users.noreply.github.com", "<@U0BOB>"),
    ("<!channel>", "nobody@example.com", "&lt;!channel&gt;"),
    (None, None, "unknown author"),
])
def test_mentions(author: str | None, email: str | None, expected: str) -> None:
    assert MENTIONS.render(author, email) == expected


def test_mention_ids_are_never_markup() -> None:
    assert Mentions({"a@b.c": "U1> <!channel"}).render("A", "a@b.c") == "A"
