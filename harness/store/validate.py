"""Validation of results-bundle lines before they reach the store (no SQLAlchemy: the plugin's
sidecar uses it too).

`check(data)` turns one decoded line into a record or raises `LineError` with the reason: wrong
types (a duration that is not a number, an attempt that is not an integer, a null node id), values
over the column sizes of the schema (tests/store/test_validate.py holds `LIMITS` to the entities),
bad timestamps, non-finite numbers. It also makes a line storable without rejecting it: NUL
characters are removed (Postgres refuses them), lone surrogates become U+FFFD, and messages are
capped at `MESSAGE_BYTES` (a captured-output tail, where a record carries one, keeps its end).
`RejectLog` writes the lines that cannot be stored, with their number and reason, to
`<bundle>.rejected.jsonl` (harness/store/bundle_files.py reads bundle files into it).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import fields
from datetime import datetime
from pathlib import Path
from typing import Any

from harness.bundle import RECORD_TYPES, Record, ResultRecord

MESSAGE_BYTES = 4096  # a failure message is kept to its first 4 kB
TAIL_BYTES = 8192  # a captured-output tail (any field named *tail*) to its last 8 kB
TEXT_CHARS = 65536  # node ids and other unbounded text: longer is refused, not cut
REJECTED_TEXT = 65536  # how much of a refused line its rejected record keeps
INT32 = 2**31 - 1
OUTCOMES = frozenset(("passed", "failed", "error", "skipped", "xfail", "xpass", "crashed", "timeout"))
RUN_STATUSES = frozenset(("running", "completed", "failed", "cancelled", "partial", "abandoned"))

# Column sizes of the schema, per record field (tests hold them to harness/store/schema.py).
LIMITS: dict[str, int] = {
    "uuid": 36, "run": 36, "repo": 512, "branch": 255, "commit_sha": 64, "commit_author": 255,
    "commit_email": 255, "event": 64, "workflow": 255, "runner_group": 64, "machine_type": 128,
    "hostname": 255, "gpu_name": 255, "python_version": 32, "torch_version": 64, "cuda_version": 32,
    "suites": 255, "status": 16, "model": 128, "suite": 64, "outcome": 16, "worker": 32, "device": 64,
    "config": 128, "dtype": 32, "exception": 255, "signature": 40, "skip_category": 16,
}
SKIP_CATEGORIES = frozenset(("not-applicable", "skipped"))
CAPPED = frozenset(("message", "commit_subject"))  # cut to MESSAGE_BYTES rather than refused
REQUIRED = {"run": ("uuid",), "result": ("run", "nodeid", "outcome"), "benchmark": ("run", "nodeid"),
            "run_end": ("run", "status", "finished_at")}
TIMESTAMPS = frozenset(("started_at", "finished_at", "created_at"))
INTEGERS = {"attempt": 1, "gpu_count": 0, "batch_size": 0, "prompt_length": 0, "gpu_index": 0}  # field: least value
SAMPLE_NUMBERS = ("cpu_util", "mem_megabytes", "gpu_util", "gpu_mem_megabytes")


class LineError(ValueError):
    """Why one bundle line cannot be stored."""


def _text(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if type(value) is not str:
        raise LineError(f"{name}: expected text, got {type(value).__name__}")
    limit = LIMITS.get(name)
    if limit is not None:
        if len(value) > limit:
            raise LineError(f"{name}: {len(value)} characters, at most {limit}")
        return value
    if name in CAPPED:
        return cap_head(value, MESSAGE_BYTES)
    if "tail" in name:
        return cap_tail(value, TAIL_BYTES)
    if len(value) > TEXT_CHARS:
        raise LineError(f"{name}: {len(value)} characters, at most {TEXT_CHARS}")
    return value


def cap_head(text: str, limit: int) -> str:
    """`text` cut to its first `limit` UTF-8 bytes, with a marker saying how much was cut."""
    if len(text) * 4 <= limit or len(data := text.encode("utf-8")) <= limit:
        return text
    kept = data[: limit - 40].decode("utf-8", "ignore")
    return f"{kept}… [{len(text) - len(kept)} characters cut]"


def cap_tail(text: str, limit: int) -> str:
    """`text` cut to its last `limit` UTF-8 bytes (the end of captured output is what explains it)."""
    if len(text) * 4 <= limit or len(data := text.encode("utf-8")) <= limit:
        return text
    kept = data[len(data) - limit + 40:].decode("utf-8", "ignore")
    return f"[{len(text) - len(kept)} characters cut] …{kept}"


def _int(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if type(value) is float and value.is_integer():
        value = int(value)
    if type(value) is not int:
        raise LineError(f"{name}: expected an integer, got {json.dumps(value)[:40]}")
    if not INTEGERS[name] <= value <= INT32:
        raise LineError(f"{name}: {value} is out of range ({INTEGERS[name]}..{INT32})")
    return value


def _number(name: str, value: Any) -> float | None:
    if value is None:
        return None
    if type(value) not in (int, float):
        raise LineError(f"{name}: expected a number, got {json.dumps(value)[:40]}")
    if not math.isfinite(value):
        raise LineError(f"{name}: {value} is not a finite number")
    return float(value)


def _timestamp(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if type(value) is not str:
        raise LineError(f"{name}: expected an ISO timestamp, got {json.dumps(value)[:40]}")
    try:
        datetime.fromisoformat(value)
    except ValueError:
        raise LineError(f"{name}: {value[:40]!r} is not an ISO timestamp") from None
    return value


def _json_value(name: str, value: Any, depth: int = 0) -> Any:
    """A JSON value storable in jsonb: finite numbers, NUL-free text, bounded nesting."""
    if depth > 20:
        raise LineError(f"{name}: nested too deeply")
    if isinstance(value, float) and not math.isfinite(value):
        raise LineError(f"{name}: {value} is not a finite number")
    if isinstance(value, str):
        return _clean(value)
    if isinstance(value, dict):
        return {_clean(str(k)): _json_value(name, v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_value(name, v, depth + 1) for v in value]
    return value


def _clean(text: str) -> str:
    """NULs removed, lone surrogates replaced (neither can be stored in Postgres text)."""
    if "\x00" in text:
        text = text.replace("\x00", "")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def _deep_clean(value: Any) -> Any:
    if isinstance(value, str):
        return _clean(value)
    if isinstance(value, dict):
        return {_clean(str(k)): _deep_clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_clean(v) for v in value]
    return value


def _samples(value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    if type(value) is not list:
        raise LineError("device_samples: expected a list")
    out = []
    for i, s in enumerate(value):
        if type(s) is not dict:
            raise LineError(f"device_samples[{i}]: expected an object")
        row = {k: _number(f"device_samples[{i}].{k}", s.get(k)) for k in SAMPLE_NUMBERS}
        row["gpu_index"] = _int("gpu_index", s.get("gpu_index"))
        row["time"] = _timestamp(f"device_samples[{i}].time", s.get("time"))
        out.append(row)
    return out


def _measurements(name: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if type(value) is not dict:
        raise LineError(f"{name}: expected an object")
    return _json_value(name, value)


def _other(name: str, value: Any) -> Any:
    """A field with no rule of its own: text is bounded and cleaned, other JSON values pass."""
    return _text(name, value) if type(value) is str else value


def _field_check(name: str) -> Callable[[str, Any], Any]:
    if name in TIMESTAMPS or name.endswith("_at"):
        return _timestamp
    if name in INTEGERS:
        return _int
    if name == "duration_s":
        return _number
    if name == "measurements":
        return _measurements
    if name == "device_samples":
        return lambda _n, v: _samples(v)
    if name in LIMITS or name in CAPPED or name in ("nodeid", "models"):
        return _text
    return _other


CHECKS: dict[str, tuple[type, tuple[tuple[str, Callable[[str, Any], Any]], ...]]] = {
    kind: (cls, tuple((f.name, _field_check(f.name)) for f in fields(cls))) for kind, cls in RECORD_TYPES.items()
}


_RESULT_BASE = ("run", "nodeid", "outcome", "duration_s", "model", "suite", "message", "attempt", "worker", "device",
                "started_at", "exception", "signature", "skip_category", "output_tail")
_RESULT_KEYS = frozenset(("kind", *_RESULT_BASE))
_RESULT_OTHER = {name: fn for name, fn in CHECKS["result"][1] if name not in _RESULT_KEYS}
_MESSAGE_CHARS = MESSAGE_BYTES // 4  # text this short is within MESSAGE_BYTES whatever its characters
_TAIL_CHARS = TAIL_BYTES // 4


def _started(value: Any) -> bool:
    """A plausible ISO timestamp, checked without parsing when it has the plugin's own form."""
    if value is None:
        return True
    if type(value) is not str or not 10 <= len(value) <= 40:
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _fast_result(d: dict[str, Any]) -> ResultRecord | None:
    """The common result line, checked inline (the hot path of an ingest); None when anything is
    unusual, for `check` to look at field by field and name the problem."""
    g = d.get
    run, nodeid, outcome, dur = g("run"), g("nodeid"), g("outcome"), g("duration_s", 0.0)
    model, suite, message, attempt = g("model"), g("suite"), g("message"), g("attempt", 1)
    worker, device = g("worker"), g("device")
    started, exc, sig, category, out = g("started_at"), g("exception"), g("signature"), g("skip_category"), \
        g("output_tail")
    if dur is None:
        dur = 0.0
    if not (type(run) is str and 0 < len(run) <= 36 and type(nodeid) is str and 0 < len(nodeid) <= TEXT_CHARS
            and type(outcome) is str and outcome in OUTCOMES
            and ((type(dur) is float and 0.0 <= dur < math.inf) or (type(dur) is int and 0 <= dur <= INT32))
            and type(attempt) is int and 1 <= attempt <= INT32
            and (model is None or (type(model) is str and len(model) <= 128))
            and (suite is None or (type(suite) is str and len(suite) <= 64))
            and (worker is None or (type(worker) is str and len(worker) <= 32))
            and (device is None or (type(device) is str and len(device) <= 64))
            and (message is None or (type(message) is str and len(message) <= _MESSAGE_CHARS))
            and (exc is None or (type(exc) is str and len(exc) <= 255))
            and (sig is None or (type(sig) is str and len(sig) <= 40))
            and (category is None or category in SKIP_CATEGORIES)
            and (out is None or (type(out) is str and len(out) <= _TAIL_CHARS))
            and _started(started)):
        return None
    rec = ResultRecord(run, nodeid, outcome, float(dur), model, suite, message, attempt, worker, device,
                       started, exc, sig, category, out)
    if len(d) > 16 or not _RESULT_KEYS.issuperset(d):  # fields beyond the common ones
        for name in d.keys() - _RESULT_KEYS:
            fn = _RESULT_OTHER.get(name)
            if fn is not None:
                setattr(rec, name, fn(name, d[name]))
    return rec


def check(data: Any) -> Record:
    """The record of one decoded bundle line, checked and made storable; `LineError` if it cannot be."""
    if type(data) is dict and data.get("kind") == "result":
        fast = _fast_result(data)
        if fast is not None:
            return fast
    if type(data) is not dict:
        raise LineError(f"expected a JSON object, got {type(data).__name__}")
    kind = data.get("kind")
    spec = CHECKS.get(kind) if type(kind) is str else None
    if spec is None:
        raise LineError(f"unknown record kind {str(kind)[:40]!r}")
    cls, checks = spec
    for name in REQUIRED[kind]:
        value = data.get(name)
        if value is None or value == "":
            raise LineError(f"{name}: missing (required in a {kind!r} record)")
    values = {}
    for name, fn in checks:
        if name in data:
            value = fn(name, data[name])
            if value is not None or name not in INTEGERS:
                values[name] = value
    if kind == "result" and values["outcome"] not in OUTCOMES:
        raise LineError(f"outcome: {values['outcome'][:20]!r} is not one of {', '.join(sorted(OUTCOMES))}")
    if kind == "result" and values.get("skip_category") not in (None, *SKIP_CATEGORIES):
        raise LineError(f"skip_category: {values['skip_category'][:20]!r} is not one of "
                        f"{', '.join(sorted(SKIP_CATEGORIES))}")
    if kind in ("run", "run_end") and values.get("status", "running") not in RUN_STATUSES:
        raise LineError(f"status: {values['status'][:20]!r} is not one of {', '.join(sorted(RUN_STATUSES))}")
    if values.get("duration_s", 0.0) is None:
        values["duration_s"] = 0.0
    elif values.get("duration_s", 0.0) < 0:
        raise LineError(f"duration_s: {values['duration_s']} is negative")
    return cls(**values)


def check_line(raw: bytes) -> Record | None:
    """The record of one raw line (None for a blank line); `LineError` when it is not storable."""
    if not raw.strip():
        return None
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LineError(f"not valid UTF-8 (byte {exc.start})") from None
    if "\x00" in line:
        line = line.replace("\x00", "")
    try:
        data = json.loads(line)
    except ValueError as exc:
        raise LineError(f"malformed JSON: {exc}") from None
    if "\\u" in line and ("\\u0000" in line or "\\ud" in line or "\\uD" in line):
        data = _deep_clean(data)
    return check(data)


class RejectLog:
    """The refused lines of one input, written to `<input>.rejected.jsonl` (one JSON object a line:
    line number, reason, and the line itself, cut at REJECTED_TEXT); a stale file is removed."""

    def __init__(self, source: str | os.PathLike[str]) -> None:
        self.source = Path(source)
        self.path = self.source.with_name(self.source.name + ".rejected.jsonl")
        self.count = 0
        self.error: str | None = None
        self._fh: Any = None
        try:
            self.path.unlink(missing_ok=True)
        except OSError:
            pass

    def reject(self, line: int, reason: str, text: bytes | str = b"") -> None:
        self.count += 1
        if self.error is not None:
            return
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        entry = {"line": line, "reason": reason, "text": text.rstrip("\n")[:REJECTED_TEXT]}
        try:
            if self._fh is None:
                self._fh = open(self.path, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()
            self._fh.write(json.dumps(entry, ensure_ascii=False) + "\n")
        except OSError as exc:
            self.error = f"cannot write {self.path}: {exc.strerror}"

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
