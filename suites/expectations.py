"""Device-keyed expected values for the slow suite (library part of ``harness expectations update``).

Values live in ``suites/expectations/<model>.json`` (or ``$HARNESS_EXPECTATIONS_DIR``) as ``{check: {device key: value}}``. A device key
is ``"<type>"`` or ``"<type>:<major>.<minor>"`` (compute capability), e.g. ``"cpu"``, ``"cuda:9.0"``;
``"default"`` matches any device. :meth:`Expectations.find` picks the best match for the device
the test runs on: same type and capability, then same type and major version, then the bare type,
then another capability of the same type, then ``default``.

With env ``HARNESS_UPDATE_EXPECTATIONS=1`` tests record the values they observe instead of comparing
(:func:`record`, under a file lock so xdist workers can share a file) and print what changed. The
``harness expectations update --models M --device D`` verb only runs the slow suite with that
variable set (see :func:`update_command`). Imports nothing of the platform, nor torch.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_DIR = Path(__file__).with_name("expectations")
DIR_ENV = "HARNESS_EXPECTATIONS_DIR"  # read / record somewhere else (tests, scratch runs)
UPDATE_ENV = "HARNESS_UPDATE_EXPECTATIONS"


def expectations_dir() -> Path:
    """Where the json files live: ``$HARNESS_EXPECTATIONS_DIR`` or ``suites/expectations``."""
    raw = os.environ.get(DIR_ENV, "").strip()
    return Path(raw) if raw else DEFAULT_DIR


def update_mode() -> bool:
    """True when tests should record what they see (env ``HARNESS_UPDATE_EXPECTATIONS``)."""
    return os.environ.get(UPDATE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class DeviceKey:
    """A device type and optional compute capability: ("cuda", (9, 0)), ("cpu", None)."""

    type: str
    capability: tuple[int, int] | None = None

    @classmethod
    def parse(cls, text: str) -> DeviceKey:
        kind, _, cap = text.strip().partition(":")
        if not kind:
            raise ValueError(f"bad device key {text!r}: expected e.g. cpu, cuda, cuda:9.0")
        if not cap:
            return cls(kind)
        major, _, minor = cap.partition(".")
        try:
            return cls(kind, (int(major), int(minor or 0)))
        except ValueError:
            raise ValueError(f"bad device key {text!r}: capability must look like 9.0") from None

    def __str__(self) -> str:
        return (
            self.type if self.capability is None else f"{self.type}:{self.capability[0]}.{self.capability[1]}"
        )


def device_key(device: Any = None) -> DeviceKey:
    """The key of ``device`` (a torch device or string; default: cuda if available, else cpu)."""
    import importlib

    torch = importlib.import_module("torch")
    dev = (
        torch.device(device)
        if device is not None
        else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    )
    if dev.type == "cuda":
        kind = "rocm" if getattr(torch.version, "hip", None) else "cuda"
        return DeviceKey(kind, tuple(torch.cuda.get_device_capability(dev)))
    return DeviceKey(dev.type)


class Expectations:
    """Values of one check for several devices; :meth:`find` returns the best match."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = {
            DeviceKey.parse(k) if k != "default" else DeviceKey("default"): v for k, v in data.items()
        }

    @staticmethod
    def score(candidate: DeviceKey, device: DeviceKey) -> int:
        """How well ``candidate`` fits ``device``: 5 exact .. 1 default, 0 unusable."""
        if candidate.type == "default":
            return 1
        if candidate.type != device.type:
            return 0
        if candidate.capability == device.capability:
            return 5
        if candidate.capability is None:
            return 3
        if device.capability is not None and candidate.capability[0] == device.capability[0]:
            return 4
        return 2

    def find(self, device: DeviceKey) -> tuple[DeviceKey, Any] | None:
        """(key, value) of the best match for ``device``; None if nothing applies."""
        best = max(self.data.items(), key=lambda kv: (self.score(kv[0], device), str(kv[0])), default=None)
        if best is None or self.score(best[0], device) == 0:
            return None
        return best


def path_for(model: str, root: Path | None = None) -> Path:
    return (root or expectations_dir()) / f"{model}.json"


def load(model: str, root: Path | None = None) -> dict[str, dict[str, Any]]:
    """All checks of ``model``: ``{check: {device key: value}}`` (empty if no file)."""
    path = path_for(model, root)
    if not path.exists():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


def expectations(model: str, check: str, root: Path | None = None) -> Expectations:
    return Expectations(load(model, root).get(check, {}))


def dumps(data: dict[str, dict[str, Any]]) -> str:
    """Stable JSON: one line per (check, device) so diffs stay readable."""
    lines = ["{"]
    checks = sorted(data)
    for i, check in enumerate(checks):
        lines.append(f"  {json.dumps(check)}: {{")
        keys = sorted(data[check])
        for j, key in enumerate(keys):
            value = json.dumps(data[check][key], separators=(", ", ": "))
            lines.append(f"    {json.dumps(key)}: {value}{',' if j < len(keys) - 1 else ''}")
        lines.append("  }" + ("," if i < len(checks) - 1 else ""))
    lines.append("}")
    return "\n".join(lines) + "\n"


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:16]
    lock = Path(tempfile.gettempdir()) / f"harness-expectations-{digest}.lock"
    with open(lock, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def record(model: str, check: str, device: DeviceKey | str, value: Any, root: Path | None = None) -> str:
    """Store ``value`` for (model, check, device); returns a one-line description of the change."""
    key = str(device)
    path = path_for(model, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path):
        data = load(model, root)
        old = data.get(check, {}).get(key)
        data.setdefault(check, {})[key] = value
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(dumps(data), encoding="utf-8")
        tmp.replace(path)
    if old is None:
        return f"{model}/{check}[{key}]: recorded {_short(value)}"
    if old == value:
        return f"{model}/{check}[{key}]: unchanged"
    return f"{model}/{check}[{key}]: {_short(old)} -> {_short(value)}"


def _short(value: Any, limit: int = 120) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def recorded(root: Path | None = None) -> dict[str, dict[str, list[str]]]:
    """What is on file: ``{model: {check: [device keys]}}``."""
    base = root or expectations_dir()
    return {
        p.stem: {c: sorted(v) for c, v in load(p.stem, base).items()} for p in sorted(base.glob("*.json"))
    }


def update_command(
    models: list[str], device: str | None = None, suite_dir: Path | None = None, workers: int = 0
) -> tuple[list[str], dict[str, str]]:
    """argv and extra env that re-record the slow suite's expectations for ``models`` on ``device``.

    ``device`` (e.g. ``cuda:1``) pins the run with ``CUDA_VISIBLE_DEVICES``; ``cpu`` hides GPUs.
    """
    suite = suite_dir or Path(__file__).with_name("slow")
    env = {UPDATE_ENV: "1", "RUN_SLOW": "1", "HARNESS_MODELS": ",".join(models)}
    if device is not None:
        dev = device.strip()
        if dev == "cpu":
            env["CUDA_VISIBLE_DEVICES"] = ""
        elif dev.startswith("cuda"):
            _, _, index = dev.partition(":")
            if index:
                env["CUDA_VISIBLE_DEVICES"] = index
        else:
            raise ValueError(f"device {device!r}: expected cpu, cuda or cuda:N")
    argv = [
        sys.executable,
        "-m",
        "pytest",
        str(suite),
        "-p",
        "no:cacheprovider",
        "-q",
        "-m",
        "not multi_gpu",
        "-n",
        str(workers),
        "-s",
    ]
    return argv, env
