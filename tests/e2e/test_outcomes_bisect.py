"""`harness bisect` and `harness expectations update` outcome paths, through the CLI in a subprocess as
users and workflows call it (issue 11, items 2 and 3; DESIGN "No false success").

One row per outcome, by name: the exit code, the one stderr line (empty on success: `--json` keeps
progress off stderr) and the state left behind (culprit rows in the store, the target checkout and its
worktrees, the expectation files byte for byte)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import git
import pytest
from sqlalchemy import create_engine, text

from harness.run.metadata import gpu_info
from tests.bisect.test_verdicts import GATED, PYPROJECT
from tests.triage.gitrepo import RepoBuilder

ROOT = Path(__file__).resolve().parents[2]
SLOW = "suites/slow/test_gate.py::{}".format


@dataclass
class Ctx:
    """What a row may refer to: the target history, a plain folder, a zoo copy, the row's database."""

    repo: RepoBuilder
    plain: Path
    zoo: Path
    db: Path

    @property
    def url(self) -> str:
        return f"sqlite:///{self.db}"


@dataclass
class Row:
    args: Callable[[Ctx], list[str]]
    exit: int
    stderr: Callable[[Ctx], str]  # a regular expression for the whole stderr ("" = nothing)
    state: Callable[[Ctx, dict], None]  # checks what was stored / left; gets the parsed --json stdout


def _bisect(*tests: str, good: str = "0", repo: str = "repo") -> Callable[[Ctx], list[str]]:
    def args(c: Ctx) -> list[str]:
        where = {"repo": str(c.repo.root), "plain": str(c.plain)}[repo]
        rev = c.repo.shas[int(good)] if good.isdigit() else good
        return ["bisect", "--repo", where, "--good", rev, "--db", c.url, "--json",
                *[a for t in tests for a in ("--tests", t)]]
    return args


def _culprits(c: Ctx) -> list[tuple[str, str]]:
    engine = create_engine(c.url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text("SELECT nodeid, commit_sha FROM culprits ORDER BY nodeid"))]
    finally:
        engine.dispose()


def blamed(test: str) -> Callable[[Ctx, dict], None]:
    def check(c: Ctx, out: dict) -> None:
        assert [(x["commit"], x["tests"], x["pr"]) for x in out["culprits"]] == [(c.repo.shas[2], [test], 5)]
        assert _culprits(c) == [(test, c.repo.shas[2])]
    return check


def not_reproduced(test: str) -> Callable[[Ctx, dict], None]:
    def check(c: Ctx, out: dict) -> None:
        assert out["culprits"] == [] and out["not_reproduced"] == [test]
        assert _culprits(c) == []
    return check


def nothing_stored(c: Ctx, out: dict) -> None:
    assert out == {} and (not c.db.exists() or _culprits(c) == [])


def no_store_at_all(c: Ctx, out: dict) -> None:
    assert out == {} and not c.db.exists()


def expectations_untouched(c: Ctx, out: dict) -> None:
    assert _expectation_bytes(c.zoo) == _expectation_bytes(ROOT)


def _did_not_run(test: str, why: str) -> Callable[[Ctx], str]:
    return lambda c: re.escape(f"harness: {test} did not run at bad {c.repo.shas[-1][:12]}: {why}") + r".*\n"


ABSENT_GPU = f"cuda:{gpu_info().count}"

ROWS: dict[str, Row] = {
    "culprit_found": Row(_bisect(SLOW("test_plain")), 1, lambda c: "", blamed(SLOW("test_plain"))),
    "not_reproduced": Row(_bisect(SLOW("test_steady")), 0, lambda c: "", not_reproduced(SLOW("test_steady"))),
    "nonexistent_test": Row(_bisect(SLOW("test_nope")), 2,
                            _did_not_run(SLOW("test_nope"), "not collected there: no such test"), nothing_stored),
    "skipped_at_bad": Row(_bisect(SLOW("test_always_skipped")), 2,
                          _did_not_run(SLOW("test_always_skipped"), "skipped there (waiting for a fix)"),
                          nothing_stored),
    "fails_at_both_ends": Row(_bisect(SLOW("test_always_broken")), 2,
                              lambda c: re.escape(f"harness: {SLOW('test_always_broken')} fails at good "
                                                  f"{c.repo.shas[0][:12]} too") + r".*pass an older --good\n",
                              nothing_stored),
    "slow_suite_test_via_tests": Row(_bisect(SLOW("test_value")), 1, lambda c: "", blamed(SLOW("test_value"))),
    "bad_revs": Row(_bisect(SLOW("test_plain"), good="no-such-rev"), 2,
                    lambda c: re.escape(f"harness: unknown revision 'no-such-rev' in {c.repo.root}") + r".*\n",
                    no_store_at_all),
    "not_a_git_repo": Row(_bisect(SLOW("test_plain"), good="HEAD", repo="plain"), 2,
                          lambda c: re.escape(f"harness: {c.plain} is not a git repository") + r".*\n",
                          no_store_at_all),
    "expectations_bad_device": Row(
        lambda c: ["expectations", "update", "--repo", str(c.zoo), "--models", "gpt2", "--device", ABSENT_GPU], 2,
        lambda c: re.escape(f"harness: --device {ABSENT_GPU}: not present (") + r".*nothing was written\n",
        expectations_untouched),
}


def _expectation_bytes(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((root / "suites" / "expectations").glob("*.json"))}


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> tuple[RepoBuilder, Path, Path]:
    """The bisect history (commit 2 breaks `core.V`, PR #5), a folder that is no repository, a zoo copy."""
    base = tmp_path_factory.mktemp("outcomes")
    b = RepoBuilder(base / "repo")
    b.commit({"pyproject.toml": PYPROJECT, "pkg/__init__.py": "", "pkg/core.py": "V = 1\n",
              "suites/__init__.py": "", "suites/slow/__init__.py": "", "suites/slow/test_gate.py": GATED,
              ".gitignore": "__pycache__/\n"}, "initial import")
    b.filler()
    b.commit({"pkg/core.py": "V = 2\n"}, "core: V is two (#5)", author=("Eve Breaker", "eve@example.com"))
    b.filler()
    plain = base / "plain"
    plain.mkdir()
    zoo = base / "zoo"
    zoo.mkdir()
    git.Repo.init(zoo, initial_branch="main")
    for part in ("models", "suites"):
        shutil.copytree(ROOT / part, zoo / part, ignore=shutil.ignore_patterns("__pycache__", "results"))
    shutil.copy(ROOT / "pyproject.toml", zoo / "pyproject.toml")
    return b, plain, zoo


@pytest.mark.parametrize("name", list(ROWS))
def test_outcome(name: str, target: tuple[RepoBuilder, Path, Path], tmp_path: Path) -> None:
    row = ROWS[name]
    b, plain, zoo = target
    c = Ctx(b, plain, zoo, tmp_path / "db" / "results.db")
    head = b.repo.head.commit.hexsha
    env = {k: v for k, v in os.environ.items() if k not in ("RUN_SLOW", "HARNESS_DB_URL")}
    env["HARNESS_CACHE_DIR"] = str(tmp_path / "cache")
    proc = subprocess.run([sys.executable, "-m", "harness.cli", *row.args(c)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == row.exit, proc.stdout + proc.stderr
    want = row.stderr(c)
    assert (proc.stderr == "") if want == "" else re.fullmatch(want, proc.stderr), proc.stderr
    assert proc.stderr.count("\n") == (0 if want == "" else 1)
    out = json.loads(proc.stdout) if proc.returncode in (0, 1) and row.args(c)[0] == "bisect" else {}
    row.state(c, out)
    # the target checkout is as it was: same HEAD, clean, no worktree left behind
    assert b.repo.head.commit.hexsha == head and not b.repo.is_dirty(untracked_files=True)
    assert [w for w in b.repo.git.worktree("list", "--porcelain").splitlines() if w.startswith("worktree ")] == [
        f"worktree {b.root}"]
