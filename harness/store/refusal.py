"""Tell a database that refuses the URL (configuration error) from one that is not there (outage).

A server that answers and refuses — no such database (SQLSTATE 3D000), bad password (28P01), unknown
role or no pg_hba entry (28000) — will refuse every retry: `harness run` stops with exit 2 before any
test runs. Connection refused, timeouts, DNS failures and a server that is starting up are outages:
the tests run and the bundle is spooled. psycopg2 carries no SQLSTATE for errors raised while
connecting, so the server's (English) message is matched as well.
"""

from __future__ import annotations

import re

CONFIG_SQLSTATES = {"3D000": "no such database", "28P01": "authentication failed",
                    "28000": "not authorised"}
_PATTERNS = (
    (re.compile(r'database "[^"]*" does not exist'), "3D000"),
    (re.compile(r"password authentication failed|fe_sendauth: no password supplied"), "28P01"),
    (re.compile(r'role "[^"]*" does not exist|no pg_hba\.conf entry|authentication failed'), "28000"),
)


def _chain(exc: BaseException | None) -> list[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        orig = getattr(exc, "orig", None)
        if isinstance(orig, BaseException) and orig not in seen:
            seen.append(orig)
        exc = exc.__cause__ or exc.__context__
    return seen


def refusal(exc: BaseException) -> tuple[str, str] | None:
    """(SQLSTATE, server message) when `exc` (or what it wraps) is the server refusing the URL."""
    for err in _chain(exc):
        code = getattr(err, "pgcode", None) or getattr(err, "sqlstate", None)
        text = str(err).strip()
        line = next((ln.strip() for ln in text.splitlines() if "FATAL" in ln), text.splitlines()[0] if text else "")
        line = re.sub(r"^.*?FATAL:\s*", "", line)
        if code in CONFIG_SQLSTATES:
            return code, line
        for pattern, state in _PATTERNS:
            if pattern.search(text):
                return state, line
    return None


__all__ = ["CONFIG_SQLSTATES", "refusal"]
