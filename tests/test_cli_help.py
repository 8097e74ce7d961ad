"""Golden files for `harness --help` and every verb's `--help`: the CLI contract users' scripts rely on.

Regenerate after a deliberate change with `HARNESS_UPDATE_GOLDEN=1 python -m pytest tests/test_cli_help.py`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from harness.cli import app

GOLDEN = Path(__file__).parent / "golden" / "help"
ENV = {"COLUMNS": "100", "NO_COLOR": "1", "TERM": "dumb", "_TYPER_FORCE_DISABLE_TERMINAL": "1"}


def verbs() -> list[tuple[str, ...]]:
    """Every command path of the CLI, found from the app itself (so a new verb needs a golden file)."""
    root = typer.main.get_command(app)
    out: list[tuple[str, ...]] = [()]

    def walk(cmd, path: tuple[str, ...]) -> None:  # noqa: ANN001 - click command objects
        for name in sorted(getattr(cmd, "commands", {})):
            sub = cmd.commands[name]
            out.append((*path, name))
            walk(sub, (*path, name))

    walk(root, ())
    return out


def _help(path: tuple[str, ...]) -> str:
    result = CliRunner().invoke(app, [*path, "--help"], env=ENV, prog_name="harness")
    assert result.exit_code == 0, result.output
    return re.sub(r"[ \t]+\n", "\n", result.output)


@pytest.mark.parametrize("path", verbs(), ids=lambda p: "-".join(p) or "harness")
def test_help_matches_golden(path: tuple[str, ...]) -> None:
    golden = GOLDEN / (("-".join(path) or "harness") + ".txt")
    text = _help(path)
    if os.environ.get("HARNESS_UPDATE_GOLDEN") == "1":
        golden.write_text(text)
    assert golden.exists(), f"no golden file for `harness {' '.join(path)} --help`: set HARNESS_UPDATE_GOLDEN=1"
    assert text == golden.read_text()


def test_every_golden_file_is_a_verb() -> None:
    names = {("-".join(p) or "harness") + ".txt" for p in verbs()}
    assert {p.name for p in GOLDEN.glob("*.txt")} <= names
