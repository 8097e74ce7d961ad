"""A store that fails mid-write: one stderr line, exit 2, no batch half-written, and running the same
`harness ingest` again completes the work. Real faults: a private Postgres server stopped mid-ingest,
a SQLite file that hits the file-size limit (disk full), read-only folders."""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psycopg2
import pytest
from sqlalchemy import create_engine, text

from harness.ingest import ingest
from harness.store import StoreError

from .private_pg import PrivatePostgres, unavailable

BATCH = 2000


def make_bundle(path: Path, results: int, uuid: str = "fault-run") -> Path:
    with open(path, "w") as fh:
        fh.write(f'{{"kind": "run", "uuid": "{uuid}", "branch": "main", "started_at": "2026-12-01T00:00:00Z"}}\n')
        for i in range(results):
            fh.write(f'{{"kind": "result", "run": "{uuid}", "nodeid": "tests/m{i % 20}/test_x.py::test_case_{i}", '
                     f'"outcome": "passed", "duration_s": 0.01, "model": "m{i % 20}", "suite": "slow"}}\n')
        fh.write(f'{{"kind": "run_end", "run": "{uuid}", "status": "completed", "finished_at": "2026-12-01T01:00:00Z"}}\n')
    return path


def harness(*args: str, prefix: tuple[str, ...] = (), preexec=None) -> subprocess.CompletedProcess:  # noqa: ANN001
    env = {**os.environ, "HARNESS_INGEST_BATCH": str(BATCH)}
    return subprocess.run([*prefix, sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True,
                          env=env, preexec_fn=preexec, timeout=300)


def assert_one_line_exit_2(proc: subprocess.CompletedProcess | subprocess.Popen, stderr: str) -> str:
    assert proc.returncode == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def count(url: str, sql: str = "SELECT count(*) FROM test_results") -> int:
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg2://"))
    with engine.connect() as conn:
        value = conn.execute(text(sql)).scalar()
    engine.dispose()
    return value


@pytest.fixture
def private_pg():
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    server = PrivatePostgres()
    server.start()
    yield server
    server.close()


def test_postgres_stopped_mid_ingest(private_pg: PrivatePostgres, tmp_path: Path) -> None:
    total = 100_000
    bundle = make_bundle(tmp_path / "big.jsonl", total)
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "ingest", str(bundle), "--db", private_pg.url],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "HARNESS_INGEST_BATCH": str(BATCH)})
    watch = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:  # stop the server once a batch is committed
        try:
            watch = watch or psycopg2.connect(private_pg.url, connect_timeout=2)
            watch.autocommit = True
            with watch.cursor() as cur:
                cur.execute("SELECT count(*) FROM test_results")
                if cur.fetchone()[0] > 0:
                    break
        except psycopg2.Error:  # no table yet: the ingest is still migrating
            pass
        time.sleep(0.01)
    private_pg.stop()
    out, err = proc.communicate(timeout=120)
    line = assert_one_line_exit_2(proc, err)
    assert "run the same ingest again" in line and "Traceback" not in out
    private_pg.start()
    stored = count(private_pg.url)
    # Whole batches only (the first holds the run header); batches commit without waiting for the WAL
    # flush, so the last moment's ones may be lost whole in the crash: the re-run writes them.
    assert stored < total and (stored == 0 or (stored + 1) % BATCH == 0)
    again = harness("ingest", str(bundle), "--db", private_pg.url, "--json")
    assert again.returncode == 0, again.stderr
    assert count(private_pg.url) == total
    assert count(private_pg.url, "SELECT count(*) FROM runs WHERE status = 'completed'") == 1


def test_sqlite_disk_full_mid_ingest(tmp_path: Path) -> None:
    total = 40_000
    bundle = make_bundle(tmp_path / "big.jsonl", total)
    db = tmp_path / "results.db"
    url = f"sqlite:///{db}"
    assert harness("db", "upgrade", "--db", url).returncode == 0
    limit = 3 * 1024 * 1024  # the file-size limit stands in for a full disk: writes past it fail (EFBIG)

    def small_disk() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    full = harness("ingest", str(bundle), "--db", url, preexec=small_disk)
    line = assert_one_line_exit_2(full, full.stderr)
    assert "run the same ingest again" in line
    stored = count(url)
    assert stored < total and (stored + 1) % BATCH == 0  # whole batches (the first holds the run header)
    again = harness("ingest", str(bundle), "--db", url)
    assert again.returncode == 0, again.stderr
    assert count(url) == total


def _unprivileged() -> tuple[str, ...]:
    """A prefix that makes root obey file permissions (drops the capabilities that bypass them)."""
    if os.geteuid() != 0:
        return ()
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: a read-only folder cannot be made read-only for root")
    return ("setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner,-linux_immutable", "--")


def test_read_only_folder_and_missing_parent(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "b.jsonl", 10)
    ro = tmp_path / "ro"
    ro.mkdir()
    url = f"sqlite:///{ro / 'results.db'}"
    assert harness("db", "upgrade", "--db", url).returncode == 0
    os.chmod(ro / "results.db", 0o444)
    os.chmod(ro, 0o555)
    try:
        for target in (url, f"sqlite:///{ro / 'missing' / 'parent' / 'results.db'}"):
            proc = harness("ingest", str(bundle), "--db", target, prefix=_unprivileged())
            line = assert_one_line_exit_2(proc, proc.stderr)
            assert "sqlite:///" in line, line
        assert not (ro / "missing").exists()
    finally:
        os.chmod(ro, 0o755)
        os.chmod(ro / "results.db", 0o644)
    assert count(url) == 0
    assert harness("ingest", str(bundle), "--db", url).returncode == 0
    assert count(url) == 10


def _connections(admin_url: str, database: str) -> list[tuple]:
    """Client connections to `database` still open (a closed one leaves the list within moments)."""
    conn = psycopg2.connect(admin_url.replace("+psycopg2", ""))
    conn.autocommit = True
    try:
        for _ in range(50):
            with conn.cursor() as cur:
                cur.execute("SELECT backend_type, state, query FROM pg_stat_activity WHERE datname = %s "
                            "AND backend_type = 'client backend'", (database,))
                rows = cur.fetchall()
            if not rows:
                break
            time.sleep(0.1)
        return rows
    finally:
        conn.close()


def test_failed_write_closes_its_connections(pg_url: str, tmp_path: Path) -> None:
    """A write refused by the server mid-ingest (a trigger stands in for a full disk): StoreError,
    and no connection of the ingest is left open (the fast writer's included)."""
    bundle = make_bundle(tmp_path / "b.jsonl", 5000)
    ingest([str(make_bundle(tmp_path / "first.jsonl", 1, uuid="first"))], pg_url)  # migrate
    engine = create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                          "IF (SELECT count(*) FROM test_results) >= 3000 THEN "
                          "RAISE EXCEPTION 'could not extend file: No space left on device'; END IF; "
                          "RETURN NEW; END $$"))
        conn.execute(text("CREATE TRIGGER refuse BEFORE INSERT ON test_results FOR EACH STATEMENT "
                          "EXECUTE FUNCTION refuse()"))
    engine.dispose()
    database = pg_url.rsplit("/", 1)[1]
    admin = pg_url.rsplit("/", 1)[0] + "/postgres"
    with pytest.raises(StoreError, match="No space left on device.*run the same ingest again"):
        ingest([str(bundle)], pg_url, batch_size=BATCH)
    assert _connections(admin, database) == []
    assert count(pg_url) == 1 + (BATCH - 1) + BATCH  # two whole batches (the first with the header), then none
