"""Record real runs: pytest with the harness plugin writes a results bundle, the writer stores it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import select

from harness.bundle import read_bundle
from harness.store import Store
from harness.store.schema import Run
from harness.store.writer import write_records

PYPROJECT = '[tool.pytest.ini_options]\ntestpaths = ["tests"]\n'


def record_run(store: Store, repo: Path, bundle: Path, env: dict[str, str] | None = None) -> int:
    """Run the repo's tests at its current checkout with `--harness-bundle`, store the bundle; the run id."""
    clean = {k: v for k, v in os.environ.items() if k != "HARNESS_DB_URL"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--harness-bundle",
                           str(bundle)], cwd=repo, env={**clean, **(env or {})}, capture_output=True, text=True)
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    records = list(read_bundle(bundle))
    write_records(store, records)
    uuid = records[0].run
    with store.session() as s:
        return s.scalars(select(Run.id).where(Run.uuid == uuid)).one()
