"""`harness run`'s bundle follower on one growing run: the time its polls take for N results written in
batches of 200 into a fresh SQLite store, the way a long run feeds it (then the run's end and `settle`).
Run it again with another checkout first on PYTHONPATH to compare.

Usage: python benchmarks/bench_follow.py [N]   (default 40000)
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import harness
from harness.store import Store
from harness.store.follow import BundleFollower

CHUNK = 200


def result_line(i: int) -> str:
    return json.dumps({"kind": "result", "run": "r", "nodeid": f"t/m{i % 50}/test_x.py::test_{i}", "outcome": "passed",
                       "duration_s": 0.01, "model": f"m{i % 50}", "suite": "slow"}) + "\n"


def timed(follower: BundleFollower) -> float:
    start = time.perf_counter()
    follower.poll()
    return time.perf_counter() - start


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 40_000
    tmp = Path(tempfile.mkdtemp())
    store = Store.open(f"sqlite:///{tmp / 'store.db'}")
    bundle = tmp / "run.jsonl"
    bundle.write_text("")
    follower = BundleFollower(store, bundle)
    spent = 0.0
    with open(bundle, "a") as fh:
        fh.write(json.dumps({"kind": "run", "uuid": "r", "branch": "main", "started_at": "2026-12-01T00:00:00+00:00"})
                 + "\n")
        for start in range(0, n, CHUNK):
            fh.writelines(result_line(i) for i in range(start, start + CHUNK))
            fh.flush()
            spent += timed(follower)
        fh.write(json.dumps({"kind": "run_end", "run": "r", "status": "completed",
                             "finished_at": "2026-12-01T01:00:00+00:00"}) + "\n")
        fh.flush()
        spent += timed(follower)
    start = time.perf_counter()
    getattr(follower, "settle", lambda: None)()  # older checkouts have no settle
    spent += time.perf_counter() - start
    store.dispose()
    print(f"{harness.__file__}: {n} results in batches of {CHUNK}: follower time {spent:.1f} s")


if __name__ == "__main__":
    main()
