"""The daily workflow's own shell steps, executed from the YAML on this machine.

`run-suites.yml`'s run step (yesterday at the old commit, today at HEAD, a `harness plan` matrix entry
for the CPU runner group as `matrix`), then `ingest.yml`'s steps with the bundles as the downloaded
artifacts, then `bisect.yml`'s steps for each entry of the triage matrix that ingest wrote to
`$GITHUB_OUTPUT`. What Actions itself does (checkout, artifacts, containers) is done by the test;
every command line is the workflow's own. Slack is a local HTTP server standing in for Slack's Web
API; the database is the real Postgres server.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import git
import pytest
from sqlalchemy import create_engine, text

from harness.plan import PlanRequest, make_plan
from tests.e2e.actions import JobContext, run_job
from tests.e2e.target_repo import FLAKY_TEST, REGRESSING_TEST, make_target
from tests.e2e.test_daily_pipeline import TOKEN, SlackStandIn
from tests.report.fake_http import FakeServer

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
NOT_HERE = {"Install git", "Install harness", "Install harness (CPU torch)", "NVIDIA-SMI"}  # container setup, done by the test env


@pytest.fixture
def slack() -> Iterator[FakeServer]:
    server = FakeServer(SlackStandIn())
    yield server
    server.close()


def run_suites(checkout: Path, entry: dict, artifacts: Path, tmp: Path, env: dict[str, str]) -> None:
    """One run-suites.yml matrix job in `checkout`; its bundle 'uploaded' to `artifacts`."""
    steps = run_job(WORKFLOWS / "run-suites.yml", "run", cwd=checkout, ctx=JobContext(matrix=entry),
                    skip=NOT_HERE, extra_env=env, tmp=tmp)
    assert [s.name for s in steps] == ["Run ${{ matrix.suites }} for ${{ matrix.models }} on "
                                       "${{ matrix.machine_type }}"]
    assert steps[0].returncode in (0, 1), steps[0].stderr  # 1: tests failed; the bundle is uploaded always()
    artifacts.mkdir(exist_ok=True)
    for bundle in (checkout / ".harness" / "bundles").glob("*.jsonl"):
        shutil.copy(bundle, artifacts / bundle.name)


def test_daily_workflow_steps_ingest_triage_bisect_and_report(tmp_path: Path, pg_url: str,
                                                              slack: FakeServer) -> None:
    root = tmp_path / "target"
    shas = make_target(root)
    env = {"GITHUB_REF_NAME": "main", "GITHUB_EVENT_NAME": "schedule", "GITHUB_WORKFLOW": "Daily model CI",
           "FLAKY_MARKER": str(tmp_path / "flaky"), "HARNESS_CACHE_DIR": str(tmp_path / "cache"),
           "SLACK_API_URL": slack.url + "/api/", "SLACK_RETRY_BACKOFF_S": "0.01", "HARNESS_DB_URL": ""}
    plan = make_plan(PlanRequest(event="schedule", runner_groups=["cpu"], repo=str(root)))
    [entry] = plan["slices"][0]["include"]
    assert entry["runner_group"] == "cpu" and entry["models"] == "small,tiny"

    # yesterday's daily at the old commit (a clone, as a runner would have), today's at HEAD
    artifacts = tmp_path / "artifacts"
    yesterday = tmp_path / "yesterday"
    git.Repo(root).clone(yesterday).git.checkout(shas["good"])
    for checkout in (yesterday, root):
        run_suites(checkout, entry, artifacts, tmp_path, env)
    bundles = sorted(artifacts.glob("*.jsonl"))
    assert len(bundles) == 2

    # ingest.yml: the bundles arrive as downloaded artifacts in bundles/
    workspace = tmp_path / "ingest"
    shutil.copytree(artifacts, workspace / "bundles")
    steps = run_job(WORKFLOWS / "ingest.yml", "ingest", cwd=workspace, ctx=JobContext(secrets={"HARNESS_DB_URL": pg_url}),
                    skip=NOT_HERE, extra_env=env, tmp=tmp_path)
    assert [s.returncode for s in steps] == [0, 0, 0], [s.stderr for s in steps]
    outputs = steps[-1].outputs
    assert outputs["empty"] == "false"
    matrix = json.loads(outputs["matrix"])
    [triage] = matrix["include"]  # only today's run has candidates; yesterday's had no baseline
    assert (triage["commit"], triage["baseline_commit"]) == (shas["bad"], shas["good"])
    assert triage["candidates"] == 2 and triage["runner"] == entry["runner"]

    # bisect.yml on the runner group that ran it: confirm, bisect, report
    ctx = JobContext(matrix=triage, secrets={"HARNESS_DB_URL": pg_url, "SLACK_BOT_TOKEN": TOKEN},
                     inputs={"retries": 2, "workers": 2, "slack_channel": "#model-ci"})
    steps = run_job(WORKFLOWS / "bisect.yml", "bisect", cwd=root, ctx=ctx, skip=NOT_HERE, extra_env=env, tmp=tmp_path)
    assert [(s.name, s.returncode) for s in steps] == [
        ("Confirm new failures (rerun on this machine)", 0), ("Bisect the confirmed failures", 0),
        ("Report to Slack", 0)], [s.stderr[-2000:] for s in steps]
    found = json.loads((root / "new-failures.json").read_text())
    assert [d["nodeid"] for d in found["new"]] == [REGRESSING_TEST]
    assert [f["nodeid"] for f in found["flaky"]] == [FLAKY_TEST]
    bis = json.loads((root / "bisect.json").read_text())
    assert [(c["commit"], c["tests"]) for c in bis["culprits"]] == [(shas["culprit"], [REGRESSING_TEST])]
    report = json.loads((root / "slack-report.json").read_text())
    assert report["channel"] == "#model-ci" and shas["culprit"][:7] in json.dumps(report)
    posts = [r for r in slack.requests if r.path == "/api/chat.postMessage"]
    assert posts and all(r.headers["Authorization"] == f"Bearer {TOKEN}" for r in posts)
    assert TOKEN not in "".join(s.stdout + s.stderr for s in steps)

    engine = create_engine(pg_url)
    with engine.connect() as conn:
        runs = conn.execute(text("SELECT commit_sha, branch, event, machine_type FROM runs ORDER BY started_at")).all()
        culprit = conn.execute(text("SELECT nodeid, commit_sha, run_id FROM culprits")).all()
    engine.dispose()
    assert [(r.commit_sha, r.branch, r.event) for r in runs] == [(shas["good"], "main", "schedule"),
                                                                (shas["bad"], "main", "schedule")]
    assert runs[1].machine_type == entry["machine_type"]
    assert [(c.nodeid, c.commit_sha, c.run_id) for c in culprit] == [(REGRESSING_TEST, shas["culprit"], triage["run_id"])]
