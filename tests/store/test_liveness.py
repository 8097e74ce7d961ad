"""Liveness of runs written by other writers than `harness run`: `harness ingest` (the next writer) ends a
`running` run whose process died, and the plain-pytest sidecar's fast writer keeps its runs alive with
heartbeats, so a long `pytest --harness-db` session is never marked `abandoned` under it."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from harness.store import Store, lifecycle
from harness.store.bundle_files import read_lines
from harness.store.fastpath import FastWriter, connect
from harness.store.schema import utcnow
from harness.store.validate import RejectLog


def _bundle(path: Path, uuid: str, started_minutes_ago: float, ended: bool) -> Path:
    started = (utcnow() - timedelta(minutes=started_minutes_ago)).isoformat() + "+00:00"
    lines = [{"kind": "run", "uuid": uuid, "started_at": started, "suites": "slow"},
             {"kind": "result", "run": uuid, "nodeid": "t.py::test_a", "outcome": "passed", "duration_s": 0.1}]
    if ended:
        lines.append({"kind": "run_end", "run": uuid, "status": "completed", "finished_at": started})
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


def _ingest(db_url: str, *paths: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness.cli", "ingest", *map(str, paths), "--db", db_url],
                          capture_output=True, text=True, timeout=120)


def test_ingest_marks_a_dead_run_abandoned(db_url: str, tmp_path: Path) -> None:
    killed = _bundle(tmp_path / "killed.jsonl", "killed-run", started_minutes_ago=45, ended=False)
    live = _bundle(tmp_path / "live.jsonl", "live-run", started_minutes_ago=1, ended=False)
    done = _bundle(tmp_path / "done.jsonl", "done-run", started_minutes_ago=45, ended=True)
    proc = _ingest(db_url, killed, live, done)
    assert proc.returncode == 0, proc.stderr
    assert "marked 1 run(s) abandoned (no heartbeat): killed-run" in proc.stdout
    store = Store.open(db_url)
    try:
        assert {u: lifecycle.run_status(store, u) for u in ("killed-run", "live-run", "done-run")} == {
            "killed-run": "abandoned", "live-run": "running", "done-run": "completed"}
    finally:
        store.dispose()


def test_the_sidecar_writer_beats_for_its_runs(db_url: str, tmp_path: Path) -> None:
    path = _bundle(tmp_path / "long.jsonl", "long-session", started_minutes_ago=45, ended=False)
    store = Store.open(db_url)  # migrated: the fast writer writes only a store at head
    conn = connect(db_url)
    assert conn is not None
    writer = FastWriter(*conn)
    try:
        log = RejectLog(path)
        writer.write(list(read_lines(path, log)))
        log.close()
        assert log.count == 0
        assert writer.beat() == 1
        assert lifecycle.mark_abandoned(store, limit_s=600) == []  # started 45 min ago, but alive
        assert lifecycle.run_status(store, "long-session") == "running"
    finally:
        writer.close()
        store.dispose()
