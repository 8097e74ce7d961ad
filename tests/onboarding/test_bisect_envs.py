"""Bisect of targets with an `install` command: one install per dependency key for the whole bisect,
shared by every probe worktree, each probe importing its own worktree's code; a dependency change
means one more install; a later bisect reuses the environments. Also `bisect --run` on the one-file parametrised layout, through the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import git

from tests.onboarding.layouts import commit, harness, make_layout

PYPROJECT = '''[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"

[project]
name = "mini"
version = "{version}"

[tool.setuptools.packages.find]
where = ["src"]

[tool.harness]
install = "pip install --no-build-isolation --no-deps -q -e ."
'''


def src_layout_repo(root: Path, culprit: int, bump_at: int | None = None) -> tuple[git.Repo, list[str]]:
    """A src-layout package (importable only through its install); commit `culprit` breaks value()."""
    root.mkdir(parents=True)
    repo = git.Repo.init(root, initial_branch="main")
    with repo.config_writer() as cw:
        cw.set_value("user", "name", "Dev").set_value("user", "email", "dev@example.com")
    shas = [commit(repo, {"pyproject.toml": PYPROJECT.format(version="0.1"),
                          "src/mini/__init__.py": "def value():\n    return 1\n",
                          "tests/test_mini.py": "from mini import value\n\ndef test_value():\n    assert value() == 1\n"},
                   "init")]
    for i in range(1, 13):
        files = {f"notes/n{i}.txt": f"{i}\n"}
        if i == culprit:
            files = {"src/mini/__init__.py": "def value():\n    return 2\n"}
        if i == bump_at:
            files["pyproject.toml"] = PYPROJECT.format(version="0.2")
        shas.append(commit(repo, files, f"change {i}"))
    return repo, shas


def bisect(root: Path, good: str, *extra: str, cache: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness.cli", "bisect", "--repo", str(root), "--good", good,
                           "--bad", "HEAD", "--tests", "tests/test_mini.py::test_value", "-j", "2", "--retries", "1",
                           "--no-store", *extra], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HARNESS_CACHE_DIR": str(cache)})


def test_one_install_shared_by_every_probe_worktree(tmp_path: Path) -> None:
    repo, shas = src_layout_repo(tmp_path / "mini", culprit=9)
    proc = bisect(tmp_path / "mini", shas[0], cache=tmp_path / "cache")
    assert proc.returncode == 1, proc.stderr
    assert f"culprit {shas[9][:12]}" in proc.stdout
    installs = [ln for ln in proc.stderr.splitlines() if "install at" in ln]
    assert len(installs) == 1 and "(first install)" in installs[0] and " took " in installs[0], proc.stderr
    probes = [ln for ln in proc.stderr.splitlines() if ln.strip().startswith("probe #")]
    assert len(probes) >= 4 and "skip" not in proc.stderr  # several probes, over both worktrees, one install


def test_dependency_change_installs_again(tmp_path: Path) -> None:
    repo, shas = src_layout_repo(tmp_path / "mini", culprit=9, bump_at=4)
    proc = bisect(tmp_path / "mini", shas[0], "--json", cache=tmp_path / "cache")
    assert proc.returncode == 1, proc.stderr
    assert [c["commit"] for c in json.loads(proc.stdout)["culprits"]] == [shas[9]]
    # --json prints no progress: run again with a fresh cache to read the install lines
    proc = bisect(tmp_path / "mini", shas[0], cache=tmp_path / "cache2")
    installs = [ln for ln in proc.stderr.splitlines() if "install at" in ln]
    assert len(installs) == 2 and sum("dependency files changed" in ln for ln in installs) == 1, proc.stderr
    # a later bisect of the same repository reuses both environments: no install at all
    again = bisect(tmp_path / "mini", shas[0], cache=tmp_path / "cache2")
    assert again.returncode == 1 and f"culprit {shas[9][:12]}" in again.stdout
    assert "install at" not in again.stderr and again.stderr.count("reusing the environment") == 2, again.stderr


def test_bisect_run_on_a_parametrised_layout(tmp_path: Path) -> None:
    """run at good, run at bad (gemma's forward breaks in between), then `bisect --run` finds the commit."""
    repo = make_layout(tmp_path / "lib", "litlib")
    root = Path(repo.working_tree_dir)
    db = f"sqlite:///{tmp_path}/r.db"
    good = harness("run", "--repo", str(root), "--models", "all", "--runner-group", "cpu", "-n", "1", "--db", db,
                   "--json", cwd=tmp_path)
    assert good.returncode == 0, good.stderr
    culprit = commit(repo, {"litlib/model.py": "def forward(name):\n    return 0 if 'gemma' in name else len(name)\n"},
                     "gemma: new forward")
    commit(repo, {"README.md": "more docs\n"}, "docs")
    bad = harness("run", "--repo", str(root), "--models", "all", "--runner-group", "cpu", "-n", "1", "--db", db,
                  "--json", cwd=tmp_path)
    assert bad.returncode == 1
    failed = {r["test"]: r["model"] for r in json.loads(bad.stdout)["results"] if r["outcome"] == "failed"}
    assert failed and set(failed.values()) == {"gemma"}
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "bisect", "--run", str(json.loads(bad.stdout)["run_id"]),
                           "--db", db, "--retries", "1", "--json"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "HARNESS_CACHE_DIR": str(tmp_path / "cache")})
    assert proc.returncode == 1, proc.stderr
    result = json.loads(proc.stdout)
    assert [c["commit"] for c in result["culprits"]] == [culprit]
    assert sorted(result["culprits"][0]["tests"]) == sorted(failed)
