"""`harness ingest` throughput: a bundle of N results (default 1,000,000) into a fresh Postgres database.

Usage: python benchmarks/bench_ingest.py [--rows 1000000] [--db ADMIN_URL]
Prints rows/s for the first ingest and the time of a second (idempotent, adds nothing) ingest.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from sqlalchemy import create_engine, text

from harness.bundle import BundleWriter, RunEnd, RunRecord
from harness.ingest import ingest


def make_bundle(path: Path, rows: int) -> None:
    with BundleWriter(path) as w:
        w.write(RunRecord(uuid="bench-run", branch="main", commit_sha="c" * 40, runner_group="cpu"))
        for i in range(rows):
            outcome = "failed" if i % 97 == 0 else "passed"
            w._fh.write(  # bypass per-line flush: generating the input is not what we measure
                f'{{"kind":"result","run":"bench-run","nodeid":"tests/models/m{i % 50}/test_modeling.py::'
                f'test_case_{i}[p{i % 7}]","outcome":"{outcome}","duration_s":0.0123,"model":"m{i % 50}",'
                f'"suite":"slow","message":null,"attempt":1,"worker":"gw{i % 4}","device":"cpu"}}\n')
        w.write(RunEnd(run="bench-run", status="completed", finished_at="2026-11-26T00:00:00+00:00"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--db", default="postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
    args = ap.parse_args()
    admin = create_engine(args.db, isolation_level="AUTOCOMMIT")
    name = f"bench_ingest_{int(time.time())}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = args.db.rsplit("/", 1)[0] + "/" + name
    try:
        with tempfile.TemporaryDirectory() as tmp:
            bundle = Path(tmp) / "big.jsonl"
            make_bundle(bundle, args.rows)
            ingest([str(bundle)], url)  # the first call also migrates; truncate to time data only
            with create_engine(url).begin() as conn:
                conn.execute(text("TRUNCATE test_results, runs RESTART IDENTITY CASCADE"))
            start = time.perf_counter()
            first = ingest([str(bundle)], url)
            elapsed = time.perf_counter() - start
            start = time.perf_counter()
            second = ingest([str(bundle)], url)
            again = time.perf_counter() - start
            count = create_engine(url).connect().execute(text("SELECT count(*) FROM test_results")).scalar()
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    assert count == args.rows and first.added.results == args.rows and second.added.results == 0
    print(f"rows={args.rows} first ingest {elapsed:.1f}s = {args.rows / elapsed:,.0f} rows/s; "
          f"second ingest (adds 0) {again:.1f}s; rows in table {count:,}")


if __name__ == "__main__":
    main()
