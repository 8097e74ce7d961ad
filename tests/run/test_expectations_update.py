"""`harness expectations update` on a copy of this repository: a stale expectation is re-recorded
by really running the slow suite, and the diff says what changed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from harness.cli import main
from harness.run.expectations import recorded_device_types
from harness.run.metadata import gpu_info
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


def _zoo(tmp_path: Path) -> Path:
    repo = tmp_path / "zoo"
    make_repo(repo, {"README.md": "copy\n"})
    for part in ("models", "suites"):
        shutil.copytree(ROOT / part, repo / part, ignore=shutil.ignore_patterns("__pycache__", "results"))
    shutil.copy(ROOT / "pyproject.toml", repo / "pyproject.toml")
    return repo


def _bytes(repo: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((repo / "suites" / "expectations").glob("*"))}


ABSENT = [f"cuda:{gpu_info().count}"] + (["cuda"] if gpu_info().count == 0 else [])


@pytest.mark.parametrize("device", ABSENT)
def test_device_not_present_is_exit_2_and_writes_nothing(device: str, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """Seen on main: `--device cuda:0` without CUDA exited 0 and rewrote the `cpu` entry."""
    repo = _zoo(tmp_path)
    before = _bytes(repo)
    assert main(["expectations", "update", "--repo", str(repo), "--models", "gpt2", "--device", device]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert err.startswith(f"harness: --device {device}: not present (") and "nothing was written" in err
    assert _bytes(repo) == before


def test_entries_recorded_for_another_device_type_are_seen() -> None:
    before = {"suites/expectations/m.json": json.dumps({"c": {"cpu": 1, "cuda:9.0": 2}})}
    same = dict(before)
    cpu_changed = {"suites/expectations/m.json": json.dumps({"c": {"cpu": 5, "cuda:9.0": 2}})}
    new_file = {**before, "suites/expectations/n.json": json.dumps({"c": {"cuda:8.6": 3}})}
    assert recorded_device_types(before, same) == set()
    assert recorded_device_types(before, cpu_changed) == {"cpu"}
    assert recorded_device_types(before, new_file) == {"cuda"}
