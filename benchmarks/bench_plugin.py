"""Cost of the harness plugin: 400 trivial tests, plain pytest vs `--harness-db` (Postgres), side by side.

Runs alternate (plain, bundle only, plugin to Postgres, plain, ...) so drift hits all equally; the
figures are ratios of medians. After each plugin run the script waits, untimed, until the run's rollups
are refreshed (the sidecar's detached child does that after pytest exits) and reports that wait apart.
`--baseline DIR` adds the same two plugin runs with another checkout's `harness` first on PYTHONPATH
(e.g. a `git worktree` of main), in the same alternation: before / after side by side in one run.
Usage: python benchmarks/bench_plugin.py [--runs 11] [--tests 400] [--db URL] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scratch_db import scratch_database  # noqa: E402


def make_suite(root: Path, n: int) -> Path:
    body = f"import pytest\n\n@pytest.mark.parametrize('i', range({n}))\ndef test_trivial(i):\n    assert i >= 0\n"
    path = root / "test_trivial.py"
    path.write_text(body)
    return path


def timed(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(proc.stdout + proc.stderr)
    return elapsed


def settle(url: str) -> float:
    """Wait until no run's rollups are owed (the sidecar refreshes them in a detached child after pytest
    exits: harness/store/pending.py); returns the seconds waited."""
    from harness.store import pending

    engine = create_engine(url)
    start = time.perf_counter()
    with engine.connect() as conn:
        while pending.owed(conn):
            conn.rollback()
            time.sleep(0.005)
    engine.dispose()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=11)
    ap.add_argument("--tests", type=int, default=400)
    ap.add_argument("--db", default="postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--baseline", default=None, help="another checkout whose harness is timed alongside")
    args = ap.parse_args()
    base_env = {"PYTHONPATH": str(Path(args.baseline).resolve())} if args.baseline else None
    with scratch_database(args.db, "bench_plugin") as url, tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_suite(root, args.tests)
        base = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_trivial.py"]
        timed(base + ["--harness-db", url], root)  # warm-up; migrates the database once
        settle(url)
        plain, bundle, plugin, after, old_bundle, old_plugin = [], [], [], [], [], []
        for i in range(args.runs):
            plain.append(timed(base, root))
            bundle.append(timed(base + [f"--harness-bundle={root}/b{i}.jsonl"], root))
            plugin.append(timed(base + [f"--harness-db={url}"], root))
            after.append(settle(url))  # the sidecar's detached rollup refresh: not pytest's wall, not the next run's
            if base_env:
                old_bundle.append(timed(base + [f"--harness-bundle={root}/o{i}.jsonl"], root, base_env))
                old_plugin.append(timed(base + [f"--harness-db={url}"], root, base_env))
                settle(url)
        rows = create_engine(url).connect().execute(text("SELECT count(*) FROM test_results")).scalar()
        assert rows == args.tests * (args.runs * (2 if base_env else 1) + 1), rows
    mp, mb, mg = statistics.median(plain), statistics.median(bundle), statistics.median(plugin)
    print(f"tests={args.tests} runs={args.runs} (alternating) medians: plain {mp:.3f}s, bundle only {mb:.3f}s "
          f"({mb / mp:.3f}x), plugin->postgres {mg:.3f}s ({mg / mp:.3f}x); rows checked: {rows}; rollups settled "
          f"{statistics.median(after) * 1000:.0f} ms (median) after pytest exited")
    if base_env:
        ob, og = statistics.median(old_bundle), statistics.median(old_plugin)
        print(f"baseline {args.baseline}: bundle only {ob:.3f}s ({ob / mp:.3f}x), plugin->postgres {og:.3f}s "
              f"({og / mp:.3f}x)")


if __name__ == "__main__":
    main()
