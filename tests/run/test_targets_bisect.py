"""A target repository end to end: `harness run --repo` at a good and a bad commit, then
`harness bisect --run` finds the culprit there — for a transformers-style layout whose failing test is
gated by RUN_SLOW (the probes must see the suite's environment) and for a custom `[tool.harness]` one."""

from __future__ import annotations

import json
from pathlib import Path

import git
import pytest

from tests.run.test_run_cli import harness, make_repo, rows
from tests.run.test_targets import CUSTOM_LAYOUT, TRANSFORMERS_LAYOUT

LAYOUTS = {
    "transformers-preset": (TRANSFORMERS_LAYOUT, "src/mylib/__init__.py", "def add(a, b):\n    return a + b + (a == 2)\n",
                            ["--models", "llama", "--suite", "slow"],
                            "tests/models/llama/test_modeling_llama.py::test_slow_generation"),
    "custom-tool-harness": ({**CUSTOM_LAYOUT, "checks/lib.py": "DEEP_LEVEL = 1\n",
                             "checks/alpha_checks.py": "import os\nfrom lib import DEEP_LEVEL\n\n"
                                                       "def test_alpha_deep():\n"
                                                       "    assert os.environ['DEEP'] == '1' and DEEP_LEVEL == 1\n",
                             "conftest.py": "import sys, pathlib\n"
                                            "sys.path.insert(0, str(pathlib.Path(__file__).parent / 'checks'))\n"},
                            "checks/lib.py", "DEEP_LEVEL = 2\n", ["--models", "alpha", "--suite", "slow"],
                            "checks/alpha_checks.py::test_alpha_deep"),
}


def _commit(repo: git.Repo, root: Path, path: str, body: str, subject: str) -> str:
    (root / path).parent.mkdir(parents=True, exist_ok=True)
    (root / path).write_text(body)
    repo.index.add([path])
    actor = git.Actor("Grace Hopper", "grace@example.com")
    return repo.index.commit(subject, author=actor, committer=actor).hexsha


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_run_then_bisect_in_a_target_repo(layout: str, tmp_path: Path, pg_url: str) -> None:
    files, culprit_path, culprit_body, run_args, failing = LAYOUTS[layout]
    root = tmp_path / "target"
    repo = make_repo(root, files)
    good = repo.head.commit.hexsha
    _commit(repo, root, "README.md", "docs\n", "docs: readme")
    culprit = _commit(repo, root, culprit_path, culprit_body, "core: change the arithmetic (#77)")
    _commit(repo, root, "NOTES.md", "more docs\n", "docs: notes")

    repo.git.checkout(good)
    # A detached checkout has no branch of its own: name it, as a CI checkout would.
    base = harness("run", "--repo", str(root), *run_args, "--branch", "main", "--db", pg_url, "--json",
                   cwd=tmp_path)
    assert base.returncode == 0, base.stderr
    repo.git.checkout("main")
    bad = harness("run", "--repo", str(root), *run_args, "--db", pg_url, "--json", cwd=tmp_path)
    assert bad.returncode == 1, bad.stderr
    bad_run = json.loads(bad.stdout)
    failed = [r["test"] for r in bad_run["results"] if r["outcome"] == "failed"]
    assert failed == [failing]

    assert [r.branch for r in rows(pg_url, "SELECT branch FROM runs ORDER BY id")] == ["main", "main"]

    proc = harness("bisect", "--run", str(bad_run["run_id"]), "--db", pg_url, "--json", cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    out = json.loads(proc.stdout)
    assert [(c["commit"], c["tests"], c["pr"]) for c in out["culprits"]] == [(culprit, [failing], 77)]
    assert rows(pg_url, "SELECT commit_sha, nodeid FROM culprits") == [(culprit, failing)]
    assert repo.head.commit.hexsha != good and not repo.is_dirty()
