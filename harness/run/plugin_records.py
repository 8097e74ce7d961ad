"""What the plugin does to records and errors, kept apart from its hooks (standard library only).

`coerce_properties` runs where a test ran (the xdist worker): everything a test recorded leaves it as
plain JSON, so execnet can send it and the bundle can hold it. `internal_error_line` names the cause
of a pytest INTERNALERROR in one line.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any

from harness.bundle import NotJSONError, plain_json, short_message
from harness.signature import exception_type, signature, skip_category, tail

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


FAILING = frozenset(("failed", "error", "crashed", "timeout", "xpass"))
_CAPTURED = ("Captured stdout", "Captured stderr", "Captured log")


def qualified_type(cls: type) -> str:
    """`RuntimeError` for a builtin, `torch.OutOfMemoryError` / `pkg.mod.MyError` otherwise."""
    module = getattr(cls, "__module__", "builtins")
    name = getattr(cls, "__qualname__", cls.__name__)
    return name if module in ("builtins", "__main__") else f"{module}.{name}"


_SECOND: list[Any] = [None, ""]  # the last whole second formatted, and its text: tests start many a second


def started_iso(start: float | None) -> str | None:
    """A report's `start` (seconds since the epoch) as ISO 8601 UTC with microseconds
    (`2026-01-02T03:04:05.123456+00:00`); the date and time of day are formatted once a second."""
    if not start:
        return None
    second = int(start)
    if _SECOND[0] != second:
        _SECOND[0], _SECOND[1] = second, datetime.fromtimestamp(second, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{_SECOND[1]}.{min(int((start - second) * 1e6), 999999):06d}+00:00"


def captured_output(sections: list[tuple[str, str]] | None) -> str | None:
    """The test's captured stdout, stderr and log (every phase, headed by pytest's section titles),
    bounded to its last `harness.signature.TAIL_BYTES`."""
    if not sections:
        return None
    parts = [f"----- {title} -----\n{content}" for title, content in sections
             if content and title.startswith(_CAPTURED)]
    return tail("\n".join(parts)) if parts else None


def failure_identity(outcome: str, message: str | None, typename: str | None, model: str | None,
                     sections: list[tuple[str, str]] | None, nodeid: str | None = None,
                     ) -> tuple[str | None, str | None, str | None, str | None]:
    """(exception, signature, skip_category, output_tail) of a result that did not pass: a failing
    one gets the first, second and fourth, a skipped or xfail one the third. The test's own id in
    its message (a crashed worker names it) is not part of the signature."""
    if outcome in FAILING:
        exc = exception_type(message, typename) if outcome != "xpass" else None
        text = message.replace(nodeid, "<test>") if message and nodeid and nodeid in message else message
        return exc, signature(exc, text, model), None, captured_output(sections)
    if outcome in ("skipped", "xfail"):
        return None, None, skip_category(message, xfail=outcome == "xfail"), None
    return None, None, None, None


__all__ = ["PLAIN", "RECORD_ERROR_PROPERTY", "captured_output", "coerce_properties", "failure_identity",
           "internal_error_line", "qualified_type", "started_iso"]
