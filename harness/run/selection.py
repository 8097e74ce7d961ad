"""pytest plugin (`-p harness.run.selection`) that keeps only tests whose node id matches one of the
globs in HARNESS_SELECT (JSON list; see `glob_regex`). `harness run` loads it only for targets whose
`select` templates are node-id patterns; `-k` templates go to pytest as `-k`."""

from __future__ import annotations

import json
import os
from typing import Any

from harness.run.attribution import glob_regex

ENV = "HARNESS_SELECT"


def pytest_collection_modifyitems(session: Any, config: Any, items: list[Any]) -> None:
    globs = json.loads(os.environ.get(ENV) or "[]")
    if not globs:
        return
    patterns = [glob_regex(g) for g in globs]
    keep, drop = [], []
    for item in items:
        (keep if any(p.match(item.nodeid) for p in patterns) else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
