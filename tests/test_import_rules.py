"""The import rules between the parts (docs/ARCHITECTURE.md, "Parts and allowed imports").

Every ``.py`` file of the repository is parsed with ``ast``; every import counts wherever it stands
(module level, inside functions, under ``if TYPE_CHECKING``), relative imports are resolved against
the file's package, ``from a import b`` counts as importing both ``a`` and ``a.b``, and
``importlib.import_module("a.b")`` / ``__import__("a.b")`` with a literal name count too.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SKIP_DIRS = {".venv", ".git", "node_modules", "__pycache__", "build", "dist"}
SOURCE_ROOTS = {"bisect": "bisect"}  # first path part -> folder the package names start from
PRODUCT = ("harness/", "bisect/", "models/", "suites/", "benchmarks/")  # not tests/: they drive the CLI


@dataclass(frozen=True)
class Import:
    """One module a file imports: repo-relative path, line, absolute dotted name."""

    path: str
    line: int
    module: str


def python_files(root: Path) -> list[Path]:
    """Every ``.py`` file under ``root`` outside virtualenvs, VCS and cache folders."""
    return sorted(p for p in root.rglob("*.py") if not SKIP_DIRS.intersection(p.relative_to(root).parts[:-1]))


def package_of(rel: Path) -> list[str]:
    """The package a file's relative imports start from, as name parts."""
    src = SOURCE_ROOTS.get(rel.parts[0])
    parts = list(rel.parts[1:] if src else rel.parts)
    return parts[:-1]


def _literal_import_call(node: ast.Call) -> str | None:
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
    if name not in ("import_module", "__import__") or not node.args:
        return None
    arg = node.args[0]
    return arg.value if isinstance(arg, ast.Constant) and isinstance(arg.value, str) else None


def imports_in(source: str, rel: Path) -> Iterator[Import]:
    """The modules the file ``rel`` (repository-relative) with text ``source`` imports."""
    path = rel.as_posix()
    for node in ast.walk(ast.parse(source, filename=path)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(path, node.lineno, alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                pkg = package_of(rel)
                base = pkg[: len(pkg) - (node.level - 1)] if node.level > 1 else pkg
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module:
                yield Import(path, node.lineno, module)
            for alias in node.names:
                if alias.name != "*":
                    yield Import(path, node.lineno, f"{module}.{alias.name}" if module else alias.name)
        elif isinstance(node, ast.Call) and (name := _literal_import_call(node)):
            yield Import(path, node.lineno, name)


def all_imports(root: Path = ROOT) -> list[Import]:
    out: list[Import] = []
    for p in python_files(root):
        rel = p.relative_to(root)
        out.extend(imports_in(p.read_text(encoding="utf-8"), rel))
    return out


def is_of(module: str, packages: tuple[str, ...]) -> bool:
    """True when ``module`` is one of ``packages`` or inside one (``harness_bisect`` is not ``harness``)."""
    return any(module == p or module.startswith(p + ".") for p in packages)


@dataclass(frozen=True)
class Rule:
    """Files under one of ``where`` (path prefixes, minus ``exempt``) import nothing of ``forbidden``."""

    name: str
    where: tuple[str, ...]
    forbidden: tuple[str, ...]
    exempt: tuple[str, ...] = ()

    def applies(self, path: str) -> bool:
        return path.startswith(self.where) and not (self.exempt and path.startswith(self.exempt))

    def violations(self, imports: list[Import]) -> list[str]:
        """``path:line imports module``, one per offending import statement (its shortest name)."""
        worst: dict[tuple[str, int], str] = {}
        for i in imports:
            if self.applies(i.path) and is_of(i.module, self.forbidden):
                key = (i.path, i.line)
                worst[key] = min(worst.get(key, i.module), i.module, key=len)
        return [f"{path}:{line} imports {mod}" for (path, line), mod in sorted(worst.items())]


PLATFORM = ("harness", "harness_bisect")
FAMILY_MARK = re.compile(r"^class ModelArgs\b", re.MULTILINE)  # how the platform finds a model family
RULES = [
    Rule("models import nothing of the platform", ("models/",), PLATFORM),
    Rule("suites import nothing of the platform (models they may)", ("suites/",), PLATFORM),
    Rule(
        "nothing imports harness.cli but the console entry point",
        PRODUCT,
        ("harness.cli",),
        ("harness/cli.py",),
    ),
    Rule(
        "the store imports nothing above it",
        ("harness/store/",),
        ("harness.run", "harness.report", "harness.cli", "harness.triage", "harness.pipeline"),
    ),
    Rule("report does not import run", ("harness/report/",), ("harness.run",)),
    Rule(
        "triage and plan import nothing above them",
        ("harness/triage/", "harness/plan.py"),
        ("harness.report", "harness.pipeline", "harness.cli"),
    ),
    Rule(
        "run and ingest import nothing above them",
        ("harness/run/", "harness/ingest.py"),
        ("harness.triage", "harness.plan", "harness.report", "harness.pipeline", "harness.cli"),
    ),
    Rule(
        "bundle, config and errors import only each other",
        ("harness/bundle.py", "harness/config.py", "harness/errors.py"),
        (
            "harness_bisect",
            *(
                f"harness.{p}"
                for p in ("run", "ingest", "store", "triage", "plan", "report", "pipeline", "cli")
            ),
        ),
    ),
]
BISECT_RULE = Rule("harness_bisect imports nothing of harness", ("bisect/harness_bisect/",), ("harness",))


@pytest.fixture(scope="module")
def imports() -> list[Import]:
    return all_imports()


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.name)
def test_import_rule(rule: Rule, imports: list[Import]) -> None:
    scanned = {i.path for i in imports if rule.applies(i.path)}
    assert scanned, f"no file with imports under {rule.where}: the rule checks nothing"
    assert rule.violations(imports) == [], rule.name


def test_family_files_import_no_other_family(imports: list[Import]) -> None:
    """``harness plan`` maps a changed ``models/<family>.py`` to that family alone: shared code lives
    in non-family modules (``models/blocks.py``, ``_base.py``), whose change selects every model."""
    families = [
        p.stem for p in (ROOT / "models").glob("*.py") if FAMILY_MARK.search(p.read_text(encoding="utf-8"))
    ]
    assert len(families) >= 2
    found = []
    for fam in families:
        others = tuple(f"models.{f}" for f in families if f != fam)
        found += Rule(f"{fam} imports no other family", (f"models/{fam}.py",), others).violations(imports)
    assert found == []


def test_harness_bisect_imports_nothing_of_harness(imports: list[Import]) -> None:
    assert {i.path for i in imports if BISECT_RULE.applies(i.path)}, "no harness_bisect file scanned"
    assert BISECT_RULE.violations(imports) == []


def test_console_entry_point_is_harness_cli() -> None:
    """The one place that may reach harness.cli: ``[project.scripts]`` in pyproject.toml."""
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    assert scripts["harness"].split(":")[0] == "harness.cli"


def test_scanner_sees_every_kind_of_import(tmp_path: Path) -> None:
    """The scanner itself, on files written here: a rule that saw nothing would pass vacuously."""
    (tmp_path / "bisect" / "harness_bisect").mkdir(parents=True)
    (tmp_path / "models").mkdir()
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / "ignored.py").write_text("import harness\n")
    (tmp_path / "models" / "m.py").write_text(
        "import os\n"
        "def f():\n"
        "    from harness import cli\n"
        "    import importlib\n"
        "    return importlib.import_module('harness.store.db'), __import__('harness_bisect')\n"
        "from . import sibling\n"
    )
    (tmp_path / "bisect" / "harness_bisect" / "command.py").write_text(
        "from ..harness_bisect.search import bisect\nfrom .gitops import open_repo\n"
        "if True:\n    import harness.errors as e\n"
    )
    found = {(i.path, i.module) for i in all_imports(tmp_path)}
    assert found == {
        ("models/m.py", "os"),
        ("models/m.py", "harness"),
        ("models/m.py", "harness.cli"),
        ("models/m.py", "importlib"),
        ("models/m.py", "harness.store.db"),
        ("models/m.py", "harness_bisect"),
        ("models/m.py", "models"),
        ("models/m.py", "models.sibling"),
        ("bisect/harness_bisect/command.py", "harness_bisect.search"),
        ("bisect/harness_bisect/command.py", "harness_bisect.search.bisect"),
        ("bisect/harness_bisect/command.py", "harness_bisect.gitops"),
        ("bisect/harness_bisect/command.py", "harness_bisect.gitops.open_repo"),
        ("bisect/harness_bisect/command.py", "harness.errors"),
    }
    imports = all_imports(tmp_path)
    assert RULES[0].violations(imports) == [
        "models/m.py:3 imports harness",
        "models/m.py:5 imports harness_bisect",
    ]
    assert RULES[2].violations(imports) == ["models/m.py:3 imports harness.cli"]
    assert BISECT_RULE.violations(imports) == ["bisect/harness_bisect/command.py:4 imports harness.errors"]
    assert not is_of("harness_bisect.search", ("harness",))
