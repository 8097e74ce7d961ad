"""Grafana dashboards as plain dicts (schemaVersion 39), over the Postgres datasource `harness-postgres`.

grafana-foundation-sdk was tried: it has no typed query builder for SQL datasources, so every panel
would need a hand-made query class; plain dicts are shorter. Each query is also kept as a `Query`
(SQL + the columns its panel reads), so the tests can run every panel's SQL against Postgres.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DATASOURCE = {"type": "grafana-postgresql-datasource", "uid": "harness-postgres"}
SCHEMA_VERSION = 39


@dataclass(frozen=True)
class Query:
    """One SQL query of a dashboard and the columns its panel (or annotation) expects."""

    where: str  # panel title, variable name or annotation name
    sql: str
    columns: tuple[str, ...]
    kind: str = "panel"  # panel | variable | annotation


@dataclass
class Board:
    """A dashboard being built: panels laid out left to right, 24 columns wide."""

    uid: str
    title: str
    description: str
    tags: list[str] = field(default_factory=lambda: ["harness"])
    time_from: str = "now-30d"
    panels: list[dict[str, Any]] = field(default_factory=list)
    variables: list[dict[str, Any]] = field(default_factory=list)
    annotations: list[dict[str, Any]] = field(default_factory=list)
    queries: list[Query] = field(default_factory=list)
    links: list[dict[str, Any]] = field(default_factory=list)
    _x: int = 0
    _y: int = 0
    _row_h: int = 0

    def _place(self, w: int, h: int) -> dict[str, int]:
        if self._x + w > 24:
            self._x, self._y, self._row_h = 0, self._y + self._row_h, 0
        pos = {"x": self._x, "y": self._y, "w": w, "h": h}
        self._x += w
        self._row_h = max(self._row_h, h)
        return pos

    def panel(self, kind: str, title: str, sql: str, columns: tuple[str, ...], *, w: int = 12, h: int = 8,
              fmt: str = "time_series", unit: str | None = None, description: str = "",
              options: dict[str, Any] | None = None, custom: dict[str, Any] | None = None,
              overrides: list[dict[str, Any]] | None = None) -> None:
        """Add a panel of `kind` (timeseries, table, barchart, state-timeline, stat) with one SQL query."""
        defaults: dict[str, Any] = {"custom": custom or {}}
        if unit:
            defaults["unit"] = unit
        self.panels.append({
            "id": len(self.panels) + 1, "type": kind, "title": title, "description": description,
            "datasource": DATASOURCE, "gridPos": self._place(w, h),
            "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
            "options": options or {},
            "targets": [{"refId": "A", "datasource": DATASOURCE, "editorMode": "code", "format": fmt,
                         "rawQuery": True, "rawSql": sql.strip()}],
        })
        self.queries.append(Query(title, sql.strip(), columns))

    def query_variable(self, name: str, label: str, sql: str, *, multi: bool = True,
                       include_all: bool = True) -> None:
        """A variable filled by SQL (one column: `__text`/`__value` or the first column)."""
        self.variables.append({
            "name": name, "label": label, "type": "query", "datasource": DATASOURCE,
            "query": sql.strip(), "definition": sql.strip(), "refresh": 2, "sort": 1,
            "multi": multi, "includeAll": include_all, "current": {}, "options": [],
            **({"allValue": None} if include_all else {}),
        })
        columns = ("__text", "__value") if "__text" in sql else ("__value",)
        self.queries.append(Query(name, sql.strip(), columns, "variable"))

    def custom_variable(self, name: str, label: str, values: list[str], default: str) -> None:
        self.variables.append({
            "name": name, "label": label, "type": "custom", "query": ",".join(values), "multi": False,
            "includeAll": False, "current": {"text": default, "value": default},
            "options": [{"text": v, "value": v, "selected": v == default} for v in values],
        })

    def annotation(self, name: str, sql: str, color: str) -> None:
        """An annotation query returning time, text and tags."""
        self.annotations.append({
            "name": name, "datasource": DATASOURCE, "enable": True, "iconColor": color,
            "target": {"refId": "Anno", "editorMode": "code", "format": "table", "rawQuery": True,
                       "rawSql": sql.strip()},
        })
        self.queries.append(Query(name, sql.strip(), ("time", "text", "tags"), "annotation"))

    def to_json(self) -> dict[str, Any]:
        builtin = {"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True,
                   "hide": True, "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts",
                   "type": "dashboard"}
        return {
            "uid": self.uid, "title": self.title, "description": self.description, "tags": self.tags,
            "timezone": "utc", "editable": True, "graphTooltip": 1, "schemaVersion": SCHEMA_VERSION,
            "time": {"from": self.time_from, "to": "now"}, "refresh": "",
            "annotations": {"list": [builtin, *self.annotations]},
            "templating": {"list": self.variables}, "panels": self.panels, "links": self.links,
        }


def filter_variable_sql(table: str, column: str) -> str:
    """Distinct values of a text column for a filter variable; NULL shows as '(none)'."""
    return (f"SELECT DISTINCT coalesce({column}, '(none)') AS __value FROM {table} "
            f"ORDER BY 1")


def dim_variable_sql(kind: str) -> str:
    """Values of a filter variable kept at write time (`rollup_dims`: model, branch, runner_group)."""
    return f"SELECT value AS __value FROM rollup_dims WHERE kind = '{kind}' ORDER BY 1"


def in_filter(column: str, variable: str) -> str:
    """`column IN (<selected values>)`, NULLs matching '(none)'."""
    return f"coalesce({column}, '(none)') IN (${{{variable}:sqlstring}})"


FINAL_RESULTS = """final AS (
  SELECT DISTINCT ON (run_id, nodeid_hash) *
  FROM test_results
  ORDER BY run_id, nodeid_hash, attempt DESC
)"""
