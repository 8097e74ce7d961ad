"""`harness plan`: selection by event / changed files / labels, placement from runner_groups.toml,
slicing under GitHub's 256-job matrix cap, and the CLI verb (real subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.errors import HarnessError
from harness.plan import GITHUB_MATRIX_CAP, PlanRequest, classify, make_plan
from harness.run.runner_groups import default_runner, load_runner_groups
from harness.run.target import load_target

REPO = Path(__file__).resolve().parents[2]
SUITES_TOML = """
[tool.harness.suites.slow]
paths = ["suites/slow"]
[tool.harness.suites.quantization]
paths = ["suites/quantization"]
[tool.harness.suites.fa2]
paths = ["suites/fa2"]
runner_groups = ["single-gpu", "multi-gpu"]
[tool.harness.suites.benchmark]
paths = ["suites/benchmark"]
runner_groups = ["single-gpu"]
"""


def make_target(root: Path, models: list[str], important: list[str] | None = None) -> Path:
    """A target repo with model files (class ModelArgs) and shared code next to them."""
    (root / "models").mkdir(parents=True)
    for name in models:
        (root / "models" / f"{name}.py").write_text("class ModelArgs:\n    dim = 8\n")
    for shared in ("attention", "quantize", "kv_cache", "generate"):
        (root / "models" / f"{shared}.py").write_text("def helper():\n    return 1\n")
    head = f'[tool.harness]\nmodels_dir = "models"\nimportant = {json.dumps(important or [])}\n'
    (root / "pyproject.toml").write_text(head + SUITES_TOML)
    subprocess.run(["git", "init", "-q", str(root)], check=True)  # plan reads a git repository's description
    return root


@pytest.fixture
def target(tmp_path: Path) -> Path:
    return make_target(tmp_path / "target", ["gemma", "gpt2", "llama", "mistral", "mixtral"], ["llama", "mistral"])


def entries(plan: dict) -> list[dict]:
    return [e for s in plan["slices"] for e in s["include"]]


def cells(plan: dict) -> set[tuple[str, str, str]]:
    """(model, suite, runner) triples the plan runs."""
    return {(m, s, e["runner"]) for e in entries(plan) for m in e["models"].split(",") for s in e["suites"].split(",")}


@pytest.mark.parametrize("event", ["push", "pull_request"])
def test_docs_only_change_selects_nothing(target: Path, event: str) -> None:
    plan = make_plan(PlanRequest(event=event, changed_files=["README.md", "docs/guide.md", "harness/cli.py"],
                                 labels=["run-slow"], repo=str(target)))
    assert plan["empty"] is True and plan["jobs"] == 0 and plan["slices"] == [] and plan["models"] == []


@pytest.mark.parametrize("shared", ["models/attention.py", "models/quantize.py", "models/kv_cache.py",
                                    "models/generate.py", "suites/conftest.py", "pyproject.toml"])
def test_shared_code_change_selects_every_model(target: Path, shared: str) -> None:
    plan = make_plan(PlanRequest(event="push", changed_files=[shared, "README.md"], repo=str(target)))
    assert plan["models"] == ["gemma", "gpt2", "llama", "mistral", "mixtral"]
    assert plan["suites"] == ["fa2", "slow"]


def test_model_file_change_selects_that_model_only(target: Path) -> None:
    plan = make_plan(PlanRequest(event="push", changed_files=["models/mistral.py", "docs/x.md"], repo=str(target)))
    assert plan["models"] == ["mistral"]
    assert {e["models"] for e in entries(plan)} == {"mistral"}


def test_suite_change_keeps_its_suite_and_model_granularity(target: Path) -> None:
    plan = make_plan(PlanRequest(event="push", changed_files=["suites/fa2/test_fa2.py",
                                                             "suites/slow/expectations/gpt2.json"], repo=str(target)))
    got = {(m, s) for m, s, _ in cells(plan)}
    assert got == {(m, "fa2") for m in ["gemma", "gpt2", "llama", "mistral", "mixtral"]} | {("gpt2", "slow")}


def test_classify_rules(target: Path) -> None:
    t = load_target(target)
    assert classify("models/llama.py", t) == [({"llama"}, None)]
    assert classify("./models/attention.py", t) == [(None, None)]
    assert classify("suites/slow/test_logits.py", t) == [(None, {"slow"})]
    assert classify("suites/slow/expectations/gpt2.json", t) == [({"gpt2"}, {"slow"})]
    assert classify("workflows/daily.yml", t) == []
    assert classify("", t) == []


def test_pull_request_needs_its_label(target: Path) -> None:
    base = dict(event="pull_request", changed_files=["models/llama.py"], repo=str(target))
    assert make_plan(PlanRequest(**base))["empty"] is True
    slow = make_plan(PlanRequest(**base, labels=["run-slow"]))
    assert slow["suites"] == ["fa2", "quantization", "slow"]
    # every runner group each suite allows: slow and quantization on cpu too, fa2 only on GPUs
    assert {(s, e["runner_group"]) for e in entries(slow) for s in e["suites"].split(",")} == {
        (s, g) for s in ("slow", "quantization") for g in ("cpu", "single-gpu", "multi-gpu")} | {
        ("fa2", "single-gpu"), ("fa2", "multi-gpu")}
    bench = make_plan(PlanRequest(**base, labels=["run-benchmark"], suites=["benchmark"]))
    assert bench["suites"] == ["benchmark"] and {e["runner_group"] for e in entries(bench)} == {"single-gpu"}


def test_schedule_runs_everything_on_configured_runners(target: Path) -> None:
    plan = make_plan(PlanRequest(event="schedule", changed_files=["README.md"], repo=str(target)))
    specs = {s.name: s for s in load_runner_groups()}
    assert plan["models"] == ["gemma", "gpt2", "llama", "mistral", "mixtral"]
    for e in entries(plan):
        spec = specs[e["runner"]]  # every runner comes from runner_groups.toml, with its machine
        assert (e["machine_type"], e["gpu_count"], e["container_options"]) == (
            spec.machine_type, spec.gpu_count, spec.container_options)
        assert e["machine_type"] in e["artifact"]
    artifacts = [e["artifact"] for e in entries(plan)]
    assert len(artifacts) == len(set(artifacts))
    # slow runs on the default runner of each group; FA2 lands on a runner whose GPU can run it
    for group in ("single-gpu", "multi-gpu"):
        assert ("llama", "slow", default_runner(group).name) in cells(plan)
    fa2_gpus = {specs[r].gpu_name for m, s, r in cells(plan) if s == "fa2"}
    assert "Tesla T4" not in fa2_gpus and fa2_gpus


def test_important_only_and_explicit_runner(target: Path) -> None:
    single = default_runner("single-gpu").name
    plan = make_plan(PlanRequest(event="push", changed_files=["models/kv_cache.py"], important_only=True,
                                 runner_groups=[single], repo=str(target)))
    assert plan["models"] == ["llama", "mistral"] and plan["runners"] == [single]


def test_large_zoo_is_sliced_under_the_matrix_cap(tmp_path: Path) -> None:
    names = [f"m{i:03d}" for i in range(300)]
    root = make_target(tmp_path / "zoo", names)
    plan = make_plan(PlanRequest(event="schedule", repo=str(root), models_per_job=1))
    runners = {r for _, _, r in cells(plan)}
    assert plan["jobs"] == len(entries(plan)) and all("," not in e["models"] for e in entries(plan))
    assert len(plan["slices"]) == -(-plan["jobs"] // GITHUB_MATRIX_CAP) >= 2
    assert all(len(s["include"]) <= GITHUB_MATRIX_CAP for s in plan["slices"])
    assert plan["slice_ids"] == list(range(len(plan["slices"])))
    assert len(cells(plan)) == 300 * 3 * 2 and len(runners) >= 2  # every (model, suite, group) exactly once
    ids = [e["id"] for e in entries(plan)]
    assert len(ids) == len(set(ids))
    grouped = make_plan(PlanRequest(event="schedule", repo=str(root), models_per_job=10, max_jobs=50))
    assert cells(grouped) == cells(plan) and all(len(s["include"]) <= 50 for s in grouped["slices"])
    assert grouped["jobs"] == plan["jobs"] // 10 and len(grouped["slices"]) == -(-grouped["jobs"] // 50)


def test_default_is_one_job_per_runner_and_suite_set(target: Path) -> None:
    plan = make_plan(PlanRequest(event="schedule", repo=str(target)))
    jobs = entries(plan)
    assert len(jobs) == len({(e["runner"], e["suites"]) for e in jobs}) == plan["jobs"]
    assert all(e["models"] == "gemma,gpt2,llama,mistral,mixtral" for e in jobs)
    assert all(e["artifact"].endswith("_gemma-and-4-more") for e in jobs)


def test_this_repository_plans_its_own_models() -> None:
    plan = make_plan(PlanRequest(event="schedule", repo=str(REPO)))
    assert "llama" in plan["models"] and plan["jobs"] > 0


@pytest.mark.parametrize("bad, message", [
    (dict(event="nightly"), "unknown event"),
    (dict(event="schedule", models=["llama", "bert"]), "unknown model 'bert'"),
    (dict(event="schedule", suites=["fast"]), "unknown suite 'fast'"),
    (dict(event="schedule", runner_groups=["tpu-pod"]), "unknown runner group 'tpu-pod'"),
    (dict(event="schedule", max_jobs=257), "--max-jobs"),
    (dict(event="schedule", models_per_job=-1), "--models-per-job"),
])
def test_bad_input_is_one_clear_error(target: Path, bad: dict, message: str) -> None:
    with pytest.raises(HarnessError, match=message):
        make_plan(PlanRequest(repo=str(target), **bad))


def harness(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=cwd, capture_output=True, text=True)


def test_cli_prints_plan_and_writes_github_output(target: Path, tmp_path: Path) -> None:
    changed = tmp_path / "changed.txt"
    changed.write_text("models/gpt2.py\nREADME.md\n")
    out = tmp_path / "github_output"
    proc = harness("plan", "--event", "push", "--changed-files", "models/llama.py, docs/a.md",
                   "--changed-files-from", str(changed), "--github-output", str(out), cwd=target)
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert plan["models"] == ["gpt2", "llama"]
    outputs = dict(line.split("=", 1) for line in out.read_text().splitlines())
    assert outputs["empty"] == "false" and json.loads(outputs["slices"]) == plan["slices"]
    assert json.loads(outputs["slice_ids"]) == plan["slice_ids"]


def test_cli_not_a_git_repo_exits_2(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    proc = harness("plan", "--event", "push", "--changed-files", "a.py", "--repo", str(tmp_path / "plain"),
                   cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == "" and "not a git repository" in proc.stderr


def test_cli_bad_input_exits_2_with_one_line(target: Path) -> None:
    proc = harness("plan", "--event", "push", "--changed-files-from", "/nonexistent/changed.txt", cwd=target)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "cannot read changed files" in proc.stderr


def test_generic_target_plans_the_pseudo_model_all(tmp_path: Path) -> None:
    """No description: one suite `all`, pseudo-model `all` (what `harness run --models all` takes)."""
    root = tmp_path / "plain"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "core.py").write_text("X = 1\n")
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    plan = make_plan(PlanRequest(event="pull_request", changed_files=["pkg/core.py"], repo=str(root)))
    assert plan["models"] == ["all"] and plan["suites"] == ["all"]
    assert {e["runner_group"] for e in entries(plan)} == {"cpu", "single-gpu", "multi-gpu"}
    assert make_plan(PlanRequest(event="pull_request", changed_files=["README.md"], repo=str(root)))["empty"]
