"""Failure identity recorded at the source: the plugin (through pytester, single process and xdist)
and JUnit XML ingest fill exception, signature, skip category, output tail and start time."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.store.rollup_data import rollups_settled

pytest_plugins = ["pytester"]

MODELS = ["llama", "mistral", "gemma", "qwen2", "phi"]

# A model zoo whose shared attention helper has a dtype bug: every family fails the same way, each
# with its own tensor values, addresses, temp paths and class name.
ATTENTION = '''
import os, random, tempfile, uuid

def attention(model, seq):
    scores = [round(random.uniform(-3, 3), 4) for _ in range(seq)]
    cache = os.path.join(tempfile.mkdtemp(), f"{uuid.uuid4()}.bin")
    cls = model.capitalize() + "Attention"
    print(f"{cls}: seq={seq} cache={cache}")
    raise RuntimeError(f"expected scalar type BFloat16 but found Float: tensor({scores}, dtype=torch.float32)"
                       f" at {hex(id(scores))} in {cls}.forward (cache {cache})")
'''

TESTS = f'''
import pytest
from zoo_attention import attention

MODELS = {MODELS!r}

@pytest.mark.parametrize("model_name", MODELS)
def test_forward(model_name):
    attention(model_name, 3 + MODELS.index(model_name))

def test_config():
    raise ValueError("bad config: hidden_size 4096 not divisible by 3")

def test_passes():
    pass

def test_huge():
    print("y" * 5_000_000)
    raise AssertionError("z" * 5_000_000)

@pytest.mark.skipif(True, reason="requires CUDA")
def test_gpu_only():
    pass

def test_optional():
    pytest.importorskip("no_such_optional_dependency")

def test_turned_off():
    pytest.skip("broken, see #123")

@pytest.mark.xfail(reason="known bug")
def test_known():
    assert False
'''


def _zoo(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(zoo_attention=ATTENTION, test_models=TESTS)


def _rows(db_url: str) -> dict[str, dict]:
    engine = create_engine(db_url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT nodeid, model, outcome, message, started_at, exception, signature, "
                                 "skip_category, output_tail FROM test_results")).mappings().all()
    engine.dispose()
    return {r["nodeid"].split("::")[-1]: dict(r) for r in rows}


@pytest.mark.parametrize("xdist", [False, True], ids=["single-process", "xdist-2"])
def test_one_broken_code_path_is_one_signature_across_models(pytester: pytest.Pytester, db_url: str,
                                                              xdist: bool) -> None:
    _zoo(pytester)
    result = pytester.runpytest_subprocess("--harness-db", db_url, "--harness-models", ",".join(MODELS),
                                           *(["-n", "2"] if xdist else []))
    assert result.ret == 1
    rows = _rows(db_url)
    forward = [rows[f"test_forward[{m}]"] for m in MODELS]
    assert {r["model"] for r in forward} == set(MODELS)
    assert len({r["message"] for r in forward}) == len(MODELS)  # every message differs...
    assert len({r["signature"] for r in forward}) == 1  # ...and they are one failure
    assert {r["exception"] for r in forward} == {"RuntimeError"}
    assert all("Attention: seq=" in r["output_tail"] and "Captured stdout call" in r["output_tail"] for r in forward)
    assert rows["test_config"]["exception"] == "ValueError"
    assert rows["test_config"]["signature"] not in (None, forward[0]["signature"])
    huge = rows["test_huge"]  # 5 MB message and output: bounded, the output kept by its end
    assert huge["exception"] == "AssertionError" and huge["signature"]
    assert len(huge["message"].encode()) <= 4096 and len(huge["output_tail"].encode()) <= 8192
    assert huge["output_tail"].rstrip().endswith("y")
    assert {k: rows[k]["skip_category"] for k in ("test_gpu_only", "test_optional", "test_turned_off",
                                                  "test_known")} == {
        "test_gpu_only": "not-applicable", "test_optional": "not-applicable", "test_turned_off": "skipped",
        "test_known": "skipped"}
    passed = rows["test_passes"]
    assert passed["exception"] is None and passed["signature"] is None and passed["output_tail"] is None
    assert all(r["started_at"] is not None for r in rows.values())
    rollups_settled(db_url)  # the sidecar's detached child refreshes them right after "stored"
    engine = create_engine(db_url)  # the rollups the "top failure signatures" panel reads, kept by the live writer
    with engine.connect() as conn:
        models = conn.execute(text("SELECT model FROM rollup_signatures_daily WHERE signature = :s"),
                              {"s": forward[0]["signature"]}).scalars().all()
        explicit = conn.execute(text("SELECT sum(n_skip_explicit), sum(n_skip) FROM rollup_run_counts")).one()
    engine.dispose()
    assert sorted(models) == sorted(MODELS)
    assert tuple(explicit) == (2, 3)  # test_turned_off and the xfail; the two gates are not counted


def test_two_machines_give_the_same_signatures(pytester: pytest.Pytester, tmp_path: Path) -> None:
    """Two runs of the same failures (other temp paths, addresses, tensor values): same signatures."""
    _zoo(pytester)
    signatures = []
    for i in range(2):
        bundle = tmp_path / f"run{i}.jsonl"
        pytester.runpytest_subprocess("--harness-bundle", str(bundle), "--harness-models", ",".join(MODELS),
                                      "-k", "forward or config")
        results = [json.loads(line) for line in bundle.read_text().splitlines()]
        signatures.append({r["nodeid"]: r["signature"] for r in results if r["kind"] == "result"})
    assert signatures[0] == signatures[1] and len(set(signatures[0].values())) == 2


def test_junit_ingest_fills_type_message_and_output(pytester: pytest.Pytester, db_url: str) -> None:
    """pytest's own JUnit XML, ingested the way users call it: the same signatures the plugin makes."""
    _zoo(pytester)
    xml = pytester.path / "junit.xml"
    pytester.runpytest_subprocess(f"--junitxml={xml}", "-o", "junit_logging=all", "-p", "no:harness")
    done = subprocess.run([sys.executable, "-m", "harness.cli", "ingest", str(xml), "--db", db_url],
                          capture_output=True, text=True, cwd=pytester.path)
    assert done.returncode == 0, done.stderr
    rows = _rows(db_url)
    forward = [rows[f"test_forward[{m}]"] for m in MODELS]
    assert {r["exception"] for r in forward} == {"RuntimeError"} and len({r["signature"] for r in forward}) == 1
    assert all("Attention: seq=" in r["output_tail"] for r in forward)
    assert rows["test_huge"]["exception"] == "AssertionError"
    assert len(rows["test_huge"]["message"].encode()) <= 4096
    assert len(rows["test_huge"]["output_tail"].encode()) <= 8192
    assert rows["test_gpu_only"]["skip_category"] == "not-applicable"
    assert rows["test_turned_off"]["skip_category"] == "skipped"
    assert rows["test_known"]["skip_category"] == "skipped"

    bundle = pytester.path / "b.jsonl"
    pytester.runpytest_subprocess("--harness-bundle", str(bundle), "--harness-models", ",".join(MODELS))
    plugin = {json.loads(x)["nodeid"].split("::")[-1]: json.loads(x).get("signature")
              for x in bundle.read_text().splitlines() if json.loads(x)["kind"] == "result"}
    assert plugin["test_forward[llama]"] == forward[0]["signature"]
    assert plugin["test_config"] == rows["test_config"]["signature"]
    # One outcome per test, whichever way it was recorded (pytest's JUnit marks an xfail as a skip of
    # type pytest.xfail: an expected failure, as the plugin says, counted as passing on the dashboards).
    outcomes = {json.loads(x)["nodeid"].split("::")[-1]: json.loads(x)["outcome"]
                for x in bundle.read_text().splitlines() if json.loads(x)["kind"] == "result"}
    assert {name: r["outcome"] for name, r in rows.items()} == outcomes
    assert outcomes["test_known"] == "xfail"
