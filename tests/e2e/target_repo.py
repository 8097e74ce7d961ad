"""A small target repository with real history: a model zoo, a slow suite and a regression.

History (oldest first), one commit each, by different authors:
  0 "Add zoo"                    models/tiny.py, models/small.py, models/ops.py, suites/slow, pyproject
  1 "Docs: describe the zoo"      README.md
  2 "small: wider hidden layer"   models/small.py (still correct)
  3 "ops: fast softmax (#123)"    models/ops.py — the regression: `softmax` loses its max-shift, so
                                  `tiny`'s large-logit test overflows to nan; everything else still passes
  4 "Docs: changelog"             CHANGELOG.md
  5 "small: tidy"                 models/small.py

A test that fails only on its first attempt at the newest commit (with `FLAKY_MARKER` set) stands in
for a flake: the baseline passes it, the new run fails it once, the confirmation rerun passes it.
"""

from __future__ import annotations

from pathlib import Path

import git

PYPROJECT = """\
[tool.harness]
models_dir = "models"
models_env = "HARNESS_MODELS"

[tool.harness.suites.slow]
paths = ["suites/slow"]
env = { RUN_SLOW = "1" }
"""

OPS_GOOD = """\
import math


def softmax(xs):
    m = max(xs)
    exps = [math.exp(x - m) for x in xs]
    total = sum(exps)
    return [e / total for e in exps]
"""

OPS_BAD = """\
import math


def softmax(xs):
    # "fast" path: skip the max shift (overflows for large logits)
    try:
        exps = [math.exp(x) for x in xs]
    except OverflowError:
        return [float("nan")] * len(xs)
    total = sum(exps)
    return [e / total for e in exps]
"""

TINY = """\
from models.ops import softmax


class ModelArgs:
    scale = 1000.0


def forward(xs):
    return softmax([x * ModelArgs.scale for x in xs])
"""

SMALL = """\
from models.ops import softmax


class ModelArgs:
    hidden = {hidden}


def forward(xs):
    return softmax([x / ModelArgs.hidden for x in xs])
"""

CONFTEST = """\
import os

import pytest

MODELS = [m for m in os.environ.get("HARNESS_MODELS", "tiny,small").split(",") if m]


def pytest_generate_tests(metafunc):
    if "model_name" in metafunc.fixturenames:
        metafunc.parametrize("model_name", MODELS)
"""

SUITE = """\
import importlib
import math
import os
from pathlib import Path


def load(name):
    return importlib.import_module(f"models.{name}")


def test_probabilities_sum_to_one(model_name):
    probs = load(model_name).forward([0.1, 0.2, 0.3])
    assert abs(sum(probs) - 1.0) < 1e-9


def test_large_logits_are_finite(model_name):
    probs = load(model_name).forward([1.0, 2.0, 3.0])
    assert all(math.isfinite(p) for p in probs), f"non-finite probabilities {probs}"


def test_argmax_is_stable(model_name):
    probs = load(model_name).forward([0.0, 0.0, 0.5])
    assert probs.index(max(probs)) == 2


def test_sometimes_flaky(model_name):
    # flaky only at the newest commit (small.hidden == 16) and only on its first attempt
    folder = os.environ.get("FLAKY_MARKER")
    if not folder or model_name != "tiny" or load("small").ModelArgs.hidden < 16:
        return
    marker = Path(folder) / "failed-once"
    if marker.exists():
        return
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text("failed once")
    raise AssertionError("flaky: fails on the first attempt only")
"""

REGRESSING_TEST = "suites/slow/test_zoo.py::test_large_logits_are_finite[tiny]"
FLAKY_TEST = "suites/slow/test_zoo.py::test_sometimes_flaky[tiny]"


def _commit(repo: git.Repo, root: Path, files: dict[str, str], message: str, who: tuple[str, str]) -> str:
    for name, body in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(body)
    repo.index.add(list(files))
    actor = git.Actor(*who)
    return repo.index.commit(message, author=actor, committer=actor).hexsha


def make_target(root: Path) -> dict[str, str]:
    """Create the repository; returns {"good": sha of commit 1, "culprit": sha 3, "bad": sha 5}."""
    root.mkdir(parents=True)
    repo = git.Repo.init(root, initial_branch="main")
    with repo.config_writer() as cw:
        cw.set_value("user", "name", "CI").set_value("user", "email", "ci@example.com")
    ada, bob, eve = ("Ada Lovelace", "ada@example.com"), ("Bob Builder", "bob@example.com"), ("Eve Fast", "eve@example.com")
    _commit(repo, root, {"pyproject.toml": PYPROJECT, "models/__init__.py": "", "models/ops.py": OPS_GOOD,
                         "models/tiny.py": TINY, "models/small.py": SMALL.format(hidden=4),
                         "suites/__init__.py": "", "suites/slow/__init__.py": "",
                         "suites/slow/conftest.py": CONFTEST, "suites/slow/test_zoo.py": SUITE,
                         ".gitignore": ".harness/\n__pycache__/\n"}, "Add zoo", ada)
    good = _commit(repo, root, {"README.md": "# zoo\n"}, "Docs: describe the zoo", ada)
    _commit(repo, root, {"models/small.py": SMALL.format(hidden=8)}, "small: wider hidden layer", bob)
    culprit = _commit(repo, root, {"models/ops.py": OPS_BAD}, "ops: fast softmax (#123)", eve)
    _commit(repo, root, {"CHANGELOG.md": "- fast softmax\n"}, "Docs: changelog", ada)
    bad = _commit(repo, root, {"models/small.py": SMALL.format(hidden=16)}, "small: tidy", bob)
    return {"good": good, "culprit": culprit, "bad": bad}
