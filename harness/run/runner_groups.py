"""Runner groups (cpu | single-gpu | multi-gpu): the Actions mapping and detection on this machine."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import tomllib

from harness.config import RUNNER_GROUPS
from harness.errors import HarnessError

CONFIG_PATH = Path(__file__).resolve().parent.parent / "runner_groups.toml"


@dataclass(frozen=True)
class RunnerGroupSpec:
    """One GitHub Actions runner group and the machine behind it."""

    name: str
    group: str
    machine_type: str
    gpu_name: str
    gpu_count: int
    container_options: str
    compute_capability: str = ""

    def supports_fa2(self) -> bool:
        """FlashAttention-2 needs compute capability 8.0 (Ampere) or newer."""
        try:
            return float(self.compute_capability or 0) >= 8.0
        except ValueError:
            return False


@lru_cache(maxsize=1)
def _load(path: str) -> tuple[tuple[RunnerGroupSpec, ...], dict[str, str]]:
    with open(path, "rb") as fh:
        data = tomllib.load(fh)
    specs = []
    for row in data.get("runner", []):
        spec = RunnerGroupSpec(name=row["name"], group=row["group"], machine_type=row["machine_type"],
                               gpu_name=row.get("gpu_name", ""), gpu_count=int(row.get("gpu_count", 0)),
                               container_options=row.get("container_options", ""),
                               compute_capability=str(row.get("compute_capability", "")))
        if spec.group not in RUNNER_GROUPS:
            raise HarnessError(f"{path}: runner {spec.name!r} has unknown group {spec.group!r}")
        specs.append(spec)
    return tuple(specs), dict(data.get("defaults", {}))


def load_runner_groups(path: Path = CONFIG_PATH) -> list[RunnerGroupSpec]:
    """Every Actions runner group known to the config file."""
    return list(_load(str(path))[0])


def default_runner(group: str, path: Path = CONFIG_PATH) -> RunnerGroupSpec:
    """The Actions runner group used for a harness runner group by default."""
    specs, defaults = _load(str(path))
    name = defaults.get(group)
    for spec in specs:
        if spec.name == name:
            return spec
    raise HarnessError(f"{path}: no default Actions runner for group {group!r}")


def runner_by_name(name: str, path: Path = CONFIG_PATH) -> RunnerGroupSpec | None:
    return next((s for s in _load(str(path))[0] if s.name == name), None)


def validate_group(group: str) -> str:
    if group not in RUNNER_GROUPS:
        raise HarnessError(f"unknown runner group {group!r} (known: {', '.join(RUNNER_GROUPS)})")
    return group


def detect_group(gpu_count: int) -> str:
    """`HARNESS_RUNNER_GROUP` if set, else from the number of visible GPUs."""
    env = os.environ.get("HARNESS_RUNNER_GROUP")
    if env:
        return validate_group(env)
    return "cpu" if gpu_count == 0 else ("single-gpu" if gpu_count == 1 else "multi-gpu")


def machine_type(group: str, gpu_name: str | None) -> str | None:
    """The machine type: the Actions runner named by `RUNNER_NAME`-style env, else a config match."""
    actions_group = os.environ.get("HARNESS_ACTIONS_RUNNER")
    if actions_group:
        spec = runner_by_name(actions_group)
        if spec:
            return spec.machine_type
    for spec in load_runner_groups():
        if spec.group == group and (group == "cpu" or (gpu_name and spec.gpu_name == gpu_name)):
            return spec.machine_type
    return None
