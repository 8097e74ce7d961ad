"""`harness expectations update`: re-record the slow suite's device-keyed expectations and show the diff.

The platform reaches the suites only through pytest: it runs the target's `slow` suite with
`HARNESS_UPDATE_EXPECTATIONS=1` (the suites write what they measure into their `expectations/*.json`)
and diffs those files before and after.

A device that is not present here (`cuda` or `cuda:N` without that GPU) is refused before anything
runs, and a run that recorded entries of another device type than the one asked for (e.g. `cpu`
entries for `--device cuda:0`) is undone: exit 2, the files byte-identical to before.
"""

from __future__ import annotations

import difflib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError
from harness.run.metadata import gpu_info, open_repo
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
    """`cpu` hides GPUs; `cuda:N` pins the N-th visible GPU; `cuda` or nothing leaves visibility alone."""
    if device is None or device == "cuda":
        return {}
    if device == "cpu":
        return {"CUDA_VISIBLE_DEVICES": ""}
    if device.startswith("cuda:") and device[5:].isdigit():
        visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
        index = int(device[5:])
        return {"CUDA_VISIBLE_DEVICES": visible[index] if "CUDA_VISIBLE_DEVICES" in os.environ
                and index < len(visible) else device[5:]}
    raise HarnessError(f"--device {device!r}: expected cpu, cuda or cuda:N")


def require_present(device: str | None) -> None:
    """Refuse a CUDA device this machine does not have (GPUs counted through NVML, after
    CUDA_VISIBLE_DEVICES): recording on whatever is there instead would file values under the wrong key."""
    if device is None or device == "cpu":
        return
    count = gpu_info().count
    index = int(device[5:]) if device.startswith("cuda:") else 0
    if index >= count:
        have = "no CUDA GPU is visible here" if count == 0 else f"{count} CUDA GPU(s) visible (cuda:0..cuda:{count - 1})"
        raise HarnessError(f"--device {device}: not present ({have}); run on a machine with it, or use "
                           "--device cpu: nothing was written")


def recorded_device_types(before: dict[str, str], after: dict[str, str]) -> set[str]:
    """Device types (`cpu`, `cuda`, ...) of the expectation entries that differ between two snapshots."""
    types: set[str] = set()
    for name in set(before) | set(after):
        try:
            old, new = (json.loads(side.get(name) or "{}") for side in (before, after))
        except ValueError:
            continue
        for check in set(old) | set(new):
            o, n = old.get(check) or {}, new.get(check) or {}
            types.update(key.split(":", 1)[0] for key in set(o) | set(n) if o.get(key) != n.get(key))
    return types


def _restore(root: Path, before: dict[str, str], after: dict[str, str]) -> None:
    for name in after:
        if name not in before:
            (root / name).unlink()
        elif before[name] != after[name]:
            (root / name).write_text(before[name])


def update_expectations(repo: str, models: str, device: str | None = None) -> ExpectationsUpdate:
    """Run the target's slow suite in update mode for `models` on `device` and diff the files."""
    env_extra = device_env(device)
    require_present(device)
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
    wanted = None if device is None else device.split(":", 1)[0]
    allowed = {wanted, "default", "rocm"} if wanted == "cuda" else {wanted, "default"}
    wrong = sorted(t for t in recorded_device_types(before, after) if wanted and t not in allowed)
    if wrong:
        _restore(root, before, after)
        raise HarnessError(f"--device {device}: the suite recorded {', '.join(wrong)} entries instead "
                           "(it did not run on that device): nothing was written")
    if proc.returncode == 5:
        raise HarnessError(f"the slow suite collected no test for --models {models}: nothing was recorded")
    diff, changed = [], []
    for name in sorted(set(before) | set(after)):
        old, new = before.get(name, ""), after.get(name, "")
        if old != new:
            changed.append(name)
            diff += difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True),
                                         fromfile=f"a/{name}", tofile=f"b/{name}")
    return ExpectationsUpdate(diff="".join(diff), changed=changed, pytest_exit=proc.returncode,
                              log=proc.stdout[-4000:] + proc.stderr[-2000:])
