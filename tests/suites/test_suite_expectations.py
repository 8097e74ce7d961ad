"""suites/expectations.py: device keys, best-match lookup, recording under a lock, update command."""

from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path

import pytest

from suites import expectations as ex


def test_device_key_parse_and_str() -> None:
    assert ex.DeviceKey.parse("cuda:9.0") == ex.DeviceKey("cuda", (9, 0))
    assert ex.DeviceKey.parse("cuda:8") == ex.DeviceKey("cuda", (8, 0))
    assert str(ex.DeviceKey.parse("cpu")) == "cpu" and str(ex.DeviceKey("cuda", (8, 6))) == "cuda:8.6"
    for bad in ("", ":9.0", "cuda:x.y"):
        with pytest.raises(ValueError):
            ex.DeviceKey.parse(bad)


def test_current_device_key_on_cpu() -> None:
    assert ex.device_key("cpu") == ex.DeviceKey("cpu")


@pytest.mark.parametrize(
    "device,expected",
    [
        ("cuda:9.0", "h100"),  # exact
        ("cuda:8.9", "ada"),  # same major beats bare type
        ("cuda:7.5", "any-cuda"),  # bare type
        ("cpu", "cpu"),
        ("xpu", "fallback"),  # only default applies
    ],
)
def test_best_match(device, expected) -> None:
    e = ex.Expectations(
        {"cuda:9.0": "h100", "cuda:8.6": "ada", "cuda": "any-cuda", "cpu": "cpu", "default": "fallback"}
    )
    key, value = e.find(ex.DeviceKey.parse(device))
    assert value == expected


def test_other_capability_of_same_type_before_default_and_no_match() -> None:
    e = ex.Expectations({"cuda:8.0": "a100", "default": "fallback"})
    assert e.find(ex.DeviceKey.parse("cuda:9.0"))[1] == "a100"
    assert ex.Expectations({"cuda:8.0": 1}).find(ex.DeviceKey("cpu")) is None
    assert ex.Expectations({}).find(ex.DeviceKey("cpu")) is None


def test_record_load_and_stable_format(tmp_path: Path) -> None:
    assert (
        ex.record("llama", "greedy", "cpu", [1, 2, 3], root=tmp_path)
        == "llama/greedy[cpu]: recorded [1, 2, 3]"
    )
    assert ex.record("llama", "greedy", "cpu", [1, 2, 3], root=tmp_path).endswith("unchanged")
    assert ex.record("llama", "greedy", "cpu", [1, 2, 4], root=tmp_path).endswith("[1, 2, 3] -> [1, 2, 4]")
    ex.record("llama", "greedy", "cuda:9.0", [7], root=tmp_path)
    ex.record("llama", "logits", "cpu", [[0.5, -1.25]], root=tmp_path)
    text = (tmp_path / "llama.json").read_text()
    assert json.loads(text) == {
        "greedy": {"cpu": [1, 2, 4], "cuda:9.0": [7]},
        "logits": {"cpu": [[0.5, -1.25]]},
    }
    assert '    "cpu": [1, 2, 4],\n' in text, "one line per device"
    assert ex.expectations("llama", "greedy", root=tmp_path).find(ex.DeviceKey("cuda", (9, 0)))[1] == [7]
    assert ex.recorded(tmp_path) == {"llama": {"greedy": ["cpu", "cuda:9.0"], "logits": ["cpu"]}}
    assert ex.load("gpt2", root=tmp_path) == {}


def _writer(root: str, i: int) -> None:
    for j in range(5):
        ex.record("mixtral", f"check{i}", f"cuda:{j}.0", i * 10 + j, root=Path(root))


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    procs = [mp.get_context("fork").Process(target=_writer, args=(str(tmp_path), i)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    data = ex.load("mixtral", root=tmp_path)
    assert data == {f"check{i}": {f"cuda:{j}.0": i * 10 + j for j in range(5)} for i in range(4)}


def test_env_switches(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("HARNESS_UPDATE_EXPECTATIONS", raising=False)
    assert not ex.update_mode()
    monkeypatch.setenv("HARNESS_UPDATE_EXPECTATIONS", "1")
    assert ex.update_mode()
    monkeypatch.delenv("HARNESS_EXPECTATIONS_DIR", raising=False)
    assert ex.expectations_dir() == ex.DEFAULT_DIR
    monkeypatch.setenv("HARNESS_EXPECTATIONS_DIR", str(tmp_path))
    assert ex.path_for("llama") == tmp_path / "llama.json"


def test_update_command() -> None:
    argv, env = ex.update_command(["llama", "gpt2"], device="cuda:1")
    assert env == {
        "HARNESS_UPDATE_EXPECTATIONS": "1",
        "RUN_SLOW": "1",
        "HARNESS_MODELS": "llama,gpt2",
        "CUDA_VISIBLE_DEVICES": "1",
    }
    assert argv[1:4] == ["-m", "pytest", str(ex.DEFAULT_DIR.parent / "slow")] and "not multi_gpu" in argv
    assert ex.update_command(["llama"], device="cpu")[1]["CUDA_VISIBLE_DEVICES"] == ""
    with pytest.raises(ValueError):
        ex.update_command(["llama"], device="tpu")


def test_committed_expectations_cover_every_family_on_cpu() -> None:
    from models import list_families

    on_file = ex.recorded(ex.DEFAULT_DIR)
    for family in list_families():
        checks = on_file.get(family, {})
        assert {"greedy_tokens/float32", "logits_slice/float32", "sampled_tokens/float32"} <= set(checks), (
            family
        )
        assert all("cpu" in devices for check, devices in checks.items() if check.endswith("float32")), family
