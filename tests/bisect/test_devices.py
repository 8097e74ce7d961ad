"""Device slots come from the caller (issue 14): one probe per slot at a time, each slot the probe's
CUDA_VISIBLE_DEVICES; the engine reads no GPU inventory itself. Fake slots on a CPU machine."""

from __future__ import annotations

from pathlib import Path

import pytest
from harness_bisect.api import BisectRequest, run_bisect
from harness_bisect.gitops import BisectError

from tests.triage.gitrepo import RepoBuilder

TEST = "tests/test_dev.py::test_dev"
TEST_FILE = """import os
from pathlib import Path

from pkg.core import VALUE


def test_dev():
    Path(os.environ["SEEN_DIR"], str(os.getpid())).write_text(os.environ.get("CUDA_VISIBLE_DEVICES", "<unset>"))
    assert VALUE == 1
"""


def _repo(root: Path) -> RepoBuilder:
    b = RepoBuilder(root)
    b.commit({"pkg/__init__.py": "", "pkg/core.py": "VALUE = 1\n", "tests/test_dev.py": TEST_FILE})
    for i in range(1, 10):
        b.commit({"pkg/core.py": "VALUE = 2\n"} if i == 6 else {"notes.txt": f"{i}\n"}, f"change {i}")
    return b


@pytest.mark.parametrize("fork", ["1", "0"])
def test_each_probe_gets_one_device_slot(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch,
                                         fork: str) -> None:
    seen = tmp_path / "seen"
    seen.mkdir()
    monkeypatch.setenv("SEEN_DIR", str(seen))
    monkeypatch.setenv("HARNESS_BISECT_FORK", fork)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    b = _repo(tmp_path / "repo")
    result = run_bisect(BisectRequest(repo=b.root, good=b.shas[0], bad=b.shas[-1], tests=[TEST], workers=4,
                                      devices=["7", "5,6"]))
    assert [c.commit for c in result.culprits] == [b.shas[6]]
    assert result.workers == 2  # capped at the two slots
    got = [p.read_text() for p in seen.iterdir()]
    assert len(got) == result.probes and set(got) == {"7", "5,6"}  # both slots used, nothing else
    assert set(result.cost["paths"]) == {"fork" if fork == "1" else "fresh"}


def test_no_devices_leaves_the_environment_alone(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = tmp_path / "seen"
    seen.mkdir()
    monkeypatch.setenv("SEEN_DIR", str(seen))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    b = _repo(tmp_path / "repo")
    result = run_bisect(BisectRequest(repo=b.root, good=b.shas[0], bad=b.shas[-1], tests=[TEST], workers=2))
    assert result.workers == 2 and {p.read_text() for p in seen.iterdir()} == {"3"}


def test_empty_device_slot_is_bad_input(tmp_path: Path) -> None:
    b = _repo(tmp_path / "repo")
    with pytest.raises(BisectError, match="empty device slot"):
        run_bisect(BisectRequest(repo=b.root, good=b.shas[0], bad=b.shas[-1], tests=[TEST], devices=["0", " "]))


def test_glue_passes_harness_gpu_inventory(monkeypatch: pytest.MonkeyPatch) -> None:
    """The platform's slots are what its NVML inventory counts (`gpu_info`), named as CUDA_VISIBLE_DEVICES
    names them: none on a GPU-less machine whatever the variable says."""
    from harness.run import metadata
    from harness.triage.bisect_glue import probe_devices

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6,7")
    monkeypatch.setattr(metadata, "gpu_info", lambda: metadata.GpuInfo(2, "fake", "12.0"))
    assert probe_devices() == ["4", "6"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert probe_devices() == ["0", "1"]
    monkeypatch.undo()
    if metadata.gpu_info().count == 0:
        assert probe_devices() == []
