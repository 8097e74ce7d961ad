"""The floor under `harness ingest` on this machine: what W concurrent writers could reach if every
cost but the unavoidable ones were gone (issue 12's "4 ingests at once >= 100k results/s").

Three measurements, on W bundles of N results shaped as `bench_ingest_concurrent.py` makes them:
- server: W `psql \\copy` clients (C, no Python) load pre-made COPY text of the product's rows into
  `test_results` of a fresh, migrated database at once; the wall rate is the server's ceiling with the
  table's unique key, history and signature indexes and the foreign key to `runs`, and no rollups; then
  the same into copies of the table with less: the unique key issue 12 asks for and the per-test history
  index the read paths need (bisect, triage, the test-history panel), no foreign key; then the unique key
  alone, the most any design keeping that key could get from this server;
- client, product: the product's per-line work in one Python process (line checks, `check_line`, then
  `FastWriter.prepare`: SHA-1 of the node id, sort, COPY text), CPU microseconds per result;
- client, bare: `json.loads` and the SHA-1 alone, the least any Python reader of JSON lines pays.
It prints the 2-core ceilings these imply: 2 / (client CPU per result + server CPU per result), where
the server's CPU per result is taken as 2 cores / its wall rate (an upper bound on the rate: the psql
clients' own CPU is counted as server's).

Usage: python benchmarks/bench_ingest_floor.py [--rows 250000] [--writers 4] [--db ADMIN_URL]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy import create_engine, text

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_ingest_concurrent import make_bundle  # noqa: E402
from scratch_db import scratch_database  # noqa: E402

from harness.store import Store  # noqa: E402
from harness.store.fastpath import ROW_COLUMNS, FastWriter  # noqa: E402
from harness.store.validate import check_line  # noqa: E402


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def product_lines(lines: list[bytes], writer: FastWriter) -> tuple[float, list[str]]:
    """CPU seconds of the product's per-line work, and the COPY lines it makes (without run id)."""
    start = _cpu()
    records = [r for r in (check_line(raw) for raw in lines) if r is not None]
    batch = writer.prepare(records)
    spent = _cpu() - start
    return spent, next(iter(batch.rows.values()))


def bare_lines(lines: list[bytes]) -> float:
    start = _cpu()
    sha1, loads = hashlib.sha1, json.loads
    for raw in lines:
        sha1(loads(raw)["nodeid"].encode()).hexdigest()
    return _cpu() - start


def copy_at_once(table: str, cols: str, copies: list[Path], env: dict[str, str], url: str, total: int) -> float:
    """Wall seconds for one `psql \\copy` per file into `table`, all at once; checks the row count."""
    start = time.perf_counter()
    procs = [subprocess.Popen(["psql", "-q", "-v", "ON_ERROR_STOP=1", "-c",
                               f"\\copy {table} ({cols}) FROM '{path}'"], env=env) for path in copies]
    codes = [p.wait() for p in procs]
    wall = time.perf_counter() - start
    assert codes == [0] * len(procs), codes
    engine = create_engine(url)
    with engine.connect() as conn:
        stored = conn.execute(text(f"SELECT count(*) FROM {table}")).scalar()  # table: a constant of this script
    engine.dispose()
    assert stored == total, (stored, total)
    return wall


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=250_000)
    ap.add_argument("--writers", type=int, default=4)
    ap.add_argument("--db", default="postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
    args = ap.parse_args()
    with scratch_database(args.db, "bench_floor") as url, tempfile.TemporaryDirectory() as tmp:
        run(args, url, Path(tmp))


def run(args: argparse.Namespace, url: str, tmp: Path) -> None:
    store = Store.open(url)  # migrated to head: the product's tables and indexes
    store.dispose()
    engine = create_engine(url)
    copies, product_cpu, bare_cpu = [], 0.0, 0.0
    writer = FastWriter(None, "%s")  # prepare() only: no connection needed
    with engine.begin() as conn:
        for w in range(args.writers):
            uuid = f"floor-{w}"
            bundle = tmp / f"b{w}.jsonl"
            make_bundle(bundle, args.rows, uuid)
            lines = [ln for ln in bundle.read_bytes().splitlines() if b'"kind":"result"' in ln]
            spent, rows = product_lines(lines, writer)
            product_cpu += spent
            bare_cpu += bare_lines(lines)
            run_id = conn.execute(text("INSERT INTO runs (uuid, started_at, status, gpu_count) VALUES "
                                       "(:u, now(), 'completed', 0) RETURNING id"), {"u": uuid}).scalar()
            path = tmp / f"c{w}.copy"
            path.write_text("".join(f"{run_id}\t{line}\n" for line in rows))
            copies.append(path)
    engine.dispose()
    parts = urlsplit(url.replace("+psycopg2", ""))
    cols = "run_id, " + ", ".join(ROW_COLUMNS)
    env = {**os.environ, "PGHOST": parts.hostname or "127.0.0.1", "PGPORT": str(parts.port or 5432),
           "PGUSER": parts.username or "postgres", "PGDATABASE": parts.path.lstrip("/")}
    total = args.rows * args.writers
    wall = copy_at_once("test_results", cols, copies, env, url, total)
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE floor_results (LIKE test_results INCLUDING DEFAULTS)"))
        conn.execute(text("CREATE UNIQUE INDEX ux_floor ON floor_results (run_id, nodeid_hash, attempt)"))
    engine.dispose()
    key_wall = copy_at_once("floor_results", cols, copies, env, url, total)
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE history_results (LIKE test_results INCLUDING DEFAULTS)"))
        conn.execute(text("CREATE UNIQUE INDEX ux_history ON history_results (run_id, nodeid_hash, attempt)"))
        conn.execute(text("CREATE INDEX ix_history ON history_results (nodeid_hash, run_id)"))
    engine.dispose()
    history_wall = copy_at_once("history_results", cols, copies, env, url, total)
    server_rate = total / wall
    server_us = 2 / server_rate * 1e6
    product_us, bare_us = product_cpu / total * 1e6, bare_cpu / total * 1e6
    print(f"writers={args.writers} rows={args.rows} each ({total} results), load {os.getloadavg()[0]:.1f}")
    print(f"server: {args.writers} psql \\copy at once: {wall:.2f} s, {server_rate:,.0f} results/s "
          f"(<= {server_us:.1f} us of 2 cores per result)")
    print(f"server, unique key + history index, no foreign key: {history_wall:.2f} s, "
          f"{total / history_wall:,.0f} results/s (<= {2 / (total / history_wall) * 1e6:.1f} us of 2 cores)")
    print(f"server, unique key only: {key_wall:.2f} s, {total / key_wall:,.0f} results/s")
    print(f"client, product (check_line + prepare): {product_us:.1f} us CPU per result")
    print(f"client, bare (json.loads + sha1): {bare_us:.1f} us CPU per result")
    print(f"2-core ceiling, product client + server, no rollups: {2e6 / (product_us + server_us):,.0f} results/s")
    print(f"2-core ceiling, bare client + server, no rollups: {2e6 / (bare_us + server_us):,.0f} results/s")
    history_us = 2 / (total / history_wall) * 1e6
    print(f"2-core ceiling, bare client + key and history only, no rollups: {2e6 / (bare_us + history_us):,.0f} "
          "results/s")


if __name__ == "__main__":
    main()
