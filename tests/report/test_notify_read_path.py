"""`harness notify slack --dry-run` on a store at the schema head reads through a plain DBAPI connection:
the real CLI in a subprocess imports neither SQLAlchemy nor the ORM entities (nor slack-sdk: nothing is
sent), and prints the payload the library gives through a `Store` (SQLAlchemy Connection), on both
backends."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from harness.report.slack import SlackConfig, notify_slack
from harness.store.db import Store

from .conftest import Populated
from .factory import cpu_regression

HEAVY = ("sqlalchemy", "harness.store.schema", "harness.store.db", "alembic", "slack_sdk")  # slack-sdk: to send only


def _dry_run(url: str, run_id: int) -> tuple[dict, set[str]]:
    """The CLI's payload and the modules it imported (`-X importtime` names every one, on stderr)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLACK_")}
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "harness.cli", "notify", "slack",
                           "--run", str(run_id), "--dry-run", "--db", url],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    modules = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines()
               if line.startswith("import time:") and "|" in line}
    assert "harness.report.data" in modules  # the importtime listing is there to judge
    return json.loads(proc.stdout), modules


def _heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))


def test_dry_run_imports_no_sqlalchemy_and_matches_library(store: Store) -> None:
    seeded = cpu_regression(store)  # new failures, a culprit, flaky evidence: every read of the report
    expected = notify_slack(store, SlackConfig(), run_id=seeded.run_id, dry_run=True).payload
    payload, modules = _dry_run(store.config.url, seeded.run_id)
    assert _heavy(modules) == []
    assert payload == expected


def test_dry_run_of_a_ci_matrix_matches_library(populated: Populated) -> None:
    """Two runner groups, culprit, flaky record and perf alerts (Postgres, real plugin runs)."""
    expected = notify_slack(Store.open(populated.url), SlackConfig(), run_id=populated.run_bad, dry_run=True).payload
    payload, modules = _dry_run(populated.url, populated.run_bad)
    assert _heavy(modules) == []
    assert payload == expected
