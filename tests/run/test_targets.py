"""Targets: a repository laid out like transformers (preset), a custom `[tool.harness]` layout, a plain
repo with no config, and bad configuration — each a real git repo run through `harness run --repo`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.cli import main
from harness.run.target import load_target
from tests.run.test_run_cli import harness, make_repo, rows

SLOW_GATE = '''
import os
import pytest

slow = pytest.mark.skipif(os.environ.get("RUN_SLOW") != "1", reason="slow test: set RUN_SLOW=1")
'''

TRANSFORMERS_LAYOUT = {
    "src/mylib/__init__.py": "def add(a, b):\n    return a + b\n",
    "tests/models/llama/__init__.py": "",
    "tests/models/llama/test_modeling_llama.py": SLOW_GATE + '''
from mylib import add

def test_fast():
    assert add(1, 1) == 2

@slow
def test_slow_generation():
    assert add(2, 2) == 4

@pytest.mark.flash_attn_test
def test_fa2():
    assert add(3, 3) == 6
''',
    "tests/models/bert/__init__.py": "",
    "tests/models/bert/test_modeling_bert.py": "def test_bert():\n    assert True\n",
    "tests/quantization/bnb/test_4bit.py": "def test_4bit():\n    assert True\n",
    "conftest.py": "def pytest_configure(config):\n    config.addinivalue_line('markers', 'flash_attn_test: fa2')\n",
    "pyproject.toml": "[tool.pytest.ini_options]\npythonpath = ['src']\n",
}

CUSTOM_LAYOUT = {
    "pyproject.toml": '''
[tool.harness]
models = ["alpha", "beta"]
install = ""
important = ["alpha"]

[tool.harness.suites.slow]
paths = ["checks/{model}_checks.py"]
env = { DEEP = "1" }

[tool.harness.suites.quantization]
paths = ["checks/quant"]
''',
    "checks/alpha_checks.py": "import os\n\ndef test_alpha_deep():\n    assert os.environ['DEEP'] == '1'\n",
    "checks/beta_checks.py": "def test_beta():\n    assert True\n",
    "checks/quant/test_q.py": "def test_q():\n    assert True\n",
}


def test_transformers_preset_needs_no_config(tmp_path: Path, db_url: str) -> None:
    repo = tmp_path / "mylib"
    make_repo(repo, TRANSFORMERS_LAYOUT)
    target = load_target(repo)
    assert target.source.startswith("preset transformers") and target.models == ["bert", "llama"]
    proc = harness("run", "--repo", str(repo), "--models", "llama", "--suite", "slow,fa2,quantization",
                   "--db", db_url, "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    got = {(r["suite"], r["test"].split("::")[-1], r["outcome"]) for r in out["results"]}
    assert got == {
        ("slow", "test_fast", "passed"), ("slow", "test_slow_generation", "passed"), ("slow", "test_fa2", "passed"),
        ("fa2", "test_fa2", "passed"),
        ("quantization", "test_4bit", "passed"),
    }
    assert {r["model"] for r in out["results"] if r["suite"] != "quantization"} == {"llama"}
    run = rows(db_url, "SELECT repo, branch, commit_author FROM runs")[0]
    assert run.repo == str(repo) and run.branch == "main" and run.commit_author == "Ada Lovelace"


def test_custom_layout_from_tool_harness(tmp_path: Path, db_url: str) -> None:
    repo = tmp_path / "custom"
    make_repo(repo, CUSTOM_LAYOUT)
    proc = harness("run", "--repo", str(repo), "--models", "alpha", "--db", db_url, "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    got = {(r["suite"], r["test"], r["outcome"]) for r in json.loads(proc.stdout)["results"]}
    assert got == {("slow", "checks/alpha_checks.py::test_alpha_deep", "passed"),
                   ("quantization", "checks/quant/test_q.py::test_q", "passed")}


def test_plain_repo_models_match_test_paths(tmp_path: Path) -> None:
    repo = tmp_path / "plain"
    make_repo(repo, {"tests/test_llama_parts.py": "def test_x():\n    pass\n",
                     "tests/test_other.py": "def test_y():\n    pass\n"})
    proc = harness("run", "--repo", str(repo), "--models", "llama", "--db", f"sqlite:///{tmp_path}/r.db", "--json",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert [r["test"] for r in json.loads(proc.stdout)["results"]] == ["tests/test_llama_parts.py::test_x"]
    bad = harness("run", "--repo", str(repo), "--models", "gemma", cwd=tmp_path)
    assert bad.returncode == 2 and "unknown model 'gemma'" in bad.stderr


BAD_CONFIGS = {
    "unknown-top-key": ("[tool.harness]\nmodel = ['a']\n", "unknown key 'model'"),
    "suite-not-a-table": ("[tool.harness]\nsuites = { slow = 3 }\n", "key 'suites.slow' must be a table"),
    "bad-runner-group": ("[tool.harness.suites.slow]\nrunner_groups = ['gpu']\n",
                         "key 'suites.slow.runner_groups' has unknown group 'gpu'"),
    "paths-not-strings": ("[tool.harness.suites.slow]\npaths = [1]\n", "key 'suites.slow.paths' must be"),
    "unknown-suite-key": ("[tool.harness.suites.slow]\nmarker = 'x'\n", "unknown key 'suites.slow.marker'"),
    "invalid-toml": ("[tool.harness\n", "not valid TOML"),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
@pytest.mark.parametrize("verb", ["run", "targets-check"])
def test_bad_config_names_key_and_file(case: str, verb: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    body, expected = BAD_CONFIGS[case]
    repo = tmp_path / "bad"
    make_repo(repo, {"pyproject.toml": body, "tests/test_a.py": "def test_a():\n    pass\n"})
    monkeypatch.chdir(tmp_path)
    args = ["run", "--repo", str(repo), "--db", f"sqlite:///{tmp_path}/x.db"] if verb == "run" else \
        ["targets", "check", "--repo", str(repo)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expected in err and str(repo / "pyproject.toml") in err
    assert not (tmp_path / "x.db").exists() and not (tmp_path / ".harness").exists()


def test_targets_check_explains_selection(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = tmp_path / "mylib"
    make_repo(repo, TRANSFORMERS_LAYOUT)
    assert main(["targets", "check", "--repo", str(repo), "--models", "llama", "--suite", "fa2", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["models_known"] == ["bert", "llama"] and plan["install"] == "pip install -e ."
    (fa2,) = plan["suites"]
    assert fa2["paths"] == ["tests/models/llama"] and fa2["markers"] == "flash_attn_test"
    assert "model pattern 'tests/models/{model}'" in fa2["why"]


def test_this_repository_is_the_default_target() -> None:
    target = load_target(Path(__file__).resolve().parents[2])
    assert {"llama"} <= set(target.models) and target.models_env == "HARNESS_MODELS"
    assert set(target.suites) == {"slow", "fa2", "quantization", "benchmark"}


def test_harness_toml_wins_over_pyproject_and_presets_apply_by_key(tmp_path: Path) -> None:
    repo = tmp_path / "lib"
    make_repo(repo, {"harness.toml": "[tool.harness]\npreset = 'transformers'\nimportant = ['llama']\n"
                                     "[tool.harness.suites.slow]\nenv = { EXTRA = '1' }\n",
                     "pyproject.toml": "[tool.harness]\nmodels = ['ignored']\n",
                     "tests/models/llama/test_modeling_llama.py": "def test_a():\n    pass\n"})
    target = load_target(repo)
    assert target.source.endswith("harness.toml") and target.models == ["llama"]
    assert target.suites["slow"].env == {"RUN_SLOW": "1", "EXTRA": "1"}  # merged into the preset's suite
    assert target.install == "pip install -e ." and target.model_paths == "tests/models/{model}"


def test_unknown_key_names_the_valid_keys(tmp_path: Path) -> None:
    from harness.run.target import TargetConfigError

    repo = tmp_path / "lib"
    make_repo(repo, {"pyproject.toml": "[tool.harness]\nmodels = ['a']\n[tool.harness.attribution]\nid = {}\n"})
    with pytest.raises(TargetConfigError, match=r"unknown key 'attribution.id' \(valid keys of attribution: "
                                                r"path, params, ids, regex"):
        load_target(repo)


@pytest.mark.parametrize("nodeid, params, expected", [
    ("tests/test_model.py::test_forward[Llama-2-7b-hf]", {"name": "Llama-2-7b-hf"}, "llama"),
    ("tests/test_model.py::test_forward[gemma-3-4b-it]", {"name": "gemma-3-4b-it"}, "gemma"),
    ("tests/test_model.py::test_generate[2-tiny-llama-1.1b]", {"name": "tiny-llama-1.1b", "batch": 2}, "llama"),
    ("tests/test_model.py::test_forward[pythia-70m]", {"name": "pythia-70m"}, None),
    ("tests/models/bert/test_x.py::test_a", {}, "bert"),
    ("tests/test_x.py::test_a[mistral]", {"model_name": "mistral"}, "mistral"),
])
def test_attribution_rules(nodeid: str, params: dict, expected: str | None) -> None:
    from harness.run.attribution import AttributionRules, attribute

    rules = AttributionRules(ids=(("Llama-*", "llama"), ("gemma-*", "gemma")), path=("tests/models/{model}",),
                             regex="(?i)(?P<model>llama|mistral)")
    assert attribute(nodeid, params, ["llama", "gemma", "bert", "mistral"], rules) == expected
