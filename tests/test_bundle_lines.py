"""Bundle lines of results: the field-by-field writer of the plugin's hot path (harness/bundle.py) writes
exactly what the JSON encoder writes, for any text (quotes, control characters, non-ASCII), any float,
and hands values of another type to the encoder, which names a value that is not plain JSON."""

from __future__ import annotations

import json
import random
from dataclasses import fields

import pytest

from harness.bundle import _KIND_OF, NotJSONError, PassedLines, ResultRecord, _encode, to_line

TEXTS = ["a", "é ü", 'q"uote\\back', "tab\tnl\n", "\x00\x1f\x7f", "日本語", "", "x" * 5000]


def _reference(record: ResultRecord) -> str:
    return _encode({"kind": _KIND_OF[ResultRecord], **record.__dict__}) + "\n"


def test_any_text_and_float_give_the_encoders_line() -> None:
    rnd = random.Random(7)
    optional = [f.name for f in fields(ResultRecord) if f.type == "str | None"]
    for _ in range(5000):
        record = ResultRecord(run=rnd.choice(TEXTS), nodeid=rnd.choice(TEXTS), outcome=rnd.choice(TEXTS),
                              duration_s=rnd.choice([0.0, 1.5, 1e-7, 0.1 + 0.2, 1e300, -2.0]),
                              attempt=rnd.choice([1, 2, 10]), **{k: rnd.choice([*TEXTS, None]) for k in optional})
        line = to_line(record)
        assert line == _reference(record)
        assert json.loads(line) == {"kind": "result", **record.__dict__}


@pytest.mark.parametrize("field, value", [("duration_s", 3), ("attempt", True), ("model", 5)])
def test_other_types_go_through_the_encoder(field: str, value: object) -> None:
    record = ResultRecord(run="r", nodeid="t::a", outcome="passed", **{field: value})
    assert to_line(record) == _reference(record)
    assert json.loads(to_line(record))[field] == value


@pytest.mark.parametrize("field, value", [("duration_s", float("nan")), ("duration_s", float("inf")),
                                          ("message", b"x")])
def test_a_value_that_is_not_json_is_named(field: str, value: object) -> None:
    with pytest.raises(NotJSONError, match=field):
        to_line(ResultRecord(run="r", nodeid="t::a", outcome="passed", **{field: value}))


def test_passed_lines_are_the_encoders_line_of_the_same_record() -> None:
    """The plugin writes a passing test's line from text made once per run (`PassedLines`): byte for
    byte what `to_line` writes for the same record, whatever the texts; None for a value of another type."""
    rnd = random.Random(11)
    for _ in range(3000):
        run, suite = rnd.choice(TEXTS), rnd.choice([*TEXTS, None])
        attempt = rnd.choice([1, 2, 10])
        lines = PassedLines(run, suite, attempt)
        values = {"nodeid": rnd.choice(TEXTS), "duration_s": rnd.choice([0.0, 1.5, 1e-7, 0.1 + 0.2, 1e300]),
                  **{k: rnd.choice([*TEXTS, None]) for k in ("model", "worker", "device", "started_at")}}
        record = ResultRecord(run=run, outcome="passed", suite=suite, attempt=attempt, **values)
        assert lines.line(**values) == to_line(record) == _reference(record)


@pytest.mark.parametrize("field, value", [("duration_s", 3), ("duration_s", float("nan")), ("model", 5),
                                          ("nodeid", b"t"), ("started_at", 1.0)])
def test_passed_lines_refuse_other_types(field: str, value: object) -> None:
    values: dict[str, object] = {"nodeid": "t::a", "duration_s": 0.5, "model": None, "worker": None, "device": "cpu",
                                 "started_at": None, field: value}
    assert PassedLines("r", "slow", 1).line(**values) is None  # type: ignore[arg-type]
    assert PassedLines("r", 7, 1).line("t::a", 0.5, None, None, None, None) is None  # type: ignore[arg-type]
