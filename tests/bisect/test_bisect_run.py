"""`harness bisect --run ID` end to end: two runs recorded by the real pytest plugin, the new failures
of the later one bisected between the two commits, culprits stored against the run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select

from harness.cli import main
from harness.store import Store
from harness.store.schema import Culprit, Run
from tests.triage.gitrepo import broken_core, core_repo
from tests.triage.recording import PYPROJECT, record_run

T = "tests/test_core.py::test_{}".format


def test_bisect_run_blames_the_new_failures_of_a_stored_run(tmp_path: Path, cache: Path, db_url: str,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    store = Store.open(db_url)
    b = core_repo(tmp_path / "repo", "ABC", 0, extra={"pyproject.toml": PYPROJECT})
    baseline = record_run(store, b.root, tmp_path / "b1.jsonl")
    for i in range(1, 11):
        if i == 4:
            b.commit({"pkg/core.py": broken_core("ABC", {"A": 0, "B": 0})}, "core: new defaults (#314)",
                     author=("Eve Breaker", "eve@example.com"))
        else:
            b.filler()
    run = record_run(store, b.root, tmp_path / "b2.jsonl")
    with store.session() as s:
        stored = s.get(Run, run)
        assert (stored.repo, stored.commit_sha, stored.status) == (str(b.root), b.shas[-1], "completed")

    assert main(["new-failures", "--run", str(run), "--db", db_url, "--json"]) == 1
    found = json.loads(capsys.readouterr().out)
    assert found["baseline_id"] == baseline and [d["nodeid"] for d in found["new"]] == [T("a"), T("b")]

    assert main(["bisect", "--run", str(run), "--db", db_url, "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert (out["good"], out["bad"], out["commits_in_range"]) == (b.shas[0], b.shas[-1], 10)
    assert [(c["commit"], c["pr"], c["tests"]) for c in out["culprits"]] == [(b.shas[4], 314, [T("a"), T("b")])]
    with store.session() as s:
        rows = s.scalars(select(Culprit).order_by(Culprit.nodeid)).all()
    assert [(r.run_id, r.nodeid, r.commit_sha, r.author, r.email, r.subject, r.pr) for r in rows] == [
        (run, T(x), b.shas[4], "Eve Breaker", "eve@example.com", "core: new defaults (#314)", 314) for x in "ab"]
    store.dispose()
