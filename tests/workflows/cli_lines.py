"""Find `harness ...` command lines in workflow `run:` scripts and parse them with the real CLI.

Parsing goes through click (`typer.main.get_command(harness.cli.app)` + `make_context`), so unknown
verbs, unknown flags, missing required options and badly typed literal values all fail, while no
command body runs. Shell words holding `$VAR` or `${{ ... }}` are replaced by a value of the type the
option expects (they are only known at run time).
"""

from __future__ import annotations

import shlex
import typing
from dataclasses import dataclass

import typer

from harness.cli import app

OPERATORS = {";", "&&", "||", "|", "&", "(", ")", ">", ">>", "<", "2>", "|&"}


@dataclass(frozen=True)
class CommandLine:
    """One `harness` invocation found in a workflow."""

    where: str
    argv: tuple[str, ...]


def harness_commands(script: str, where: str) -> list[CommandLine]:
    """Every `harness` command in a shell script (continuations joined, comments dropped)."""
    found = []
    for line in script.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        tokens = list(lexer)
        start = True
        for i, token in enumerate(tokens):
            if start and token == "harness":
                end = next((j for j in range(i + 1, len(tokens)) if tokens[j] in OPERATORS), len(tokens))
                found.append(CommandLine(where, tuple(tokens[i + 1:end])))
            start = token in OPERATORS
    return found


def _placeholder(param: object | None) -> str:
    """A literal the option accepts, standing in for a value known only at run time."""
    desc = getattr(param, "type_descriptor", None)  # typer >= 0.20 parameters
    if desc is not None:
        if desc.is_choice and desc.choices:
            return str(list(desc.choices)[0])
        annotation = desc.annotation
        args = typing.get_args(annotation)
        annotation = args[0] if args else annotation
    else:  # plain click parameters
        ptype = getattr(param, "type", None)
        if getattr(ptype, "choices", None):
            return str(list(ptype.choices)[0])
        annotation = {"integer": int, "float": float}.get(getattr(ptype, "name", ""), str)
    return {int: "1", float: "1.0"}.get(annotation, "placeholder")


def parse(argv: tuple[str, ...] | list[str]) -> str:
    """Parse `harness ARGV` without running it; returns the resolved verb path, raises click errors."""
    group = typer.main.get_command(app)
    ctx = group.make_context("harness", [], resilient_parsing=True)  # groups: only find the verb
    args = list(argv)
    cmd, path = group, []
    while hasattr(cmd, "get_command"):
        if not args:
            raise ValueError(f"harness {' '.join(path)}: no verb given")
        name = args.pop(0)
        sub = cmd.get_command(ctx, name)
        if sub is None:
            raise ValueError(f"harness {' '.join(path + [name])}: no such verb")
        path.append(name)
        ctx = sub.make_context(name, [], parent=ctx, resilient_parsing=True) if hasattr(sub, "get_command") else ctx
        cmd = sub
    by_opt = {opt: p for p in cmd.params for opt in (*p.opts, *getattr(p, "secondary_opts", ()))}
    positional = [p for p in cmd.params if not p.opts or not p.opts[0].startswith("-")]
    resolved = []
    for i, word in enumerate(args):
        if "$" in word:
            param = by_opt.get(args[i - 1]) if i else None
            word = _placeholder(param if param is not None else (positional[0] if positional else None))
        resolved.append(word)
    cmd.make_context(" ".join(["harness", *path]), resolved, parent=ctx, resilient_parsing=False)
    return " ".join(path)
