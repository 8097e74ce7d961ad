"""`--confirm`: candidates rerun at the run's commit in a worktree; mixed ones become flaky, and their
counts accumulate in `flaky_tests` per test and device."""

from __future__ import annotations

import json
from pathlib import Path

import git
import pytest
from sqlalchemy import select

from harness.cli import main
from harness.store import Store
from harness.store.schema import FlakyTest
from harness.triage import find_new_failures
from harness.triage.confirm import confirm_new_failures
from tests.triage.gitrepo import broken_core, core_repo, core_tests
from tests.triage.recording import PYPROJECT, record_run

FLAKY = ("\ndef test_flaky():\n    p = Path(os.environ['FLAKE_DIR']) / 'count'\n"
         "    n = int(p.read_text()) if p.exists() else 0\n    p.write_text(str(n + 1))\n"
         "    assert n % 2 == 1, f'attempt {n}'\n")
SOLID, FLAKY_ID = "tests/test_core.py::test_a", "tests/test_core.py::test_flaky"


@pytest.fixture
def recorded(tmp_path: Path, store: Store, cache: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, Path]:
    """A baseline where all pass, then a run where test_a is really broken and test_flaky fails 1 in 2."""
    monkeypatch.setenv("FLAKE_DIR", str(tmp_path))
    b = core_repo(tmp_path / "repo", "AB", 0, extra={"pyproject.toml": PYPROJECT,
                                                     "tests/test_core.py": core_tests(["A", "B"]) + "\ndef test_flaky():\n    pass\n"})
    record_run(store, b.root, tmp_path / "base.jsonl")
    b.commit({"pkg/core.py": broken_core("AB", {"A": 0}), "tests/test_core.py": core_tests(["A", "B"]) + FLAKY})
    run = record_run(store, b.root, tmp_path / "run.jsonl")  # flaky counter 0: fails
    b.filler()  # the checkout moves on: the rerun must use the run's own commit
    return run, b.root


def _flaky_rows(store: Store) -> list[tuple]:
    with store.session() as s:
        return [(r.nodeid, r.device, r.failures, r.attempts) for r in s.scalars(select(FlakyTest))]


def test_confirm_moves_flaky_out_and_counts_accumulate(store: Store, recorded: tuple[int, Path]) -> None:
    run, repo = recorded
    head = git.Repo(repo).head.commit.hexsha
    found = find_new_failures(store, run)
    assert sorted(d.nodeid for d in found.new) == [SOLID, FLAKY_ID]
    confirmed = confirm_new_failures(store, found, attempts=3)  # counter 1, 2, 3: pass, fail, pass
    assert confirmed.confirmed and [d.nodeid for d in confirmed.new] == [SOLID]
    assert [(f.nodeid, f.failures, f.attempts) for f in confirmed.flaky] == [(FLAKY_ID, 2, 4)]
    assert _flaky_rows(store) == [(FLAKY_ID, "cpu", 2, 4)]
    again = confirm_new_failures(store, find_new_failures(store, run), attempts=3)  # 4, 5, 6: fail, pass, fail
    assert [(f.failures, f.attempts) for f in again.flaky] == [(3, 4)]
    assert _flaky_rows(store) == [(FLAKY_ID, "cpu", 5, 8)]
    with store.session() as s:
        assert s.scalars(select(FlakyTest.last_run_id)).one() == run
    assert git.Repo(repo).head.commit.hexsha == head
    assert git.Repo(repo).git.worktree("list").count("\n") == 0


def test_cli_confirm(db_url: str, recorded: tuple[int, Path], capsys: pytest.CaptureFixture[str]) -> None:
    run, _ = recorded
    assert main(["new-failures", "--run", str(run), "--confirm", "--attempts", "2", "--db", db_url, "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["confirmed"] and [d["nodeid"] for d in out["new"]] == [SOLID]
    assert [(f["nodeid"], f["failures"], f["attempts"]) for f in out["flaky"]] == [(FLAKY_ID, 2, 3)]
    assert main(["new-failures", "--run", str(run), "--confirm", "--repo", "/nonexistent", "--db", db_url]) == 2
    assert "does not exist" in capsys.readouterr().err
