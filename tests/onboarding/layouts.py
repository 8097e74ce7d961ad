"""Three small model libraries, each a real git repository with a few commits, laid out the ways
docs/TARGETS.md describes: transformers-style (a folder per model, no description: the preset),
one-file parametrised like litgpt (configs named `Llama-2-7b-hf`, `gemma-3-4b-it`), and a plain
package (harness.toml with its keys under [tool.harness])."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import git

# ---- one-file parametrised (litgpt-like) ------------------------------------------------------------
CONFIGS = ["Llama-2-7b-hf", "Llama-3.1-8B-Instruct", "tiny-llama-1.1b", "gemma-3-4b-it", "gemma-2-2b",
           "phi-2", "Mistral-7B-v0.1", "pythia-70m"]
FAMILY = {"Llama-2-7b-hf": "llama", "Llama-3.1-8B-Instruct": "llama", "tiny-llama-1.1b": "llama",
          "gemma-3-4b-it": "gemma", "gemma-2-2b": "gemma", "phi-2": "phi", "Mistral-7B-v0.1": "mistral"}
LITLIB_DESCRIPTION = '''
[tool.harness]
models = ["llama", "gemma", "phi", "mistral"]
important = ["llama", "gemma"]
model_sources = ["litlib/adapters/{model}.py"]
core = ["litlib/model.py", "litlib/config.py"]
core_selects = "important"
select = "-k {model}"

[tool.harness.attribution]
regex = "(?i)(?P<model>llama|gemma|phi|mistral)"

[tool.harness.suites.unit]
paths = ["tests/test_model.py"]
runner_groups = ["cpu", "single-gpu"]
label = ""
'''
LITLIB = {
    "pyproject.toml": LITLIB_DESCRIPTION,
    "litlib/__init__.py": "",
    "litlib/config.py": f"CONFIGS = {CONFIGS!r}\n",
    "litlib/model.py": "def forward(name):\n    return len(name)\n",
    "litlib/adapters/__init__.py": "",
    "litlib/adapters/llama.py": "ROPE = 10000\n",
    "litlib/adapters/gemma.py": "SOFTCAP = 30\n",
    "tests/test_model.py": '''import pytest

from litlib.config import CONFIGS
from litlib.model import forward


@pytest.mark.parametrize("name", CONFIGS)
def test_forward(name):
    assert forward(name) > 0


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("batch", [1, 2])
def test_generate(name, batch):
    assert forward(name) * batch > 0


def test_config_names_are_unique():
    assert len(set(CONFIGS)) == len(CONFIGS)
''',
    "tests/data/test_tinyllama.py": "def test_loader():\n    assert True\n",
}

# ---- transformers-style (preset, no description) ----------------------------------------------------
TF_MODELS = ("llama", "gemma", "bert")


def _tf_test(name: str, extra: int) -> str:
    body = '''import os

import pytest

from transformers.models.{m}.modeling_{m} import NAME

slow = pytest.mark.skipif(os.environ.get("RUN_SLOW") != "1", reason="set RUN_SLOW=1")


def test_config():
    assert NAME == "{m}"


@slow
def test_integration():
    assert NAME


@pytest.mark.flash_attn_test
def test_flash_attention():
    assert NAME
'''.replace("{m}", name)
    return body + "".join(f"\n\ndef test_extra_{i}():\n    assert NAME\n" for i in range(extra))


TRANSFORMERS = {
    "pyproject.toml": "[tool.pytest.ini_options]\npythonpath = ['src']\n",
    "conftest.py": "def pytest_configure(config):\n    config.addinivalue_line('markers', 'flash_attn_test: fa2')\n",
    "src/transformers/__init__.py": "",
    "src/transformers/modeling_utils.py": "def init_weights():\n    return 0\n",
    "src/transformers/models/__init__.py": "",
    **{f"src/transformers/models/{m}/__init__.py": "" for m in TF_MODELS},
    **{f"src/transformers/models/{m}/modeling_{m}.py": f"NAME = {m!r}\n" for m in TF_MODELS},
    **{f"tests/models/{m}/__init__.py": "" for m in TF_MODELS},
    **{f"tests/models/{m}/test_modeling_{m}.py": _tf_test(m, i) for i, m in enumerate(TF_MODELS)},
    "tests/quantization/bnb/test_4bit.py": "def test_4bit():\n    assert True\n",
}

# ---- plain package (harness.toml, keys under [tool.harness]) ----------------------------------------
PLAIN = {
    "harness.toml": '''[tool.harness]
models = ["parser", "tokenizer"]
model_paths = "tests/test_{model}.py"
model_sources = ["calc/{model}.py"]
core = ["calc/util.py"]
''',
    "calc/__init__.py": "",
    "calc/util.py": "def strip(s):\n    return s.strip()\n",
    "calc/parser.py": "from calc.util import strip\n\ndef parse(s):\n    return strip(s).split('+')\n",
    "calc/tokenizer.py": "def tokens(s):\n    return s.split()\n",
    "tests/test_parser.py": "from calc.parser import parse\n\ndef test_parse():\n    assert parse(' 1+2 ') == ['1', '2']\n"
                            "\n\ndef test_parse_one():\n    assert parse('1') == ['1']\n",
    "tests/test_tokenizer.py": "from calc.tokenizer import tokens\n\ndef test_tokens():\n    assert tokens('a b') == ['a', 'b']\n",
    "tests/test_util_shared.py": "from calc.util import strip\n\ndef test_strip():\n    assert strip(' x ') == 'x'\n",
}

LAYOUTS = {"litlib": LITLIB, "transformers": TRANSFORMERS, "plain": PLAIN}


def commit(repo: git.Repo, files: dict[str, str], message: str) -> str:
    root = Path(repo.working_tree_dir)
    for name, body in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body)
    repo.git.add("-A")
    repo.git.commit("-q", "-m", message)
    return repo.head.commit.hexsha


def make_layout(path: Path, name: str) -> git.Repo:
    """The layout's repository with three commits: the library, a docs change, a small code change."""
    path.mkdir(parents=True)
    repo = git.Repo.init(path, initial_branch="main")
    with repo.config_writer() as cw:
        cw.set_value("user", "name", "Dev").set_value("user", "email", "dev@example.com")
    commit(repo, LAYOUTS[name], "library")
    commit(repo, {"README.md": f"# {name}\n"}, "docs")
    commit(repo, {"CHANGELOG.md": "- nothing yet\n"}, "changelog")
    return repo


def harness(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The CLI the way users call it."""
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def pytest_count(root: Path, *args: str) -> int:
    """How many tests plain `pytest --collect-only` selects with these arguments."""
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                           "-p", "no:harness", *args], cwd=root, capture_output=True, text=True, timeout=300)
    assert proc.returncode in (0, 5), proc.stdout + proc.stderr
    return sum(1 for line in proc.stdout.splitlines() if "::" in line)
