"""Onboarding a model library from its description alone: `targets check`, `run` and `plan` through
the CLI on three real git repositories (transformers-style preset, one-file parametrised like litgpt,
a plain package), and broken descriptions refused with exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.onboarding.layouts import FAMILY, LITLIB, LITLIB_DESCRIPTION, harness, make_layout, pytest_count

# layout -> (suite checked on cpu, {model: pytest arguments that select that model's tests by hand})
EXPECTED_ARGS = {
    "litlib": ("unit", {m: ["tests/test_model.py", "-k", m] for m in ("llama", "gemma", "phi", "mistral")}),
    "transformers": ("slow", {m: [f"tests/models/{m}"] for m in ("bert", "gemma", "llama")}),
    "plain": ("all", {m: [f"tests/test_{m}.py"] for m in ("parser", "tokenizer")}),
}


@pytest.fixture(scope="module")
def repos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("onboarding")
    return {name: Path(make_layout(base / name, name).working_tree_dir) for name in EXPECTED_ARGS}


def check_json(root: Path, *extra: str) -> tuple[int, dict, str]:
    proc = harness("targets", "check", "--repo", str(root), "--json", *extra, cwd=root.parent)
    return proc.returncode, json.loads(proc.stdout) if proc.stdout.strip() else {}, proc.stderr


@pytest.mark.parametrize("layout", list(EXPECTED_ARGS))
def test_targets_check_counts_equal_plain_pytest_and_run_attributes_every_row(
        layout: str, repos: dict[str, Path], tmp_path: Path) -> None:
    root = repos[layout]
    suite, by_hand = EXPECTED_ARGS[layout]
    rc, plan, err = check_json(root, "--suite", suite)
    assert rc == 0, err
    (sp,) = plan["suites"]
    counts = {c["model"]: c for c in sp["counts"]}
    assert set(counts) == set(by_hand)
    for model, args in by_hand.items():
        expected = pytest_count(root, *args)
        assert expected > 0 and counts[model]["selected"] == expected, (model, counts[model], expected)
        assert counts[model]["attributed"] == expected

    proc = harness("run", "--repo", str(root), "--models", "all", "--suite", suite, "--runner-group", "cpu",
                   "-n", "1", "--db", f"sqlite:///{tmp_path}/r.db", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)["results"]
    per_model: dict[str, int] = {}
    for r in results:
        per_model[r["model"]] = per_model.get(r["model"], 0) + 1
    assert per_model == {m: c["selected"] for m, c in counts.items()}
    attributed = sum(1 for r in results if r["model"] in by_hand)
    assert results and attributed / len(results) >= 0.99
    if layout == "litlib":  # every row's family is the one its config name belongs to
        for r in results:
            name = next(c for c in FAMILY if c in r["test"].split("[", 1)[1])
            assert r["model"] == FAMILY[name], r["test"]


# (layout, event, changed files, labels) -> (models, {(suite, runner group)})
PLANS = [
    ("litlib", "pull_request", ["litlib/adapters/gemma.py"], [],
     ["gemma"], {("unit", "cpu"), ("unit", "single-gpu")}),
    ("litlib", "pull_request", ["litlib/model.py"], [], ["llama", "gemma"], {("unit", "cpu"), ("unit", "single-gpu")}),
    ("litlib", "push", ["README.md", "docs/a.md"], [], [], set()),
    ("transformers", "pull_request",
     ["src/transformers/models/llama/modeling_llama.py", "tests/models/llama/test_modeling_llama.py"], ["run-slow"],
     ["llama"], {("slow", g) for g in ("cpu", "single-gpu", "multi-gpu")} |
     {(s, g) for s in ("fa2", "quantization") for g in ("single-gpu", "multi-gpu")}),
    ("transformers", "pull_request", ["tests/models/bert/test_modeling_bert.py"], [], [], set()),  # no label
    ("plain", "pull_request", ["calc/tokenizer.py"], [], ["tokenizer"],
     {("all", g) for g in ("cpu", "single-gpu", "multi-gpu")}),
    ("plain", "push", ["calc/util.py"], [], ["parser", "tokenizer"], {("all", "single-gpu")}),
]


@pytest.mark.parametrize("layout, event, changed, labels, models, cells", PLANS,
                         ids=[f"{p[0]}-{p[1]}-{p[2][0]}" for p in PLANS])
def test_plan_maps_changed_files_through_the_description(layout: str, event: str, changed: list[str],
                                                         labels: list[str], models: list[str],
                                                         cells: set[tuple[str, str]],
                                                         repos: dict[str, Path]) -> None:
    root = repos[layout]
    proc = harness("plan", "--repo", str(root), "--event", event, "--changed-files", ",".join(changed),
                   *(["--labels", ",".join(labels)] if labels else []), cwd=root.parent)
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert plan["models"] == models
    got = {(s, e["runner_group"]) for sl in plan["slices"] for e in sl["include"] for s in e["suites"].split(",")}
    assert got == cells
    assert all(e["models"] == ",".join(models) for sl in plan["slices"] for e in sl["include"])


def _litlib_with(tmp_path: Path, description: str, files: dict[str, str] | None = None,
                 where: str = "pyproject.toml") -> Path:
    import git

    from tests.onboarding.layouts import commit

    root = tmp_path / "lib"
    root.mkdir(parents=True)
    repo = git.Repo.init(root, initial_branch="main")
    with repo.config_writer() as cw:
        cw.set_value("user", "name", "Dev").set_value("user", "email", "dev@example.com")
    body = {k: v for k, v in LITLIB.items() if k != "pyproject.toml"}
    commit(repo, {**body, where: description, **(files or {})}, "library")
    return root


BASE = LITLIB_DESCRIPTION
BROKEN = {
    "no-select-selects-everything": (BASE.replace('select = "-k {model}"\n', ""), "selects every collected test"),
    "k-in-paths": (BASE.replace('paths = ["tests/test_model.py"]', 'paths = ["-k llama"]'),
                   "is a pytest option, not a path"),
    "marker-template-unknown": (BASE.replace('label = ""', 'label = ""\nmarkers = "{model}"'),
                                "marker 'gemma' is neither registered nor used"),
    "models-env-not-read": (BASE.replace("[tool.harness]\n", '[tool.harness]\nmodels_env = "LIT_MODELS"\n'),
                            "models_env 'LIT_MODELS': no file of the repository reads it"),
    "select-without-model": (BASE.replace('select = "-k {model}"', 'select = "-k forward"'),
                             "does not contain {model}"),
    "unknown-key": (BASE.replace('select = "-k {model}"', 'keyword = "{model}"'),
                    "unknown key 'keyword' (valid keys: models,"),
    "missing-path": (BASE.replace('paths = ["tests/test_model.py"]', 'paths = ["tests/test_models.py"]'),
                     "path 'tests/test_models.py' does not exist"),
    "model-without-tests": (BASE.replace('"mistral"]', '"mistral", "qwen"]'), "model 'qwen' selects no test"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_descriptions_exit_2_naming_the_problem(case: str, tmp_path: Path) -> None:
    description, message = BROKEN[case]
    root = _litlib_with(tmp_path, description)
    proc = harness("targets", "check", "--repo", str(root), cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr


def test_node_id_paths_and_globs_select_like_pytest(tmp_path: Path) -> None:
    """A `paths` entry with `::` is a node id passed to pytest; a node-id `select` glob is honoured."""
    desc = BASE.replace('paths = ["tests/test_model.py"]', 'paths = ["tests/test_model.py::test_forward"]')
    root = _litlib_with(tmp_path, desc)
    rc, plan, err = check_json(root)
    assert rc == 0, err
    counts = {c["model"]: c["selected"] for c in plan["suites"][0]["counts"]}
    assert counts == {m: pytest_count(root, "tests/test_model.py::test_forward", "-k", m)
                      for m in ("llama", "gemma", "phi", "mistral")} == {"llama": 3, "gemma": 2, "phi": 1, "mistral": 1}
    globbed = BASE.replace('select = "-k {model}"', 'select = "tests/test_model.py::test_generate[*-{model}-*]"')
    globbed = globbed.replace('models = ["llama", "gemma", "phi", "mistral"]', 'models = ["gemma", "phi"]')
    globbed = globbed.replace('important = ["llama", "gemma"]', 'important = ["gemma"]')
    root2 = _litlib_with(tmp_path / "g", globbed)
    rc, plan, err = check_json(root2)
    assert rc == 0, err
    # test_generate[<batch>-<config>]: gemma-3-4b-it / gemma-2-2b match `*-gemma-*`, phi-2 matches `*-phi-*`
    assert {c["model"]: c["selected"] for c in plan["suites"][0]["counts"]} == {"gemma": 4, "phi": 2}
    proc = harness("run", "--repo", str(root2), "--models", "phi", "--runner-group", "cpu", "-n", "1",
                   "--db", f"sqlite:///{tmp_path}/r.db", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert sorted(r["test"] for r in json.loads(proc.stdout)["results"]) == [
        "tests/test_model.py::test_generate[1-phi-2]", "tests/test_model.py::test_generate[2-phi-2]"]


def test_harness_toml_accepts_tool_harness_but_not_both(tmp_path: Path) -> None:
    root = _litlib_with(tmp_path, "[tool.harness]\nmodels = ['llama']\nselect = '-k {model}'\n"
                        "[tool.harness.suites.unit]\npaths = ['tests/test_model.py']\n", where="harness.toml")
    rc, plan, err = check_json(root)
    assert rc == 0 and plan["source"].endswith("harness.toml"), err
    both = _litlib_with(tmp_path / "b", "models = ['llama']\n[tool.harness]\nmodels = ['llama']\n",
                        where="harness.toml")
    proc = harness("targets", "check", "--repo", str(both), cwd=tmp_path)
    assert proc.returncode == 2 and "top level or all under [tool.harness], not both" in proc.stderr
