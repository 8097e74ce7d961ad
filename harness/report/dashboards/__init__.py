"""Dashboards as code: build the Grafana JSON committed under `dashboards/json/`, and check it is current.

`harness dashboards build` writes one `<uid>.json` per dashboard; `harness dashboards push` uploads
them (harness/report/grafana.py). Provisioning files (datasource, dashboard provider, read-only role
SQL, docker-compose) live beside the JSON in `dashboards/`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.report.dashboards import benchmarks, ci_overview, history
from harness.report.dashboards.panels import Board, Query

BUILDERS = (ci_overview.build, history.build, benchmarks.build)
DEFAULT_OUT = Path("dashboards") / "json"


def boards() -> list[Board]:
    """Every dashboard, freshly built."""
    return [build() for build in BUILDERS]


def render(board: Board) -> str:
    """The committed form of a dashboard: sorted keys, two-space indent, trailing newline."""
    return json.dumps(board.to_json(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def build_dashboards(out: str | Path = DEFAULT_OUT) -> list[Path]:
    """Write every dashboard's JSON into `out`; returns the paths written."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HarnessError(f"cannot create {out}: {exc.strerror}") from None
    paths = []
    for board in boards():
        path = out / f"{board.uid}.json"
        path.write_text(render(board), encoding="utf-8")
        paths.append(path)
    return paths


def stale(out: str | Path = DEFAULT_OUT) -> list[str]:
    """Dashboards whose committed JSON differs from what the code builds (or is missing)."""
    out = Path(out)
    bad = []
    for board in boards():
        path = out / f"{board.uid}.json"
        if not path.exists() or path.read_text(encoding="utf-8") != render(board):
            bad.append(str(path))
    return bad


def load_dashboards(src: str | Path = DEFAULT_OUT) -> list[dict[str, Any]]:
    """The dashboard JSON files of `src` (what `push` uploads)."""
    src = Path(src)
    files = sorted(src.glob("*.json")) if src.is_dir() else []
    if not files:
        raise HarnessError(f"no dashboard JSON in {src}: run `harness dashboards build --out {src}` first")
    out = []
    for f in files:
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise HarnessError(f"{f} is not valid JSON: {exc}") from None
        if not isinstance(data, dict) or not data.get("uid") or not data.get("title"):
            raise HarnessError(f"{f} is not a dashboard (needs uid and title)")
        out.append(data)
    return out


__all__ = ["Board", "Query", "boards", "build_dashboards", "load_dashboards", "render", "stale"]
