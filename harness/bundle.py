"""The results bundle: JSONL written as tests finish, the record of truth when the store is down.

One line per record, each with a `kind`:
``run`` (header: run metadata), ``result`` (one test attempt), ``benchmark`` (one measured model
configuration with its device samples) and ``run_end`` (final status). Every line carries the run's
`uuid`, so bundles can be concatenated and ingested in any order, any number of times.
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid as uuid_mod
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

MESSAGE_LIMIT = 2000


class BundleError(HarnessError):
    """A bundle file that cannot be read."""


@dataclass
class RunRecord:
    """Metadata of one run (mirrors the `runs` table)."""

    uuid: str = field(default_factory=lambda: str(uuid_mod.uuid4()))
    repo: str | None = None
    branch: str | None = None
    commit_sha: str | None = None
    commit_subject: str | None = None
    commit_author: str | None = None
    commit_email: str | None = None
    event: str | None = None
    workflow: str | None = None
    runner_group: str | None = None
    machine_type: str | None = None
    hostname: str | None = None
    gpu_name: str | None = None
    gpu_count: int = 0
    python_version: str | None = None
    torch_version: str | None = None
    cuda_version: str | None = None
    suites: str | None = None
    models: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    status: str = "running"


@dataclass
class ResultRecord:
    """One attempt of one test (mirrors `test_results`)."""

    run: str
    nodeid: str
    outcome: str
    duration_s: float = 0.0
    model: str | None = None
    suite: str | None = None
    message: str | None = None
    attempt: int = 1
    worker: str | None = None
    device: str | None = None
    started_at: str | None = None  # UTC, ISO 8601: when the test's setup began
    exception: str | None = None  # failed / error: the exception type ("RuntimeError", "torch.OutOfMemoryError")
    signature: str | None = None  # failing outcomes: harness.signature.signature (16 hex)
    skip_category: str | None = None  # skipped / xfail: "not-applicable" | "skipped"
    output_tail: str | None = None  # failing outcomes: the end of captured stdout / stderr / log (8 kB)


@dataclass
class BenchmarkRecord:
    """One measured model configuration (seed-compatible `benchmarks` + measurement tables)."""

    run: str
    nodeid: str
    model: str | None = None
    config: str | None = None
    dtype: str | None = None
    batch_size: int | None = None
    prompt_length: int | None = None
    gpu_name: str | None = None
    measurements: dict[str, Any] = field(default_factory=dict)
    device_samples: list[dict[str, Any]] = field(default_factory=list)
    created_at: str | None = None


@dataclass
class RunEnd:
    """The final status of a run."""

    run: str
    status: str
    finished_at: str


RECORD_TYPES: dict[str, type] = {
    "run": RunRecord, "result": ResultRecord, "benchmark": BenchmarkRecord, "run_end": RunEnd,
}
_KIND_OF = {cls: kind for kind, cls in RECORD_TYPES.items()}
_FIELDS = {cls: frozenset(f.name for f in fields(cls)) for cls in RECORD_TYPES.values()}
Record = RunRecord | ResultRecord | BenchmarkRecord | RunEnd


def short_message(text: str | None, limit: int = MESSAGE_LIMIT) -> str | None:
    """The first `limit` characters of a failure message (NUL bytes removed: Postgres rejects them)."""
    if not text:
        return None
    text = text.replace("\x00", "\\0")
    return text if len(text) <= limit else text[: limit - 1] + "…"


class NotJSONError(ValueError):
    """A recorded value that has no plain JSON form; `path` names the field (``a.b[2]``)."""

    def __init__(self, path: str, value: object, why: str = "") -> None:
        self.path = path
        super().__init__(f"{path} is {type(value).__name__}{f' ({why})' if why else ''}, not a JSON value")


_SCALARS = (str, int, bool, type(None))


def plain_json(value: Any, path: str = "value") -> Any:
    """`value` as plain JSON types (str, int, float, bool, None, list, dict with str keys).

    Subclasses of str / int / float (``torch.__version__`` is a str subclass, numpy floats are float
    subclasses) become their base type, scalars with ``.item()`` (numpy, 0-d tensors) their Python
    value, tuples lists. Anything else, and a NaN or infinite float (Postgres jsonb rejects them),
    raises NotJSONError naming the field."""
    kind = type(value)
    if kind in _SCALARS:
        return value
    if kind is float:
        if math.isfinite(value):
            return value
        raise NotJSONError(path, value, f"{value!r}")
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return plain_json(float(value), path)
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, (str, int)) or isinstance(key, bool):
                raise NotJSONError(f"{path} key {key!r}", key, "keys must be strings")
            out[str(key)] = plain_json(item, f"{path}.{key}")
        return out
    if isinstance(value, (list, tuple)):
        return [plain_json(item, f"{path}[{i}]") for i, item in enumerate(value)]
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "ndim", 0) == 0:
        try:
            scalar = item()
        except Exception:  # noqa: BLE001 - e.g. a tensor of several elements
            scalar = value
        if type(scalar) in (*_SCALARS, float):
            return plain_json(scalar, path)
    raise NotJSONError(path, value)


_encode = json.JSONEncoder(ensure_ascii=False, allow_nan=False).encode  # one encoder: a line per test


_quote = json.encoder.encode_basestring  # what the encoder above writes for a str (ensure_ascii off)
_RESULT_TEXT = ("model", "suite", "message", "worker", "device", "started_at", "exception", "signature",
                "skip_category", "output_tail")


def _result_line(r: ResultRecord) -> str | None:
    """The line of a result, written field by field (a line per test: ~3x faster than the encoder);
    None when a value is not of its declared type (the encoder then decides, or names the field)."""
    dur, attempt = r.duration_s, r.attempt
    if type(r.run) is not str or type(r.nodeid) is not str or type(r.outcome) is not str or \
            not _finite(dur) or type(attempt) is not int:
        return None
    d = r.__dict__
    text = _texts([d[name] for name in _RESULT_TEXT])
    if text is None:
        return None
    return (f'{{"kind": "result", "run": {_quote(r.run)}, "nodeid": {_quote(r.nodeid)}, "outcome": '
            f'{_quote(r.outcome)}, "duration_s": {dur!r}, "model": {text[0]}, "suite": {text[1]}, "message": '
            f'{text[2]}, "attempt": {attempt}, "worker": {text[3]}, "device": {text[4]}, "started_at": {text[5]}, '
            f'"exception": {text[6]}, "signature": {text[7]}, "skip_category": {text[8]}, "output_tail": {text[9]}}}\n')


_INF = float("inf")


def _finite(value: object) -> bool:
    return type(value) is float and value == value and value not in (_INF, -_INF)  # type: ignore[comparison-overlap]


def _texts(values: list[str | None]) -> list[str] | None:
    """Each value as JSON (a string or null), or None if one is of another type."""
    text = []
    for v in values:
        if v is None:
            text.append("null")
        elif type(v) is str:
            text.append(_quote(v))
        else:
            return None
    return text


class PassedLines:
    """Lines of the passing results of one run, suite and attempt: what `to_line` writes for a
    `ResultRecord` with outcome `passed` and no message or failure fields, from text made once per run
    (the plugin's most common line: a test that passed). `line` returns None for a value of another
    type than its field's; `to_line` of the record then decides."""

    def __init__(self, run: str, suite: str | None, attempt: int) -> None:
        self.ok = type(run) is str and (suite is None or type(suite) is str) and type(attempt) is int
        self.head = f'{{"kind": "result", "run": {_quote(run) if type(run) is str else ""}, "nodeid": '
        suite_text = "null" if suite is None or type(suite) is not str else _quote(suite)
        self.middle = f', "suite": {suite_text}, "message": null, "attempt": {attempt}, "worker": '
        self.tail = ', "exception": null, "signature": null, "skip_category": null, "output_tail": null}\n'

    def line(self, nodeid: str, duration_s: float, model: str | None, worker: str | None, device: str | None,
             started_at: str | None) -> str | None:
        text = _texts([model, worker, device, started_at])
        if not self.ok or type(nodeid) is not str or not _finite(duration_s) or text is None:
            return None
        return (f'{self.head}{_quote(nodeid)}, "outcome": "passed", "duration_s": {duration_s!r}, "model": {text[0]}'
                f'{self.middle}{text[1]}, "device": {text[2]}, "started_at": {text[3]}{self.tail}')


def to_line(record: Record) -> str:
    """One bundle line; raises NotJSONError (naming the field) for a value that is not plain JSON."""
    if type(record) is ResultRecord:
        line = _result_line(record)
        if line is not None:
            return line
    data = {"kind": _KIND_OF[type(record)], **record.__dict__}  # flat dataclasses: no deep copy needed
    try:
        return _encode(data) + "\n"
    except (TypeError, ValueError):  # coerce (numpy scalars...) or raise naming the field
        return json.dumps(plain_json(data, _KIND_OF[type(record)]), ensure_ascii=False, allow_nan=False) + "\n"


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"


class BundleWriter:
    """Appends records to a bundle, flushing each write so a crash loses nothing written.

    `keep_going`: a write that fails (disk full, file system gone) does not raise; the writer stops
    writing and `error` says why, so that a test session goes on and its recorder can say its record is
    incomplete. Otherwise the OSError is raised."""

    def __init__(self, path: str | os.PathLike[str], flush_s: float = 0.0, keep_going: bool = False) -> None:
        self.path = Path(path)
        self.flush_s = flush_s
        self.keep_going = keep_going
        self.error: str | None = None
        self._flushed = 0.0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        torn = self.path.exists() and self.path.stat().st_size > 0 and not _ends_with_newline(self.path)
        self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        if torn:  # a previous writer died mid-line: keep its fragment on a line of its own
            self._fh.write("\n")

    def write(self, record: Record) -> None:
        """Append one record; the file is flushed at most `flush_s` after it (and on close)."""
        self.write_line(to_line(record))

    def write_line(self, line: str) -> None:
        """Append one line made by `to_line` or `PassedLines` (same flushing as `write`)."""
        if self.error is not None:
            return
        try:
            self._fh.write(line)
            now = time.monotonic()
            if now - self._flushed >= self.flush_s:
                self._fh.flush()
                self._flushed = now
        except OSError as exc:
            self._failed(exc)

    def _failed(self, exc: OSError) -> None:
        if not self.keep_going:
            raise exc
        self.error = self.error or f"cannot write {self.path}: {exc.strerror or exc}"

    def close(self) -> None:
        try:
            self._fh.close()
        except OSError as exc:
            self._failed(exc)

    def __enter__(self) -> BundleWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def from_dict(data: dict[str, Any]) -> Record:
    kind = data.pop("kind", None)
    cls = RECORD_TYPES.get(kind)  # type: ignore[arg-type]
    if cls is None:
        raise ValueError(f"unknown record kind {kind!r}")
    known = _FIELDS[cls]
    return cls(**{k: v for k, v in data.items() if k in known})


def read_bundle(path: str | os.PathLike[str]) -> Iterator[Record]:
    """Records of a bundle. Torn lines (a writer killed mid-line) are skipped; a file with no valid
    record at all is not a bundle."""
    p = Path(path)
    try:
        fh = open(p, encoding="utf-8", errors="surrogateescape")  # noqa: SIM115
    except OSError as exc:
        raise BundleError(f"cannot read bundle {p}: {exc.strerror}") from None
    good = bad = 0
    with fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                record = from_dict(json.loads(line))
            except (ValueError, TypeError, AttributeError):
                bad += 1
                continue
            good += 1
            yield record
    if bad and not good:
        raise BundleError(f"{p} is not a results bundle (no valid JSONL record)")
