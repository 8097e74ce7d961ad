"""What the plugin does to records and errors, kept apart from its hooks (standard library only).

`coerce_properties` runs where a test ran (the xdist worker): everything a test recorded leaves it as
plain JSON, so execnet can send it and the bundle can hold it. `internal_error_line` names the cause
of a pytest INTERNALERROR in one line.
"""

from __future__ import annotations

import re
from typing import Any

from harness.bundle import NotJSONError, plain_json, short_message

RECORD_ERROR_PROPERTY = "harness_record_error"
PLAIN = (str, int, float, bool, type(None))
_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*)?(Error|Exception|Exit|Interrupt)\b(:|$)")


def coerce_properties(props: list[tuple[str, object]]) -> list[tuple[str, object]]:
    """`user_properties` as plain JSON values, so that they cross the xdist boundary (execnet cannot
    send e.g. `torch.__version__`, a str subclass) and the bundle. A harness record that has no JSON
    form is replaced by a `harness_record_error` naming the field (the test becomes an `error`);
    another plugin's property becomes its (bounded) repr."""
    out: list[tuple[str, object]] = []
    for name, value in props:
        name = str(name)
        try:
            out.append((name, plain_json(value, name)))
        except NotJSONError as exc:
            if name.startswith("harness_"):
                out.append((RECORD_ERROR_PROPERTY, f"record not stored: {exc}"))
            else:
                out.append((name, short_message(repr(value), 200)))
    return out


def internal_error_line(excrepr: Any, excinfo: Any) -> str:
    """One line for an INTERNALERROR (an xdist worker's arrives at the controller as an AssertionError
    holding the worker's traceback: its last exception line names the real error)."""
    value = getattr(excinfo, "value", None)
    text = str(value) if value is not None else str(excrepr)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    raised = [ln for ln in lines if _EXCEPTION_LINE.match(ln)]
    if isinstance(value, AssertionError) and raised:
        line = raised[-1]
    elif value is not None:
        line = f"{type(value).__name__}: {lines[0] if lines else ''}"
    else:
        line = lines[-1] if lines else ""
    return short_message(f"pytest INTERNALERROR: {line}", 500) or "pytest INTERNALERROR"


__all__ = ["PLAIN", "RECORD_ERROR_PROPERTY", "coerce_properties", "internal_error_line"]
