"""Expanding Grafana's SQL macros and template variables the way Grafana's Postgres datasource does,
so each panel's query can be run as-is against Postgres in the tests."""

from __future__ import annotations

import re

TIME_FROM = "2000-01-01T00:00:00Z"
TIME_TO = "2100-01-01T00:00:00Z"
INTERVALS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def sqlstring(values: list[str]) -> str:
    """Grafana's `:sqlstring` format: each value single-quoted with quotes doubled, comma-joined."""
    return ",".join("'" + v.replace("'", "''") + "'" for v in values)


def _seconds(interval: str) -> int:
    m = re.fullmatch(r"'?(\d+)([smhd])'?", interval.strip())
    assert m, f"unsupported interval {interval!r}"
    return int(m.group(1)) * INTERVALS[m.group(2)]


def expand(sql: str, variables: dict[str, list[str]], time_from: str = TIME_FROM, time_to: str = TIME_TO) -> str:
    """`sql` with $__timeFilter / $__timeGroupAlias / $__timeFrom / $__timeTo and variables replaced
    (the dashboard's time range is `time_from` .. `time_to`, RFC 3339 UTC, as Grafana sends it)."""
    sql = re.sub(r"\$__timeFilter\(([^)]+)\)", rf"\1 BETWEEN '{time_from}' AND '{time_to}'", sql)

    def group(m: re.Match[str]) -> str:
        col, interval = m.group(1).rsplit(",", 1)
        s = _seconds(interval)
        return f'floor(extract(epoch from {col.strip()})/{s})*{s} AS "time"'

    sql = re.sub(r"\$__timeGroupAlias\(([^)]+)\)", group, sql)
    sql = sql.replace("$__timeFrom()", f"'{time_from}'").replace("$__timeTo()", f"'{time_to}'")
    sql = re.sub(r"\$\{(\w+):sqlstring\}", lambda m: sqlstring(variables[m.group(1)]), sql)
    sql = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: ",".join(variables[m.group(1) or m.group(2)]), sql)
    assert "$" not in sql.replace("$$", ""), f"unexpanded macro in {sql}"
    return sql
