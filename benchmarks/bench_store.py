"""Read paths at scale: a store of N results built through `harness ingest`, then every dashboard query.

Usage: python benchmarks/bench_store.py [--rows 1000000] [--db ADMIN_URL] [--keep] [--reuse URL]
           [--models 300 --groups 3 --branches 3 --days 90 --benchmarks 5000] [--out FILE.json]

Shape (the 10M figure of issue 12 is `--rows 10000000`): every day, each branch x runner group runs all
models once (one run, one bundle); tests are spread over the four suites; ~1% of tests break for a few
days (new failures), ~4% skip, some pass on a retry. Bundles go in through `harness ingest` in a
subprocess, as CI does. Culprits and flaky records (written by bisect / confirmation, not by ingest)
are added with SQL. Then, with Grafana's macros and template variables expanded as Grafana does
(tests/report/grafana_sql.py, every variable at "All"), each panel, variable and annotation query runs
once to warm up and 5 times timed (once when the warm-up took over 2 s; a query past the 30 s
statement timeout, Grafana's default, is reported as such), over the last 7 and 90 days; `new-failures`, `notify slack
--dry-run` and `perf-alerts --no-save` are timed as subprocesses; table sizes are read from Postgres.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import Connection, TextClause, create_engine, text
from sqlalchemy.exc import OperationalError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.report.dashboards import boards  # noqa: E402
from tests.report.grafana_sql import expand  # noqa: E402

SUITES = ("slow", "fa2", "quantization", "benchmark")
JIT_ON = False  # --jit: time the panels with Postgres' JIT on (the server default), as before the role turned it off
TABLES = ("test_results", "runs", "benchmarks", "model_measurements", "device_measurements", "culprits",
          "flaky_tests", "perf_alerts")


def engine_of(url: str, **kw: object):  # noqa: ANN201 - sqlalchemy Engine
    """An engine on psycopg2 (SQLAlchemy 2.1 would pick psycopg 3 for a bare postgresql://)."""
    return create_engine(url.replace("postgresql://", "postgresql+psycopg2://", 1), **kw)


def _iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S+00:00")


def make_bundles(folder: Path, args: argparse.Namespace, now: datetime) -> list[Path]:
    """One bundle per (day, branch, runner group); returns their paths, oldest first."""
    rnd = random.Random(7)
    lanes = [(f"branch-{b}" if b else "main", g) for b in range(args.branches)
             for g in ("cpu", "single-gpu", "multi-gpu", "gpu-3", "gpu-4")[: args.groups]]
    runs = args.days * len(lanes)
    per_run = max(1, args.rows // runs)
    per_model = max(1, per_run // args.models)
    bench_per_run = max(1, args.benchmarks // runs)
    broken: dict[tuple[int, int], int] = {}  # (model, test) -> last broken day
    paths = []
    for day in range(args.days):
        start_day = now - timedelta(days=args.days - day)
        for m in range(args.models):  # ~1% of tests break for 1-5 days, on every lane at once
            for t in range(per_model):
                if rnd.random() < 0.002:
                    broken[(m, t)] = day + rnd.randint(1, 5)
        for li, (branch, group) in enumerate(lanes):
            uuid = f"bench-{day}-{li}"
            started = start_day + timedelta(minutes=10 * li)
            path = folder / f"{day:03d}-{li}.jsonl"
            lines = [json.dumps({"kind": "run", "uuid": uuid, "repo": "/src/models", "branch": branch,
                                 "commit_sha": f"{day:08x}{li:032x}", "commit_subject": f"commit of day {day}",
                                 "commit_author": "dev", "event": "schedule", "workflow": "daily",
                                 "runner_group": group, "gpu_name": "H100" if group != "cpu" else None,
                                 "gpu_count": 0 if group == "cpu" else 1, "suites": ",".join(SUITES),
                                 "models": "all", "started_at": _iso(started), "status": "running"})]
            for m in range(args.models):
                for t in range(per_model):
                    suite = SUITES[t % len(SUITES)]
                    outcome = "passed"
                    if broken.get((m, t), -1) >= day:
                        outcome = "failed"
                    elif (m * 31 + t) % 25 == 0:
                        outcome = "skipped"
                    msg = "AssertionError: logits differ (max abs 0.03)" if outcome == "failed" else None
                    node = f"tests/models/model_{m}/test_{suite}.py::test_case_{t}"
                    attempt_outcomes = [outcome]
                    if outcome == "passed" and rnd.random() < 0.002:
                        attempt_outcomes = ["failed", "passed"]
                    for a, o in enumerate(attempt_outcomes, start=1):
                        lines.append(json.dumps({
                            "kind": "result", "run": uuid, "nodeid": node, "outcome": o,
                            "duration_s": round(rnd.uniform(0.01, 3.0), 3), "model": f"model_{m}",
                            "suite": suite, "message": msg if o != "passed" else None, "attempt": a,
                            "worker": f"gw{t % 4}", "device": "cpu" if group == "cpu" else "cuda:0"}))
            for k in range(bench_per_run):
                m = (day * 7 + li * 3 + k) % args.models
                created = started + timedelta(minutes=1 + k)
                samples = [{"cpu_util": 50.0 + i, "mem_megabytes": 2000.0, "gpu_util": 80.0, "gpu_index": 0,
                            "gpu_mem_megabytes": 30000.0, "time": _iso(created + timedelta(seconds=i))}
                           for i in range(5)]
                lines.append(json.dumps({
                    "kind": "benchmark", "run": uuid, "nodeid": f"tests/bench/test_bench.py::test_gen[model_{m}]",
                    "model": f"model_{m}", "config": "default", "dtype": "bfloat16", "batch_size": 1,
                    "prompt_length": 128, "gpu_name": "H100", "created_at": _iso(created),
                    "measurements": {"time_to_first_token_secs": 0.5 + rnd.random() / 10,
                                     "time_to_next_token_mean_secs": 0.02 + rnd.random() / 100,
                                     "first_eager_forward_pass_time_secs": 0.3,
                                     "roofline": {"decode_efficiency": 0.6}},
                    "device_samples": samples}))
            lines.append(json.dumps({"kind": "run_end", "run": uuid, "status": "completed",
                                     "finished_at": _iso(started + timedelta(minutes=40))}))
            path.write_text("\n".join(lines) + "\n")
            paths.append(path)
    return paths


def harness(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness.cli", *argv], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", "")})


def build_store(url: str, paths: list[Path], chunk: int) -> float:
    """`harness ingest` of every bundle, `chunk` files per call; returns the seconds it took."""
    start = time.perf_counter()
    for i in range(0, len(paths), chunk):
        res = harness("ingest", *map(str, paths[i:i + chunk]), "--db", url)
        if res.returncode != 0:
            raise SystemExit(f"ingest failed ({res.returncode}): {res.stderr.strip()[-500:]}")
    return time.perf_counter() - start


def add_triage_rows(url: str) -> None:
    """Culprits and flaky records for some failing tests (bisect and confirmation write these)."""
    with engine_of(url).begin() as conn:
        conn.execute(text("""
INSERT INTO culprits (run_id, nodeid, nodeid_hash, commit_sha, author, subject, pr, method, confidence, created_at)
SELECT t.run_id, t.nodeid, t.nodeid_hash, r.commit_sha, 'dev', 'culprit', 1, 'bisect', 1.0, r.started_at
FROM (SELECT DISTINCT ON (nodeid_hash) run_id, nodeid, nodeid_hash FROM test_results
      WHERE outcome = 'failed' AND attempt = 1 ORDER BY nodeid_hash, run_id LIMIT 200) t
JOIN runs r ON r.id = t.run_id"""))
        conn.execute(text("""
INSERT INTO flaky_tests (nodeid, nodeid_hash, device, failures, attempts, first_seen, last_seen)
SELECT DISTINCT ON (nodeid_hash) nodeid, nodeid_hash, 'cuda:0', 1, 3, now(), now()
FROM test_results WHERE attempt = 2 ORDER BY nodeid_hash LIMIT 100"""))
        conn.execute(text("ANALYZE"))


def _stats(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"p50_ms": round(statistics.median(ordered) * 1000, 1), "p95_ms": round(p95 * 1000, 1)}


def _timed(conn: Connection, sql: TextClause, runs: int, timeout_s: float) -> dict[str, object]:
    """One warm-up, then `runs` timed executions (one only when the warm-up took over `slow_s`)."""
    try:
        t0 = time.perf_counter()
        rows = conn.execute(sql).mappings().all()
        warm = time.perf_counter() - t0
    except OperationalError:  # statement_timeout: Grafana's own limit is 30 s
        conn.rollback()
        return {"rows": None, "p50_ms": None, "p95_ms": None, "timed_out_s": timeout_s, "values": []}
    samples = []
    for _ in range(runs if warm < 2.0 else 1):
        t0 = time.perf_counter()
        conn.execute(sql).all()
        samples.append(time.perf_counter() - t0)
    return {"rows": len(rows), **_stats(samples), "runs": len(samples), "values": rows}


def time_queries(url: str, now: datetime, runs: int, timeout_s: float) -> list[dict[str, object]]:
    """Every dashboard query, variables at "All", over the last 7 and 90 days."""
    # As Grafana's role has them (dashboards/sql/grafana_reader.sql): statement timeout, JIT off unless --jit.
    jit = "on" if JIT_ON else "off"
    engine = engine_of(url, connect_args={"options": f"-c statement_timeout={int(timeout_s * 1000)} -c jit={jit}"})
    out = []
    with engine.connect() as conn:
        for days in (7, 90):
            span = {"time_from": _iso(now - timedelta(days=days)).replace("+00:00", "Z"),
                    "time_to": _iso(now).replace("+00:00", "Z")}
            for board in boards():
                values: dict[str, list[str]] = {}
                for var in board.variables:
                    if var["type"] == "custom":
                        values[var["name"]] = [var["current"]["value"]]
                for q in sorted(board.queries, key=lambda q: q.kind != "variable"):
                    res = _timed(conn, text(expand(q.sql, values, **span)), runs, timeout_s)
                    rows = res.pop("values")
                    if q.kind == "variable":
                        vals = [r["__value"] for r in rows] or ["(none)"]
                        values[q.where] = vals[:1] if q.where == "test" else vals  # one test, else "All"
                    out.append({"board": board.uid, "query": q.where, "kind": q.kind, "days": days, **res})
                    print(out[-1], flush=True)
    engine.dispose()
    return out


def time_cli(url: str, runs: int) -> list[dict[str, object]]:
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, argv in (("new-failures --json", ["new-failures", "--json", "--db", url]),
                           ("notify slack --dry-run", ["notify", "slack", "--dry-run", "--db", url,
                                                       "--out", f"{tmp}/slack.json"]),
                           ("perf-alerts --no-save", ["perf-alerts", "--no-save", "--json", "--db", url])):
            samples = []
            for _ in range(runs):
                t0 = time.perf_counter()
                res = harness(*argv)
                samples.append(time.perf_counter() - t0)
                if res.returncode not in (0, 1):
                    raise SystemExit(f"{name} failed ({res.returncode}): {res.stderr.strip()[-500:]}")
            out.append({"command": name, **_stats(samples)})
    return out


def table_sizes(url: str) -> dict[str, object]:
    with engine_of(url).connect() as conn:
        names = conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")).scalars().all()
        sizes = {n: conn.execute(text("SELECT pg_total_relation_size(:t)"), {"t": n}).scalar() for n in names}
        results = conn.execute(text("SELECT count(*) FROM test_results")).scalar() or 1
    return {"results": results, "bytes": sizes, "bytes_per_result": round(sum(sizes.values()) / results, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--models", type=int, default=300)
    ap.add_argument("--groups", type=int, default=3)
    ap.add_argument("--branches", type=int, default=3)
    ap.add_argument("--days", type=int, default=90)
    ap.add_argument("--benchmarks", type=int, default=5000)
    ap.add_argument("--runs", type=int, default=5, help="timed repetitions of each query")
    ap.add_argument("--chunk", type=int, default=30, help="bundles per `harness ingest` call")
    ap.add_argument("--db", default="postgresql://postgres@127.0.0.1:5432/postgres", help="admin URL")
    ap.add_argument("--reuse", help="time this existing store instead of building one")
    ap.add_argument("--keep", action="store_true", help="keep the database built")
    ap.add_argument("--out", help="also write the figures as JSON here")
    ap.add_argument("--timeout-s", type=float, default=30.0, help="statement timeout (Grafana's default 30 s)")
    ap.add_argument("--jit", action="store_true", help="panels with JIT on (the server default) instead of the role's off")
    ap.add_argument("--cli-only", action="store_true", help="with --reuse: time only the CLI verbs")
    args = ap.parse_args()
    global JIT_ON
    JIT_ON = args.jit
    now = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0, tzinfo=None)
    admin = engine_of(args.db, isolation_level="AUTOCOMMIT")
    url, name, report = args.reuse, None, {"args": vars(args), "load": os.getloadavg()}
    if url is None:
        name = f"bench_store_{int(time.time())}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = args.db.rsplit("/", 1)[0] + "/" + name
    try:
        if name:
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                paths = make_bundles(Path(tmp), args, now)
                print(f"{len(paths)} bundles written in {time.perf_counter() - t0:.0f}s", flush=True)
                report["ingest_s"] = round(build_store(url, paths, args.chunk), 1)
            add_triage_rows(url)
            print(f"ingest {report['ingest_s']}s", flush=True)
        else:
            with engine_of(url).connect() as conn:
                ts = conn.execute(text("SELECT max(started_at) FROM runs")).scalar()
            now = ts.replace(minute=0, second=0, microsecond=0) + timedelta(hours=2)
        report["sizes"] = table_sizes(url)
        report["queries"] = [] if args.cli_only else time_queries(url, now, args.runs, args.timeout_s)
        report["cli"] = time_cli(url, 3)
        report["load_after"] = os.getloadavg()
    finally:
        if name and not args.keep:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        elif name:
            print(f"kept {url}")
    print(f"results {report['sizes']['results']:,}  bytes/result {report['sizes']['bytes_per_result']}")
    print("| board | query | kind | days | rows | p50 ms | p95 ms |\n|---|---|---|---|---|---|---|")
    for q in report["queries"]:
        p50, p95 = (q["p50_ms"], q["p95_ms"]) if q["rows"] is not None else (f"> {args.timeout_s:.0f} s", "—")
        print(f"| {q['board']} | {q['query']} | {q['kind']} | {q['days']} | {q['rows']} | {p50} | {p95} |")
    for c in report["cli"]:
        print(f"| `harness {c['command']}` | p50 {c['p50_ms']} ms | p95 {c['p95_ms']} ms |")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
