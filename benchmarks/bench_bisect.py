"""`harness bisect` (batched k-ary, -j 1 and -j w) against the classic approach (one `git bisect run` per
test), on generated repositories, side by side in one run.

The repository: N first-parent commits after `good`; 20 tests that break at 3 culprits (7, 7 and 6
tests each), 1 flaky test (fails every other run), 1 unbuildable commit (a syntax error, repaired by
the next commit) right where the search probes first. Per approach: pytest invocations, rounds
(sequential steps) and wall time, and whether every culprit was right. Then the same harness bisect
on ranges up to 10,000 commits, to show time growing with log N.

    .venv/bin/python benchmarks/bench_bisect.py --commits 128 --workers 4 --scale 1000 10000
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import git

ROOT = Path(__file__).resolve().parents[1]
N_TESTS = 20
TEST_IDS = [f"tests/test_gen.py::test_t{i:02d}" for i in range(N_TESTS)]
FLAKY_ID = "tests/test_gen.py::test_flaky"
TESTS_PY = "from pkg import core\nimport os\nfrom pathlib import Path\n\n" + "".join(
    f"\ndef test_t{i:02d}():\n    assert core.VALUES[{i}] == {i}\n" for i in range(N_TESTS)) + """
def test_flaky():
    p = Path(os.environ["FLAKE_DIR"]) / "count"
    n = int(p.read_text()) if p.exists() else 0
    p.write_text(str(n + 1))
    assert n % 2 == 1, f"flaky run {n}"
"""


def plan(n: int) -> tuple[dict[int, range], int]:
    """Culprit positions (1-based in the range) -> the tests they break, and the unbuildable position."""
    return {round(n * 0.18) or 1: range(0, 7), round(n * 0.555): range(7, 14), round(n * 0.86): range(14, 20)}, n // 2


def _blob(path: str, text: str) -> str:
    return f"M 100644 inline {path}\ndata {len(text.encode())}\n{text}\n"


def make_repo(root: Path, n: int) -> tuple[git.Repo, list[str], dict[int, range], int]:
    """A repository of `n` commits after good, written with git fast-import (10,000 commits in seconds)."""
    culprits, unbuildable = plan(n)
    repo = git.Repo.init(root, initial_branch="main")
    values = list(range(N_TESTS))
    parts = []

    def commit(mark: int, subject: str, files: dict[str, str]) -> None:
        msg = subject.encode()
        parts.append(f"commit refs/heads/main\nmark :{mark}\n"
                     f"author Dev {mark % 7} <dev{mark % 7}@example.com> {1_700_000_000 + mark} +0000\n"
                     f"committer CI <ci@example.com> {1_700_000_000 + mark} +0000\n"
                     f"data {len(msg)}\n{subject}\n")
        parts.extend(_blob(p, t) for p, t in files.items())
        parts.append("\n")

    core = lambda: f"VALUES = {values!r}\n"  # noqa: E731
    commit(1, "initial import", {"pkg/__init__.py": "", "pkg/core.py": core(), "tests/test_gen.py": TESTS_PY,
                                 "pyproject.toml": '[tool.pytest.ini_options]\ntestpaths = ["tests"]\n'})
    for pos in range(1, n + 1):
        if pos in culprits:
            for i in culprits[pos]:
                values[i] = -1
            commit(pos + 1, f"core: rework values (#{1000 + pos})", {"pkg/core.py": core()})
        elif pos == unbuildable:
            commit(pos + 1, "wip: half-done refactor", {"pkg/core.py": core() + "def broken(:\n"})
        elif pos == unbuildable + 1:
            commit(pos + 1, "fix the build", {"pkg/core.py": core()})
        else:
            commit(pos + 1, f"docs: note {pos}", {"notes.txt": f"{pos}\n"})
    stream = "".join(parts).encode()
    subprocess.run(["git", "fast-import", "--quiet"], cwd=root, input=stream, check=True)
    repo.git.checkout("-f", "main")
    shas = repo.git.rev_list("--reverse", "main").split()
    return repo, shas, culprits, unbuildable


def expected(shas: list[str], culprits: dict[int, range]) -> dict[str, str]:
    return {TEST_IDS[i]: shas[pos] for pos, tests in culprits.items() for i in tests}


def run_harness(repo: Path, shas: list[str], workers: int, env: dict[str, str]) -> dict:
    reset_flaky(env)
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "bisect", "--repo", str(repo), "--good", shas[0],
                           "--bad", shas[-1], "-j", str(workers), "--retries", "3", "--json", "--no-store",
                           *TEST_IDS, FLAKY_ID], capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - started
    if proc.returncode not in (0, 1):
        raise SystemExit(f"harness bisect failed: {proc.stderr.strip()}")
    out = json.loads(proc.stdout)
    found = {t: c["commit"] for c in out["culprits"] for t in c["tests"]}
    return {"probes": out["probes"], "rounds": out["rounds"], "wall_s": wall, "found": found,
            "flaky": [f["test"] for f in out["flaky"]], "skipped": out["skipped_commits"]}


WRAPPER = """#!/bin/sh
echo x >> "$COUNT_FILE"
"$PYTHON" -m pytest -q -p no:cacheprovider -p no:harness "$1" >/dev/null 2>&1
rc=$?
[ $rc -eq 0 ] && exit 0
[ $rc -eq 1 ] && exit 1
exit 125
"""


def run_classic(repo: Path, shas: list[str], tmp: Path, env: dict[str, str]) -> dict:
    """One `git bisect run` per test in a separate clone (git bisect moves HEAD: never the user's)."""
    clone = tmp / "classic"
    shutil.rmtree(clone, ignore_errors=True)
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    wrapper = tmp / "run_test.sh"
    wrapper.write_text(WRAPPER)
    wrapper.chmod(0o755)
    count = tmp / "classic-count"
    count.write_text("")
    reset_flaky(env)
    cenv = {**env, "COUNT_FILE": str(count), "PYTHON": sys.executable}
    found: dict[str, str] = {}
    started = time.perf_counter()
    for test in [*TEST_IDS, FLAKY_ID]:
        g = lambda *a: subprocess.run(["git", *a], cwd=clone, env=cenv, capture_output=True, text=True)  # noqa: E731
        g("bisect", "start", "--first-parent", shas[-1], shas[0])
        g("bisect", "run", str(wrapper), test)
        bad = g("rev-parse", "--verify", "-q", "refs/bisect/bad").stdout.strip()
        found[test] = bad
        g("bisect", "reset")
    wall = time.perf_counter() - started
    steps = len(count.read_text().splitlines())
    return {"probes": steps, "rounds": steps, "wall_s": wall, "found": found}


def reset_flaky(env: dict[str, str]) -> None:
    (Path(env["FLAKE_DIR"]) / "count").unlink(missing_ok=True)


def check(result: dict, want: dict[str, str]) -> str:
    right = sum(result["found"].get(t) == sha for t, sha in want.items())
    return f"{right}/{len(want)}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--commits", type=int, default=128)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--scale", type=int, nargs="*", default=[1000, 10_000], help="larger ranges, harness only")
    ap.add_argument("--no-classic", action="store_true")
    ap.add_argument("--out", type=Path, help="write all figures as JSON here")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-bisect-"))
    env = {**os.environ, "FLAKE_DIR": str(tmp), "HARNESS_CACHE_DIR": str(tmp / "cache")}
    env.pop("HARNESS_DB_URL", None)
    rows, report = [], {"machine": os.uname().nodename, "cpus": os.cpu_count()}
    repo, shas, culprits, unbuildable = make_repo(tmp / "repo", args.commits)
    want = expected(shas, culprits)
    n = len(shas) - 1
    for label, fn in [("harness bisect -j 1", lambda: run_harness(repo.working_tree_dir, shas, 1, env)),
                      (f"harness bisect -j {args.workers}", lambda: run_harness(repo.working_tree_dir, shas,
                                                                                args.workers, env)),
                      *([] if args.no_classic else [("classic: git bisect run per test",
                                                     lambda: run_classic(Path(repo.working_tree_dir), shas, tmp, env))])]:
        res = fn()
        w = args.workers if f"-j {args.workers}" in label else 1
        bound = math.ceil(math.log(n, w + 1) - 1e-9) + 2
        rows.append((label, res, bound if label.startswith("harness") else None))
        report[label] = {k: v for k, v in res.items() if k != "found"} | {"culprits_right": check(res, want)}
    classic = next((r for lbl, r, _ in rows if lbl.startswith("classic")), None)
    print(f"\nN = {n} commits, {N_TESTS} new failures from {len(culprits)} culprits, 1 flaky test, "
          f"unbuildable commit at position {unbuildable}; {os.cpu_count()} CPUs\n")
    print("| approach | culprits right | flaky blamed? | pytest invocations | vs classic | rounds (bound) | wall s |")
    print("|---|---|---|---|---|---|---|")
    for label, res, bound in rows:
        ratio = f"{classic['probes'] / res['probes']:.1f}x fewer" if classic and res is not classic else "1x"
        flaky = "no (reported flaky)" if FLAKY_ID in res.get("flaky", []) else (
            "yes: " + res["found"].get(FLAKY_ID, "?")[:10] if res["found"].get(FLAKY_ID) else "no")
        print(f"| {label} | {check(res, want)} | {flaky} | {res['probes']} | {ratio} | {res['rounds']}"
              f"{f' (<= {bound})' if bound else ''} | {res['wall_s']:.1f} |")
    if args.scale:
        print("\n| commits in range | workers | pytest invocations | rounds (bound) | culprits right | wall s |")
        print("|---|---|---|---|---|---|")
        for size in [args.commits, *args.scale]:
            big_repo, big_shas, big_culprits, _ = make_repo(tmp / f"repo-{size}", size) if size != args.commits else (
                repo, shas, culprits, unbuildable)
            for w in (1, args.workers):
                res = run_harness(big_repo.working_tree_dir, big_shas, w, env)
                bound = math.ceil(math.log(size, w + 1) - 1e-9) + 2
                right = check(res, expected(big_shas, big_culprits))
                report[f"scale {size} -j {w}"] = {k: v for k, v in res.items() if k != "found"} | {"culprits_right": right}
                print(f"| {size} | {w} | {res['probes']} | {res['rounds']} (<= {bound}) | {right} | {res['wall_s']:.1f} |")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2, default=str))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
