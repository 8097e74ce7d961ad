"""`harness expectations update` on a copy of this repository: a stale expectation is re-recorded
by really running the slow suite, and the diff says what changed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from harness.cli import main
from tests.run.test_run_cli import make_repo

ROOT = Path(__file__).resolve().parents[2]


def test_update_rewrites_a_stale_expectation_and_prints_the_diff(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    repo = tmp_path / "zoo"
    make_repo(repo, {"README.md": "copy\n"})
    for part in ("models", "suites"):
        shutil.copytree(ROOT / part, repo / part, ignore=shutil.ignore_patterns("__pycache__", "results"))
    shutil.copy(ROOT / "pyproject.toml", repo / "pyproject.toml")
    path = repo / "suites" / "expectations" / "llama.json"
    data = json.loads(path.read_text())
    real = data["greedy_tokens/float32"]["cpu"]
    data["greedy_tokens/float32"]["cpu"] = [0] * len(real)
    path.write_text(json.dumps(data, indent=2))

    assert main(["expectations", "update", "--repo", str(repo), "--models", "llama", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "--- a/suites/expectations/llama.json" in out and "+++ b/suites/expectations/llama.json" in out
    assert json.loads(path.read_text())["greedy_tokens/float32"]["cpu"] == real
    assert main(["expectations", "update", "--repo", str(repo), "--models", "llama", "--device", "cpu"]) == 0
    assert capsys.readouterr().out.strip() == "expectations unchanged"


@pytest.mark.parametrize("args,expected", [
    (["--device", "tpu"], "--device 'tpu': expected cpu, cuda or cuda:N"),
    (["--models", "lama"], "unknown model 'lama'"),
], ids=["bad-device", "unknown-model"])
def test_bad_input(args: list[str], expected: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["expectations", "update", "--repo", str(ROOT), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expected in err
