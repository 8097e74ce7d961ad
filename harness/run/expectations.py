"""`harness expectations update`: re-record the slow suite's device-keyed expectations and show the diff.

The platform reaches the suites only through pytest: it runs the target's `slow` suite with
`HARNESS_UPDATE_EXPECTATIONS=1` (the suites write what they measure into their `expectations/*.json`)
and diffs those files before and after.
"""

from __future__ import annotations

import difflib
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError
from harness.run.metadata import open_repo
from harness.run.target import load_target

UPDATE_ENV = "HARNESS_UPDATE_EXPECTATIONS"


@dataclass
class ExpectationsUpdate:
    """The outcome of one update: the unified diff of every changed expectations file."""

    diff: str
    changed: list[str]
    pytest_exit: int
    log: str


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("expectations/*.json"))
            if ".git" not in p.parts and ".venv" not in p.parts}


def device_env(device: str | None) -> dict[str, str]:
    """`cpu` hides GPUs; `cuda:N` pins GPU N; `cuda` or nothing leaves visibility alone."""
    if device is None or device == "cuda":
        return {}
    if device == "cpu":
        return {"CUDA_VISIBLE_DEVICES": ""}
    if device.startswith("cuda:") and device[5:].isdigit():
        return {"CUDA_VISIBLE_DEVICES": device[5:]}
    raise HarnessError(f"--device {device!r}: expected cpu, cuda or cuda:N")


def update_expectations(repo: str, models: str, device: str | None = None) -> ExpectationsUpdate:
    """Run the target's slow suite in update mode for `models` on `device` and diff the files."""
    env_extra = device_env(device)
    root = Path(open_repo(repo).working_tree_dir)
    target = load_target(root)
    selected = target.resolve_models(models)
    suite = target.suites.get("slow")
    if suite is None:
        raise HarnessError(f"{target.source}: the target has no 'slow' suite to record expectations with")
    before = _snapshot(root)
    env = {**os.environ, **suite.env, **env_extra, UPDATE_ENV: "1", "RUN_SLOW": "1"}
    if target.models_env:
        env[target.models_env] = ",".join(selected)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))
    argv = [sys.executable, "-m", "pytest", *target.pytest_paths(suite, selected), f"--rootdir={root}",
            "-p", "no:cacheprovider", "-q", "-m", "not multi_gpu", "-p", "no:harness"]
    proc = subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True)
    after = _snapshot(root)
    diff, changed = [], []
    for name in sorted(set(before) | set(after)):
        old, new = before.get(name, ""), after.get(name, "")
        if old != new:
            changed.append(name)
            diff += difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True),
                                         fromfile=f"a/{name}", tofile=f"b/{name}")
    return ExpectationsUpdate(diff="".join(diff), changed=changed, pytest_exit=proc.returncode,
                              log=proc.stdout[-4000:] + proc.stderr[-2000:])
