"""Concurrent `harness ingest`: W processes at once, each with its own bundle of N results, into one
fresh Postgres database (the product's CLI, as CI jobs call it).

Usage: python benchmarks/bench_ingest_concurrent.py [--rows 250000] [--writers 4] [--db ADMIN_URL]
       [--baseline]  (also time one process ingesting all W bundles' rows, for comparison)
       [--private-server]  (a throw-away Postgres of this benchmark alone, tests/store/private_pg.py:
                            its CPU time is then measured too, beside the ingest processes')
Prints the aggregate results/s (total results / wall time from the first start to the last exit)
and checks that nothing was lost or doubled: exactly W runs and W x N results, each process
reporting its own N as new, no process failing. CPU microseconds per result (ingest processes, and
the server with --private-server) do not depend on what else the machine runs, unlike the wall rate;
"2-core ceiling" is the rate two idle cores would give at that CPU cost.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import create_engine, text


def make_bundle(path: Path, rows: int, uuid: str) -> None:
    """A bundle like a CI job's: header, N results over 50 models, run end."""
    with open(path, "w") as fh:
        fh.write(json.dumps({"kind": "run", "uuid": uuid, "branch": "main", "commit_sha": "c" * 40,
                             "runner_group": "cpu", "started_at": "2026-12-01T00:00:00+00:00"}) + "\n")
        for i in range(rows):
            outcome = "failed" if i % 97 == 0 else "passed"
            fh.write(f'{{"kind":"result","run":"{uuid}","nodeid":"tests/models/m{i % 50}/test_modeling.py::'
                     f'test_case_{i}[p{i % 7}]","outcome":"{outcome}","duration_s":0.0123,"model":"m{i % 50}",'
                     f'"suite":"slow","message":null,"attempt":1,"worker":"gw{i % 4}","device":"cpu"}}\n')
        fh.write(json.dumps({"kind": "run_end", "run": uuid, "status": "completed",
                             "finished_at": "2026-12-01T01:00:00+00:00"}) + "\n")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def server_cpu(data_dir: Path | None) -> float:
    """CPU seconds used so far by a private server: its postmaster, the children it reaped, and the
    children alive now (read from /proc)."""
    if data_dir is None:
        return 0.0
    tick = os.sysconf("SC_CLK_TCK")
    master = int((data_dir / "postmaster.pid").read_text().split()[0])

    def fields(pid: int) -> list[str]:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()

    mine = fields(master)
    total = sum(int(v) for v in mine[11:15])  # utime stime cutime cstime
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != master:
            try:
                f = fields(int(entry.name))
            except OSError:
                continue
            if int(f[1]) == master:
                total += int(f[11]) + int(f[12])
    return total / tick


def ingest_at_once(bundles: list[list[Path]], url: str) -> tuple[float, list[dict]]:
    """Start one `harness ingest` per group of bundles at the same moment; wall seconds and reports."""
    start = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-m", "harness.cli", "ingest", *map(str, group), "--db", url,
                               "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for group in bundles]
    outs = [p.communicate() for p in procs]
    wall = time.perf_counter() - start
    for p, (_, err) in zip(procs, outs, strict=True):
        if p.returncode != 0:
            raise SystemExit(f"an ingest failed (exit {p.returncode}): {err.strip()}")
    return wall, [json.loads(out) for out, _ in outs]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=250_000, help="results per bundle")
    ap.add_argument("--writers", type=int, default=4)
    ap.add_argument("--db", default="postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
    ap.add_argument("--baseline", action="store_true", help="also one process ingesting every bundle")
    ap.add_argument("--private-server", action="store_true", help="a Postgres server of this benchmark alone")
    args = ap.parse_args()
    server = None
    if args.private_server:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from tests.store.private_pg import PrivatePostgres

        server = PrivatePostgres()
        server.start()
        args.db = server.url.replace("postgresql://", "postgresql+psycopg2://")
    try:
        run(args, server.data if server else None)
    finally:
        if server is not None:
            server.close()


def run(args: argparse.Namespace, data_dir: Path | None) -> None:
    admin = create_engine(args.db, isolation_level="AUTOCOMMIT")
    name = f"bench_concurrent_{int(time.time())}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))  # identifier made here
    url = args.db.rsplit("/", 1)[0] + "/" + name
    engine = create_engine(url)
    total = args.rows * args.writers
    try:
        with tempfile.TemporaryDirectory() as tmp:
            bundles = [Path(tmp) / f"job{w}.jsonl" for w in range(args.writers)]
            for w, path in enumerate(bundles):
                make_bundle(path, args.rows, f"bench-job-{w}")
            subprocess.run([sys.executable, "-m", "harness.cli", "db", "upgrade", "--db", url], check=True,
                           capture_output=True)
            results = []

            def timed(label: str, groups: list[list[Path]]) -> list[dict]:
                cpu, server = _children_cpu(), server_cpu(data_dir)
                wall, reports = ingest_at_once(groups, url)
                results.append((label, wall, _children_cpu() - cpu, server_cpu(data_dir) - server))
                return reports

            if args.baseline:
                timed("1 process, all bundles", [bundles])
                with engine.begin() as conn:
                    conn.execute(text("TRUNCATE test_results, runs RESTART IDENTITY CASCADE"))
            reports = timed(f"{args.writers} processes at once", [[b] for b in bundles])
            with engine.connect() as conn:
                runs = conn.execute(text("SELECT count(*) FROM runs")).scalar()
                stored = conn.execute(text("SELECT count(*) FROM test_results")).scalar()
                distinct = conn.execute(text("SELECT count(DISTINCT (run_id, nodeid_hash, attempt)) "
                                             "FROM test_results")).scalar()
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    assert runs == args.writers and stored == distinct == total, (runs, stored, distinct)
    assert [r["added"]["results"] for r in reports] == [args.rows] * args.writers, reports
    assert [r["added"]["runs"] for r in reports] == [1] * args.writers, reports
    load = os.getloadavg()[0]
    for label, wall, cpu, server in results:
        per = (cpu + server) / total * 1e6
        print(f"{label}: {total:,} results in {wall:.1f} s = {total / wall:,.0f} results/s (load {load:.1f}); "
              f"CPU per result: ingest {cpu / total * 1e6:.1f} us"
              + (f" + server {server / total * 1e6:.1f} us = {per:.1f} us, 2-core ceiling "
                 f"{2e6 / per:,.0f} results/s" if data_dir else ""))
    print(f"checked: {runs} runs, {stored:,} results, none lost or doubled")


if __name__ == "__main__":
    main()
