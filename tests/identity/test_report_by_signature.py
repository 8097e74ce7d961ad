"""The goal of issue 15 end to end: one change breaks the shared attention of every model family; `harness
run` records it, `harness new-failures` and the Slack report show one signature with all the models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import git

MODELS = ["llama", "mistral", "gemma", "qwen2", "phi"]

GOOD_ATTENTION = '''
def attention(model, seq, dtype="bfloat16"):
    return [0.0] * seq
'''

# The breaking commit: a dtype mix-up in the helper every family uses. Each family fails with its own
# values, addresses and temp paths, and its own class name in the message.
BAD_ATTENTION = '''
import os, random, tempfile

def attention(model, seq, dtype="bfloat16"):
    scores = [round(random.uniform(-3, 3), 4) for _ in range(seq)]
    where = tempfile.mkdtemp()
    print(f"{model}: attention over {seq} positions, scratch {where}")
    raise RuntimeError(f"expected scalar type BFloat16 but found Float: tensor({scores}) at {hex(id(scores))} "
                       f"in {model.capitalize()}Attention ({where}/kv.bin)")
'''

TESTS = f'''
import pytest
from zoo.attention import attention

@pytest.mark.parametrize("model", {MODELS!r})
def test_forward(model):
    assert attention(model, 2 + len(model)) is not None

@pytest.mark.parametrize("model", {MODELS!r})
def test_config(model):
    assert model

def test_tokenizer_llama():
    assert "llama"
'''

PYPROJECT = f'''
[tool.harness]
models = {json.dumps(MODELS)}
select = "-k {{model}}"
'''


def harness(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "HARNESS_PROGRESS_S": "0"}, timeout=300)


def _commit(repo: git.Repo, files: dict[str, str], message: str) -> None:
    root = Path(repo.working_dir)
    for name, body in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(body)
    repo.index.add(list(files))
    actor = git.Actor("Ada Lovelace", "ada@example.com")
    repo.index.commit(message, author=actor, committer=actor)


def test_one_broken_code_path_is_one_line_in_the_report(tmp_path: Path, db_url: str) -> None:
    root = tmp_path / "zoo-repo"
    root.mkdir()
    repo = git.Repo.init(root, initial_branch="main")
    _commit(repo, {"zoo/__init__.py": "", "zoo/attention.py": GOOD_ATTENTION, "tests/test_zoo.py": TESTS,
                   "tests/conftest.py": "", "pyproject.toml": PYPROJECT}, "zoo")
    run_args = ("run", "--repo", str(root), "--db", db_url, "--models", ",".join(MODELS), "-n", "2", "--json")
    good = harness(*run_args, cwd=root)
    assert good.returncode == 0, good.stderr
    _commit(repo, {"zoo/attention.py": BAD_ATTENTION}, "Compute attention in float32 (#7)")
    bad = harness(*run_args, cwd=root)
    assert bad.returncode == 1, bad.stderr
    out = json.loads(bad.stdout)
    failing = [r for r in out["results"] if r["outcome"] == "failed"]
    assert len(failing) == len(MODELS) and {r["model"] for r in failing} == set(MODELS)
    assert {r["exception"] for r in failing} == {"RuntimeError"} and len({r["signature"] for r in failing}) == 1
    assert all(r["skip_category"] is None and r["started_at"] for r in out["results"])

    found = harness("new-failures", "--db", db_url, "--run", str(out["run_id"]), "--json", cwd=root)
    assert found.returncode == 1, found.stderr
    groups = json.loads(found.stdout)["signatures"]
    assert len(groups) == 1 and groups[0]["count"] == len(MODELS) and groups[0]["models"] == sorted(MODELS)
    assert groups[0]["signature"] == failing[0]["signature"] and groups[0]["exception"] == "RuntimeError"
    text = harness("new-failures", "--db", db_url, "--run", str(out["run_id"]), cwd=root).stdout
    assert f"SIGNATURE {failing[0]['signature']}: 5 tests in 5 models - RuntimeError: expected scalar type" in text

    slack = harness("notify", "slack", "--db", db_url, "--run", str(out["run_id"]), "--dry-run",
                    "--out", str(tmp_path / "report.json"), cwd=root)
    assert slack.returncode == 0, slack.stderr
    payload = json.loads(slack.stdout)
    main = "\n".join(b["text"]["text"] for b in payload["blocks"] if "text" in b and b["type"] == "section")
    assert main.count("expected scalar type BFloat16") == 1  # one line, not one per model
    assert "    5 models: `RuntimeError: expected scalar type BFloat16 but found Float: tensor([" in main
    assert "(gemma, llama, mistral, phi, qwen2) — 5× failed: " in main
