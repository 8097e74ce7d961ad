"""Bisect scenarios on real git repositories with real pytest probes, by name.

Each scenario builds a history and says what a correct bisect reports: the culprit (or the range of
candidates) per test, flaky and not-reproduced tests, commits that had to be skipped. Every scenario
also checks the round bound ceil(log_(w+1) N) + 2.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import git
import pytest
from harness_bisect.search import rounds_needed

from harness.triage.bisect_glue import BisectRequest, run_bisect
from tests.triage.gitrepo import RepoBuilder, broken_core, core_repo, core_tests

T = "tests/test_core.py::test_{}".format


@dataclass
class Scenario:
    repo: Path
    tests: list[str]
    culprits: dict[str, list[str]]  # test -> candidate shas (one when exact)
    good: str | None = None
    bad: str = "HEAD"
    flaky: set[str] = field(default_factory=set)
    not_reproduced: set[str] = field(default_factory=set)
    skipped: set[str] = field(default_factory=set)
    subjects: dict[str, tuple[str, int | None]] = field(default_factory=dict)  # sha -> (subject, pr)
    options: dict = field(default_factory=dict)
    max_probes: int | None = None


def single_culprit(root: Path) -> Scenario:
    b = core_repo(root, "AB", 16, {11: ({"pkg/core.py": broken_core("AB", {"A": 0})}, "core: faster A (#42)")})
    return Scenario(root, [T("a")], {T("a"): [b.shas[11]]}, good=b.shas[0],
                    subjects={b.shas[11]: ("core: faster A (#42)", 42)})


def culprits_share_probes(root: Path) -> Scenario:
    b = core_repo(root, "ABCD", 24, {
        5: ({"pkg/core.py": broken_core("ABCD", {"A": 0, "B": 0})}, "break A and B"),
        17: ({"pkg/core.py": broken_core("ABCD", {"A": 0, "B": 0, "C": 0})}, "break C")})
    # Unbatched, each test would need 2 endpoint probes + log2(24) = 5 of its own: 3 * 7 = 21.
    return Scenario(root, [T("a"), T("b"), T("c"), T("d")],
                    {T("a"): [b.shas[5]], T("b"): [b.shas[5]], T("c"): [b.shas[17]]}, good=b.shas[0],
                    not_reproduced={T("d")}, max_probes=2 + 5 + 5)


def merge_commit_first_parent(root: Path) -> Scenario:
    b, feature = _merge_history(root)
    merge = b.shas[-2]
    return Scenario(root, [T("a")], {T("a"): [merge]}, good=b.shas[0],
                    subjects={merge: ("Merge pull request #77 from eve/feature", 77)})


def merge_full_history(root: Path) -> Scenario:
    b, feature = _merge_history(root)
    return Scenario(root, [T("a")], {T("a"): [feature]}, good=b.shas[0], options={"first_parent": False})


def _merge_history(root: Path) -> tuple[RepoBuilder, str]:
    b = core_repo(root, "AB", 2)
    b.repo.git.checkout("-b", "feature")
    b.commit({"feature.txt": "1\n"}, "feature: scaffolding")
    breaking = b.commit({"pkg/core.py": broken_core("AB", {"A": 0})}, "feature: rework A")
    b.commit({"feature.txt": "2\n"}, "feature: docs")
    b.repo.git.checkout("main")
    b.filler()
    b.repo.git.merge("--no-ff", "--no-edit", "-m", "Merge pull request #77 from eve/feature", "feature")
    b.shas.append(b.repo.head.commit.hexsha)
    b.filler()
    return b, breaking


def _unbuildable(root: Path, culprit_at: int, kind: str) -> tuple[RepoBuilder, str]:
    """Commit 8 cannot run (syntax error in the package, or its install command fails); 9 repairs it.
    The install kind changes a dependency file at 8 and back at 9: installs are shared across commits with
    the same dependency files (harness_bisect/envs.py), so only a dependency change reinstalls."""
    names = "AB"
    extra = {}
    if kind == "install":
        extra = {"pyproject.toml": '[tool.harness]\ninstall = "python check_install.py"\n',
                 "check_install.py": "import pathlib, sys\nsys.exit(1 if pathlib.Path('BROKEN').exists() else 0)\n"}
    b = core_repo(root, names, 0, extra=extra)
    a_value = ord("A")
    for i in range(1, 17):
        if i == culprit_at:
            a_value = 0
        core = broken_core(names, {"A": a_value})
        if i == 8:
            files = {"pkg/core.py": core + "def broken(:\n"} if kind == "syntax" else {"BROKEN": "x\n", "requirements.txt": "broken-dependency\n", "pkg/core.py": core}
            b.commit(files, "wip: does not build")
        elif i == 9:
            b.commit({"pkg/core.py": core, **({"BROKEN": None, "requirements.txt": None} if kind == "install" else {})},
                     "fix the build"
                     + (" and break A" if i == culprit_at else ""))
        elif i == culprit_at:
            b.commit({"pkg/core.py": core}, "break A")
        else:
            b.filler()
    return b, b.shas[8]


def unbuildable_commit_skipped(root: Path) -> Scenario:
    b, broken = _unbuildable(root, 12, "syntax")
    return Scenario(root, [T("a")], {T("a"): [b.shas[12]]}, good=b.shas[0], skipped={broken})


def install_failure_skipped(root: Path) -> Scenario:
    b, broken = _unbuildable(root, 12, "install")
    return Scenario(root, [T("a")], {T("a"): [b.shas[12]]}, good=b.shas[0], skipped={broken})


def culprit_hidden_by_skip_is_a_range(root: Path) -> Scenario:
    b, broken = _unbuildable(root, 9, "syntax")
    return Scenario(root, [T("a")], {T("a"): [broken, b.shas[9]]}, good=b.shas[0], skipped={broken})


def born_failing_test(root: Path) -> Scenario:
    b = core_repo(root, "AB", 16, {10: ({"tests/test_new.py": "def test_new():\n    assert 1 == 2\n"}, "add test_new")})
    return Scenario(root, ["tests/test_new.py::test_new"], {"tests/test_new.py::test_new": [b.shas[10]]},
                    good=b.shas[0])


def born_failing_function(root: Path) -> Scenario:
    tests = core_tests(["A", "B"]) + "\ndef test_late():\n    assert core.A == -1\n"
    b = core_repo(root, "AB", 12, {6: ({"tests/test_core.py": tests}, "add test_late")})
    return Scenario(root, [T("late")], {T("late"): [b.shas[6]]}, good=b.shas[0])


def flaky_test_never_blamed(root: Path) -> Scenario:
    flaky = ("\ndef test_flaky():\n    p = Path(os.environ['FLAKE_DIR']) / 'count'\n"
             "    n = int(p.read_text()) if p.exists() else 0\n    p.write_text(str(n + 1))\n"
             "    assert n % 2 == 1\n")
    b = core_repo(root, "AB", 12, {7: ({"pkg/core.py": broken_core("AB", {"B": 0})}, "break B")},
                  extra={"tests/test_core.py": core_tests(["A", "B"]) + flaky})
    return Scenario(root, [T("flaky"), T("b")], {T("b"): [b.shas[7]]}, good=b.shas[0], flaky={T("flaky")})


def not_reproduced(root: Path) -> Scenario:
    b = core_repo(root, "AB", 8)
    return Scenario(root, [T("a"), T("b")], {}, good=b.shas[0], not_reproduced={T("a"), T("b")})


def broke_fixed_broke_again(root: Path) -> Scenario:
    bad = {"pkg/core.py": broken_core("AB", {"A": 0})}
    good = {"pkg/core.py": broken_core("AB", {})}
    b = core_repo(root, "AB", 20, {4: (bad, "break A"), 8: (good, "fix A"), 15: (bad, "break A again")})
    return Scenario(root, [T("a")], {T("a"): [b.shas[15]]}, good=b.shas[0])


def collection_error_is_the_failure(root: Path) -> Scenario:
    broken_tests = "from pkg.core import MISSING\n" + core_tests(["A", "B"])
    b = core_repo(root, "AB", 12, {7: ({"tests/test_core.py": broken_tests}, "tests: import a helper")})
    return Scenario(root, [T("a")], {T("a"): [b.shas[7]]}, good=b.shas[0])


SCENARIOS: dict[str, Callable[[Path], Scenario]] = {f.__name__: f for f in [
    single_culprit, culprits_share_probes, merge_commit_first_parent, merge_full_history,
    unbuildable_commit_skipped, install_failure_skipped, culprit_hidden_by_skip_is_a_range, born_failing_test,
    born_failing_function, flaky_test_never_blamed, not_reproduced,
    broke_fixed_broke_again, collection_error_is_the_failure]}


PARALLEL = ("culprits_share_probes", "unbuildable_commit_skipped", "flaky_test_never_blamed")


@pytest.mark.parametrize(("name", "workers"), [(n, 1) for n in SCENARIOS] + [(n, 3) for n in PARALLEL])
def test_scenario(name: str, workers: int, tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLAKE_DIR", str(tmp_path))
    sc = SCENARIOS[name](tmp_path / "repo")
    result = run_bisect(BisectRequest(repo=sc.repo, good=sc.good, bad=sc.bad, tests=sc.tests, workers=workers,
                                      retries=3, **sc.options))
    found = {t: c.range for c in result.culprits for t in c.tests}
    assert found == sc.culprits
    for c in result.culprits:
        assert c.commit == c.range[-1]
        if c.commit in sc.subjects:
            assert (c.subject, c.pr) == sc.subjects[c.commit]
            assert (c.author, c.email) in {("Eve Breaker", "eve@example.com"), ("Fixture", "fixture@example.com")}
    assert {f.test for f in result.flaky} == sc.flaky
    assert all(0 < f.failures < f.attempts == 6 for f in result.flaky)
    assert set(result.not_reproduced) == sc.not_reproduced
    assert sc.skipped <= set(result.skipped_commits)
    assert result.rounds <= rounds_needed(result.commits_in_range, workers) + 2
    if sc.max_probes is not None and workers == 1:
        assert result.probes <= sc.max_probes
    repo = git.Repo(sc.repo)
    assert [w for w in repo.git.worktree("list", "--porcelain").splitlines() if w.startswith("worktree ")] == [
        f"worktree {sc.repo}"]
