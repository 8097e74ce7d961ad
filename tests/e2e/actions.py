"""Run a workflow job's `run:` steps locally, the way an Actions runner would, for the e2e tests.

Only what our workflows use is supported: `${{ secrets.X }}`, `${{ matrix.X }}`, `${{ inputs.X }}`
(declared defaults) and `${{ steps.ID.outputs.X }}` in `env:` values, and `if:` conditions made of
`always()`, `steps.ID.outputs.X == 'literal'` and `&&`. `uses:` steps (checkout, artifacts) are
the test's job: it prepares the working directory and passes the names of the steps to skip.
Shells as on GitHub's Linux runners: `bash -e {0}` by default, `bash --noprofile --norc -eo pipefail {0}`
for `shell: bash`. `$GITHUB_OUTPUT` is a real file; each step's outputs are parsed from it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

EXPR = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")


@dataclass
class StepResult:
    name: str
    returncode: int
    stdout: str
    stderr: str
    outputs: dict[str, str]


@dataclass
class JobContext:
    """Values the expressions of one job can see."""

    secrets: dict[str, str] = field(default_factory=dict)
    matrix: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, Any] = field(default_factory=dict)
    steps: dict[str, dict[str, str]] = field(default_factory=dict)

    def value(self, ref: str) -> str:
        parts = ref.split(".")
        if parts[0] == "steps" and len(parts) == 4 and parts[2] == "outputs":
            return self.steps.get(parts[1], {}).get(parts[3], "")
        scope = {"secrets": self.secrets, "matrix": self.matrix, "inputs": self.inputs}.get(parts[0])
        if scope is None or len(parts) != 2:
            raise ValueError(f"unsupported expression {ref!r}")
        return str(scope.get(parts[1], ""))

    def render(self, text: str) -> str:
        return EXPR.sub(lambda m: self.value(m.group(1)), str(text))

    def condition(self, expr: str | None) -> bool:
        if expr is None:
            return True
        inner = EXPR.fullmatch(expr.strip())
        body = inner.group(1) if inner else expr.strip()
        for term in (t.strip() for t in body.split("&&")):
            if term == "always()":
                continue
            m = re.fullmatch(r"([\w.]+)\s*==\s*'([^']*)'", term)
            if not m:
                raise ValueError(f"unsupported condition {term!r}")
            if self.value(m.group(1)) != m.group(2):
                return False
        return True


def load_job(workflow: Path, job: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the job, the workflow's workflow_call input defaults)."""
    doc = YAML(typ="safe").load(workflow.read_text())
    inputs = (doc.get("on") or {}).get("workflow_call", {}).get("inputs", {}) if isinstance(doc.get("on"), dict) else {}
    return doc["jobs"][job], {k: v.get("default", "") for k, v in inputs.items()}


def run_job(workflow: Path, job: str, *, cwd: Path, ctx: JobContext, skip: set[str],
            extra_env: dict[str, str] | None = None, tmp: Path) -> list[StepResult]:
    """Run the job's `run:` steps in order; steps named in `skip` or with a false `if:` are skipped."""
    spec, defaults = load_job(workflow, job)
    ctx.inputs = {**defaults, **ctx.inputs}
    bindir = str(Path(sys.executable).parent)
    base_env = {**os.environ, "PATH": bindir + os.pathsep + os.environ.get("PATH", ""), "GITHUB_WORKSPACE": str(cwd),
                **(extra_env or {})}
    base_env.update({k: ctx.render(v) for k, v in (spec.get("env") or {}).items()})
    results = []
    for i, step in enumerate(spec["steps"]):
        name = step.get("name", f"step{i}")
        if "run" not in step or name in skip or not ctx.condition(step.get("if")):
            continue
        output = tmp / f"github_output_{job}_{i}"
        output.write_text("")
        env = {**base_env, **{k: ctx.render(v) for k, v in (step.get("env") or {}).items()},
               "GITHUB_OUTPUT": str(output)}
        shell = (["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c"] if step.get("shell") == "bash"
                 else ["bash", "-e", "-c"])
        proc = subprocess.run([*shell, step["run"]], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
        outputs = dict(line.split("=", 1) for line in output.read_text().splitlines() if "=" in line)
        if "id" in step:
            ctx.steps[step["id"]] = outputs
        results.append(StepResult(name, proc.returncode, proc.stdout, proc.stderr, outputs))
        if proc.returncode != 0 and not step.get("continue-on-error"):
            break
    return results
