"""A Postgres store holding real results: a temporary git repository whose tests are run by real
pytest processes with the harness plugin (`--harness-db`), at two commits and on two runner groups,
plus a stored benchmark series, a culprit and a flaky record (what bisect and triage would add)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import git
import pytest
from sqlalchemy import create_engine, select, text, update

from harness.report.perf_alerts import run_perf_alerts
from harness.store import rollups
from harness.store.db import Store
from harness.store.schema import Culprit, FlakyTest, Run, nodeid_hash
from tests.store.rollup_data import rollups_settled

from .factory import GPU, benchmark_series

PG_ADMIN_URL = os.environ.get("HARNESS_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")

LLAMA_V1 = '''
import pytest

def test_forward():
    pass

def test_generate():
    pass

def test_flaky():
    assert False, "timing-dependent: 3 of the last 10 attempts failed"
'''

LLAMA_V2 = '''
import pytest

def test_forward():
    pass

def test_generate():
    assert "<!channel>" == "&ok", "generate() produced <!channel> & <https://evil.example|click>"

def test_flaky():
    assert False, "timing-dependent: 3 of the last 10 attempts failed"
'''

MISTRAL = '''
import pytest

def test_forward():
    pass

@pytest.mark.skipif(True, reason="requires CUDA")
def test_needs_gpu():
    pass

def test_disabled():
    pytest.skip("disabled until the tokenizer fix lands")

def test_old_bug():
    raise ValueError("rotary embedding mismatch (known since spring)")
'''

BENCH = '''
def test_llama_benchmark(record_property):
    record_property("harness_benchmark", {
        "model": "llama", "config": None, "dtype": "float32", "batch_size": 1, "prompt_length": 8,
        "gpu_name": "NVIDIA A10G",
        "measurements": {"time_to_first_token_secs": 0.51, "time_to_second_token_secs": 0.02,
                         "time_to_third_token_secs": 0.02, "time_to_next_token_mean_secs": 0.019,
                         "first_eager_forward_pass_time_secs": 0.3,
                         "second_eager_forward_pass_time_secs": 0.1,
                         "first_compile_generate_time_secs": 9.0, "second_compile_generate_time_secs": 1.1,
                         "third_compile_generate_time_secs": 1.0, "fourth_compile_generate_time_secs": 1.0},
        "roofline": {"decode_efficiency": 0.41, "prefill_efficiency": 0.62},
        "device_samples": [{"cpu_util": 40.0, "mem_megabytes": 800.0, "gpu_util": 70.0,
                            "gpu_mem_megabytes": 9000.0, "gpu_index": 0}],
    })
'''


@dataclass
class Populated:
    """The database URL and the facts the tests check against."""

    url: str
    repo: Path
    good_sha: str
    bad_sha: str
    run_good: int
    run_bad: int
    run_bad_multi: int
    bench_commits: list[str]


def _commit(repo: git.Repo, root: Path, files: dict[str, str], subject: str) -> str:
    for name, body in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(body))
    repo.index.add(list(files))
    author = git.Actor("Ada Lovelace", "ada@example.com")
    return repo.index.commit(subject, author=author, committer=author).hexsha


def _pytest(root: Path, url: str) -> None:
    env = {**os.environ, "HARNESS_DB_URL": url}
    env.pop("PYTEST_XDIST_WORKER", None)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--harness-db", url,
                           "--harness-suite", "slow", "--harness-models", "llama,mistral", "tests"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr  # some tests fail on purpose
    assert "recorded" in proc.stdout and "NOT stored" not in proc.stdout, proc.stdout
    rollups_settled(url)  # refreshed by the sidecar's detached child right after "stored"


def _latest_run(store: Store) -> int:
    with store.session() as s:
        return s.execute(select(Run.id).order_by(Run.id.desc()).limit(1)).scalar_one()


def _as_ci(store: Store, run_id: int, group: str, gpus: int) -> None:
    """The CI metadata `harness run` records from GITHUB_* variables and the runner group."""
    with store.session() as s:
        s.execute(update(Run).where(Run.id == run_id).values(
            workflow="Nightly CI", event="schedule", runner_group=group, gpu_name=GPU, gpu_count=gpus,
            suites="slow"))
        rollups.refresh(s.connection(), [run_id])  # metadata changed outside the writers: keep rollups in step


def _populate(url: str, root: Path) -> Populated:
    repo = git.Repo.init(root, initial_branch="main")
    store = Store.open(url)
    good = _commit(repo, root, {"tests/test_llama.py": LLAMA_V1, "tests/test_mistral.py": MISTRAL,
                                "tests/test_bench.py": BENCH}, "Add llama and mistral tests")
    _pytest(root, url)
    run_good = _latest_run(store)
    _as_ci(store, run_good, "single-gpu", 1)
    bad = _commit(repo, root, {"tests/test_llama.py": LLAMA_V2},
                  "Speed up generate <!channel> & <https://evil.example|x>")
    _pytest(root, url)
    run_bad = _latest_run(store)
    _as_ci(store, run_bad, "single-gpu", 1)
    _pytest(root, url)
    run_multi = _latest_run(store)
    _as_ci(store, run_multi, "multi-gpu", 2)
    generate = "tests/test_llama.py::test_generate"
    flaky = "tests/test_llama.py::test_flaky"
    with store.session() as s:
        s.add(Culprit(run_id=run_bad, nodeid=generate, nodeid_hash=nodeid_hash(generate), commit_sha=bad,
                      author="Ada Lovelace", email="ada@example.com",
                      subject="Speed up generate <!channel> & <https://evil.example|x>", pr=42,
                      good_sha=good, bad_sha=bad))
        s.add(FlakyTest(nodeid=flaky, nodeid_hash=nodeid_hash(flaky), device="cpu", failures=3, attempts=10,
                        last_run_id=run_bad))
    commits = benchmark_series(store, n=40, step_at=30, salt="series")
    run_perf_alerts(store)
    store.dispose()
    return Populated(url, root, good, bad, run_good, run_bad, run_multi, commits)


@pytest.fixture(scope="session")
def populated(worker_id: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Populated]:
    """A Postgres database of this xdist worker, filled once per session with real results."""
    name = f"harness_report_{uuid.uuid4().hex[:8]}_{worker_id}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))  # name made here, not user input
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield _populate(url, tmp_path_factory.mktemp("target"))
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
