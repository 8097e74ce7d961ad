"""Model zoo under test: pure PyTorch, one file per family, no platform imports.

A family is a ``models/<family>.py`` that defines ``class ModelArgs`` (the platform scans for that
line); each exposes ``ModelArgs.from_name``, ``Transformer.from_name`` and ``build``.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from types import ModuleType

_MARKER = re.compile(r"^class ModelArgs\b", re.MULTILINE)


def list_families() -> list[str]:
    """Family names (file stems) of every ``models/*.py`` defining ``class ModelArgs``."""
    here = Path(__file__).parent
    return sorted(
        p.stem
        for p in here.glob("*.py")
        if not p.name.startswith("_") and _MARKER.search(p.read_text(encoding="utf-8"))
    )


def load_family(name: str) -> ModuleType:
    """Import ``models.<name>``; ValueError for an unknown family."""
    if name not in list_families():
        raise ValueError(f"unknown model family {name!r}; known: {', '.join(list_families())}")
    return importlib.import_module(f"models.{name}")
