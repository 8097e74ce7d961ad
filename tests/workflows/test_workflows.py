"""The GitHub Actions workflows: schema-valid, every `harness ...` line parsed by the real CLI, wired
to `harness plan`'s outputs and matrix keys, least privilege, no runner mapping outside the config."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from harness.plan import PlanRequest, github_outputs, make_plan
from harness.run.runner_groups import load_runner_groups
from tests.workflows.cli_lines import CommandLine, harness_commands, parse

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((REPO / "workflows").glob("*.yml"))
TOP_LEVEL = ["benchmark.yml", "daily.yml", "pr-slow.yml", "push-important-models.yml"]
REUSABLE = ["bisect.yml", "ingest.yml", "run-suites.yml"]
EXPR = re.compile(r"\$\{\{(.*?)\}\}", re.S)


def load(path: Path) -> dict[str, Any]:
    return YAML(typ="safe").load(path.read_text())


def steps(doc: dict[str, Any]):
    for job_id, job in doc["jobs"].items():
        for step in job.get("steps", []):
            yield job_id, step


def commands(path: Path) -> list[CommandLine]:
    return [c for job_id, step in steps(load(path)) if "run" in step
            for c in harness_commands(step["run"], f"{path.name}:{job_id}:{step.get('name', step['run'][:30])}")]


def test_the_expected_workflows_exist() -> None:
    assert [p.name for p in WORKFLOWS] == sorted(TOP_LEVEL + REUSABLE)


def test_every_workflow_validates_against_githubs_schema() -> None:
    """check-jsonschema's vendored `github-workflows` schema, offline (no network fetch)."""
    proc = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows",
                           *map(str, WORKFLOWS)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_schema_check_rejects_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text((REPO / "workflows" / "daily.yml").read_text().replace("runs-on: ubuntu-latest",
                                                                             "runs_on: ubuntu-latest", 1))
    proc = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows",
                           str(broken)], capture_output=True, text=True)
    assert proc.returncode == 1 and "runs_on" in proc.stdout + proc.stderr


ALL_COMMANDS = [c for p in WORKFLOWS for c in commands(p)]


@pytest.mark.parametrize("cmd", ALL_COMMANDS, ids=lambda c: f"{c.where}:{' '.join(c.argv[:2])}")
def test_every_harness_command_parses_with_the_real_cli(cmd: CommandLine) -> None:
    parse(cmd.argv)


def test_the_workflows_call_every_pipeline_verb() -> None:
    verbs = {parse(c.argv) for c in ALL_COMMANDS}
    assert verbs >= {"plan", "run", "db upgrade", "ingest", "pipeline triage-matrix", "pipeline daily", "new-failures", "bisect",
                     "notify slack", "perf-alerts"}
    assert all(any(c.where.startswith(p.name) for c in ALL_COMMANDS) for p in WORKFLOWS)


@pytest.mark.parametrize("argv", [("run", "--no-such-flag"), ("plan",), ("no-such-verb",),
                                  ("plan", "--event", "push", "--max-jobs", "many")])
def test_the_parse_check_catches_bad_command_lines(argv: tuple[str, ...]) -> None:
    with pytest.raises(Exception):  # noqa: B017 - click usage errors or an unknown verb
        parse(argv)


def test_command_extraction_handles_continuations_redirects_and_chains() -> None:
    script = 'set +e\nharness new-failures --run "$RUN_ID" \\\n  --json > nf.json\necho x && harness plan --event push # c\n'
    assert [c.argv for c in harness_commands(script, "s")] == [
        ("new-failures", "--run", "$RUN_ID", "--json"), ("plan", "--event", "push")]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_least_privilege_and_secrets_by_name(path: Path) -> None:
    doc, text = load(path), path.read_text()
    assert doc["permissions"] == {"contents": "read"}
    for job in doc["jobs"].values():
        assert job.get("permissions", {}) in ({}, {"contents": "read"})
        assert job.get("secrets") != "inherit"
    for _, step in steps(doc):
        # run scripts see values through env vars only: no expression (secret or event text) is pasted in
        assert "${{" not in step.get("run", ""), step
    for expr in EXPR.findall(text):
        for name in re.findall(r"secrets\.(\w+)", expr):
            assert expr.strip() == f"secrets.{name}", f"secret used in an expression: {expr}"


@pytest.mark.parametrize("name", TOP_LEVEL)
def test_top_level_workflows_have_concurrency_groups(name: str) -> None:
    doc = load(REPO / "workflows" / name)
    assert "${{" in doc["concurrency"]["group"] and "cancel-in-progress" in doc["concurrency"]


@pytest.mark.parametrize("name", REUSABLE)
def test_reusable_workflows_are_workflow_call_only(name: str) -> None:
    doc = load(REPO / "workflows" / name)
    assert list(doc["on"]) == ["workflow_call"] and "concurrency" not in doc


def test_reusable_calls_match_their_declared_inputs_and_secrets() -> None:
    calls = 0
    for path in WORKFLOWS:
        for job_id, job in load(path)["jobs"].items():
            if "uses" not in job:
                continue
            calls += 1
            target = REPO / "workflows" / Path(job["uses"]).name
            assert job["uses"] == f"./.github/workflows/{target.name}" and target.is_file()
            declared = load(target)["on"]["workflow_call"]
            inputs, secrets = declared.get("inputs", {}), declared.get("secrets", {})
            assert set(job.get("with", {})) <= set(inputs), (path.name, job_id)
            assert {k for k, v in inputs.items() if v.get("required")} <= set(job.get("with", {}))
            assert set(job.get("secrets", {})) <= set(secrets), (path.name, job_id)
            assert {k for k, v in secrets.items() if v.get("required")} <= set(job.get("secrets", {}))
    assert calls >= 9


def test_no_workflow_hard_codes_a_gpu_runner_group() -> None:
    gpu_names = [s.name for s in load_runner_groups() if s.gpu_count > 0] + ["single-gpu", "multi-gpu"]
    for path in WORKFLOWS:
        text = "\n".join(line for line in path.read_text().splitlines() if "--runner-groups" not in line)
        for name in gpu_names:
            assert not re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text), (path.name, name)
        for job in load(path)["jobs"].values():
            runs_on = job.get("runs-on")
            if isinstance(runs_on, dict):
                assert runs_on == {"group": "${{ matrix.runner }}"}
                assert job["container"]["options"] == "${{ matrix.container_options }}"


def matrix_keys(path: Path) -> set[str]:
    return set(re.findall(r"matrix\.(\w+)", path.read_text()))


def test_gpu_workflows_use_only_keys_the_plan_emits() -> None:
    plan = make_plan(PlanRequest(event="schedule", repo=str(REPO)))
    entry = plan["slices"][0]["include"][0]
    assert matrix_keys(REPO / "workflows" / "run-suites.yml") <= set(entry)
    assert matrix_keys(REPO / "workflows" / "daily.yml") - {"slice_id"} <= set(entry)
    assert "machine_type" in entry["artifact"] or entry["machine_type"] in entry["artifact"]
    upload = [s for _, s in steps(load(REPO / "workflows" / "run-suites.yml")) if "upload-artifact" in s.get("uses", "")]
    assert upload and "matrix.artifact" in upload[0]["with"]["name"]


def test_bisect_workflow_uses_only_keys_triage_matrix_emits() -> None:
    from harness.pipeline import TRIAGE_KEYS

    assert matrix_keys(REPO / "workflows" / "bisect.yml") <= set(TRIAGE_KEYS)
    upload = [s for _, s in steps(load(REPO / "workflows" / "bisect.yml")) if "upload-artifact" in s.get("uses", "")]
    assert "matrix.machine_type" in upload[0]["with"]["name"]


@pytest.mark.parametrize("name", TOP_LEVEL)
def test_plan_outputs_consumed_are_outputs_the_plan_writes(name: str) -> None:
    doc = load(REPO / "workflows" / name)
    plan_job = doc["jobs"]["plan"]
    written = set(github_outputs(make_plan(PlanRequest(event="schedule", repo=str(REPO)))))
    assert {re.search(r"steps\.plan\.outputs\.(\w+)", v).group(1) for v in plan_job["outputs"].values()} <= written
    used = set(re.findall(r"needs\.plan\.outputs\.(\w+)", (REPO / "workflows" / name).read_text()))
    assert used <= set(plan_job["outputs"]) and {"slices", "slice_ids", "empty"} <= used


def test_daily_chains_plan_run_ingest_bisect() -> None:
    doc = load(REPO / "workflows" / "daily.yml")
    assert set(doc["on"]) == {"schedule", "workflow_dispatch"}
    jobs = doc["jobs"]
    assert jobs["run"]["needs"] == "plan" and jobs["run"]["uses"].endswith("run-suites.yml")
    assert jobs["ingest"]["needs"] == ["plan", "run"] and "always()" in jobs["ingest"]["if"]
    assert jobs["bisect"]["needs"] == "ingest" and jobs["bisect"]["uses"].endswith("bisect.yml")
    assert "fromJson(needs.plan.outputs.slice_ids)" in jobs["run"]["strategy"]["matrix"]["slice_id"]


def test_pr_and_benchmark_workflows_are_label_gated() -> None:
    pr = load(REPO / "workflows" / "pr-slow.yml")
    assert "'run-slow'" in pr["jobs"]["plan"]["if"]
    bench = load(REPO / "workflows" / "benchmark.yml")
    assert "'run-benchmark'" in bench["jobs"]["plan"]["if"] and "refs/heads/main" in bench["jobs"]["plan"]["if"]
    assert set(bench["on"]) == {"push", "pull_request"}
