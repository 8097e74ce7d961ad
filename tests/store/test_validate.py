"""Ingest validates each bundle line (real Postgres and SQLite): good lines are stored, bad ones go to
`<bundle>.rejected.jsonl` with their line number and reason, NULs are stripped, messages capped."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import String, func, select

from harness.errors import HarnessError
from harness.ingest import ingest
from harness.store import Store
from harness.store.schema import Benchmark, ModelMeasurement, Run, TestResult
from harness.store.validate import LIMITS, MESSAGE_BYTES, TAIL_BYTES, cap_tail

RUN = {"kind": "run", "uuid": "val-run", "branch": "main", "started_at": "2026-12-01T00:00:00+00:00"}


def result(i: int, **over: object) -> dict:
    return {"kind": "result", "run": "val-run", "nodeid": f"tests/t.py::test_{i}", "outcome": "passed",
            "duration_s": 0.5, "model": "llama", "suite": "slow", "attempt": 1, **over}


# name -> (line as written, a fragment of the reason recorded for it)
BAD_LINES: dict[str, tuple[str, str]] = {
    "duration not a number": (json.dumps(result(100, duration_s="abc")), "duration_s: expected a number"),
    "duration not finite": (json.dumps(result(101)).replace("0.5", "NaN"), "duration_s: nan is not a finite"),
    "duration negative": (json.dumps(result(102, duration_s=-1)), "duration_s: -1.0 is negative"),
    "attempt not an integer": (json.dumps(result(103, attempt=1.5)), "attempt: expected an integer"),
    "attempt as text": (json.dumps(result(104, attempt="2")), "attempt: expected an integer"),
    "attempt zero": (json.dumps(result(105, attempt=0)), "attempt: 0 is out of range"),
    "null node id": (json.dumps(result(106, nodeid=None)), "nodeid: missing"),
    "node id not text": (json.dumps(result(107, nodeid=7)), "nodeid: expected text"),
    "bad outcome": (json.dumps(result(108, outcome="great")), "outcome: 'great' is not one of"),
    "model name too long": (json.dumps(result(109, model="m" * 129)), "model: 129 characters, at most 128"),
    "worker too long": (json.dumps(result(110, worker="w" * 33)), "worker: 33 characters, at most 32"),
    "bad timestamp": (json.dumps({**RUN, "uuid": "other-run", "started_at": "yesterday"}),
                      "started_at: 'yesterday' is not an ISO timestamp"),
    "run end without time": (json.dumps({"kind": "run_end", "run": "val-run", "status": "completed"}),
                             "finished_at: missing"),
    "bad run status": (json.dumps({"kind": "run_end", "run": "val-run", "status": "weird",
                                   "finished_at": "2026-12-01T00:05:00Z"}), "status: 'weird' is not one of"),
    "unknown kind": (json.dumps({"kind": "resulted", "run": "val-run"}), "unknown record kind 'resulted'"),
    "malformed JSON": ('{"kind": "result", "run": "val-run", "nodeid": ', "malformed JSON"),
    "not an object": ("[1, 2, 3]", "expected a JSON object, got list"),
    "measurements not an object": (json.dumps({"kind": "benchmark", "run": "val-run", "nodeid": "b.py::test_b",
                                               "measurements": [1, 2]}), "measurements: expected an object"),
    "device sample not a number": (json.dumps({"kind": "benchmark", "run": "val-run", "nodeid": "b.py::test_c",
                                               "device_samples": [{"cpu_util": "hot"}]}),
                                   "device_samples[0].cpu_util: expected a number"),
    "invalid UTF-8": ('{"kind": "result", "run": "val-run", "nodeid": "t.py::\udcff", "outcome": "passed"}',
                      "not valid UTF-8"),
}


def write_bundle(path: Path, good: int = 20) -> tuple[Path, dict[int, str]]:
    """A bundle of good lines with every bad line of BAD_LINES between them; bad line number -> case."""
    lines = [json.dumps(RUN)]
    bad_at: dict[int, str] = {}
    cases = list(BAD_LINES)
    for i in range(good):
        lines.append(json.dumps(result(i)))
        if cases:
            name = cases.pop(0)
            lines.append(BAD_LINES[name][0])
            bad_at[len(lines)] = name
    lines += [BAD_LINES[name][0] for name in cases]
    bad_at.update({len(lines) - len(cases) + k + 1: name for k, name in enumerate(cases)})
    lines += ["", json.dumps({"kind": "run_end", "run": "val-run", "status": "completed",
                              "finished_at": "2026-12-01T00:05:00Z"})]
    path.write_bytes("\n".join(lines).encode("utf-8", "surrogateescape") + b"\n")
    return path, bad_at


def _count(store: Store, entity) -> int:
    with store.session() as s:
        return s.scalar(select(func.count()).select_from(entity))


def test_limits_match_the_schema() -> None:
    from harness.store.schema import Base

    for name, limit in LIMITS.items():
        column = {"uuid": "runs.uuid", "run": "runs.uuid", "outcome": "test_results.outcome",
                  "config": "benchmarks.config", "dtype": "benchmarks.dtype", "status": "runs.status"}.get(name)
        tables = [column.split(".")[0]] if column else ["runs", "test_results", "benchmarks"]
        col = column.split(".")[1] if column else name
        lengths = {Base.metadata.tables[t].c[col].type.length for t in tables if col in Base.metadata.tables[t].c
                   and isinstance(Base.metadata.tables[t].c[col].type, String)}
        assert lengths and min(lengths) == limit, (name, lengths)


def test_good_lines_stored_bad_lines_rejected_with_number_and_reason(db_url: str, tmp_path: Path) -> None:
    bundle, bad_at = write_bundle(tmp_path / "mixed.jsonl")
    report = ingest([str(bundle)], db_url)
    assert report.rejected == len(BAD_LINES)
    assert report.records == 1 + 20 + 1  # header, 20 results, run end
    assert report.rejected_files == [str(tmp_path / "mixed.jsonl.rejected.jsonl")]
    assert report.summary().startswith(f"ingested 1 file(s): 22 stored, {len(BAD_LINES)} rejected (see ")
    rejected = [json.loads(line) for line in Path(report.rejected_files[0]).read_text().splitlines()]
    assert {r["line"]: bad_at[r["line"]] for r in rejected} == bad_at
    for r in rejected:
        assert BAD_LINES[bad_at[r["line"]]][1] in r["reason"], (bad_at[r["line"]], r["reason"])
    raw = bundle.read_bytes().splitlines()
    assert all(r["text"] == raw[r["line"] - 1].decode("utf-8", "replace") for r in rejected)
    store = Store.open(db_url)
    assert (_count(store, Run), _count(store, TestResult), _count(store, Benchmark)) == (1, 20, 0)
    with store.session() as s:
        assert s.scalar(select(Run.status)) == "completed"
    # The same bundle again: nothing new, the same rejections; a clean bundle removes the stale file.
    again = ingest([str(bundle)], db_url)
    assert (again.added.results, again.rejected) == (0, len(BAD_LINES))
    bundle.write_text(json.dumps(RUN) + "\n")
    clean = ingest([str(bundle)], db_url)
    assert clean.rejected == 0 and not Path(report.rejected_files[0]).exists()
    store.dispose()


def test_nuls_stripped_long_text_capped_lone_surrogates_replaced(db_url: str, tmp_path: Path) -> None:
    huge = "E" * (5 * 1024 * 1024)
    lines = [json.dumps(RUN),
             json.dumps(result(1, nodeid="tests/t.py::test_\x00nul", message="boom\x00here", model="lla\x00ma")),
             json.dumps(result(2, outcome="failed", message=huge)),
             json.dumps(result(3, message="lone \ud800 surrogate")),
             '{"kind": "result", "run": "val-run", "nodeid": "tests/t.py::test_raw\x00nul", "outcome": "passed"}',
             json.dumps({"kind": "benchmark", "run": "val-run", "nodeid": "b.py::test_b", "model": "llama",
                         "measurements": {"lat\x00ency_secs": 1.5, "note": "a\x00b"}})]
    bundle = tmp_path / "fix.jsonl"
    bundle.write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogatepass")
    report = ingest([str(bundle)], db_url)
    assert report.rejected == 0 and report.added.results == 4 and report.added.benchmarks == 1
    store = Store.open(db_url)
    with store.session() as s:
        rows = {r.nodeid: r for r in s.execute(select(TestResult)).scalars()}
        assert rows["tests/t.py::test_nul"].message == "boomhere" and rows["tests/t.py::test_nul"].model == "llama"
        assert "tests/t.py::test_rawnul" in rows
        capped = rows["tests/t.py::test_2"].message
        assert capped.startswith("EEEE") and len(capped.encode()) <= MESSAGE_BYTES and "characters cut" in capped
        assert rows["tests/t.py::test_3"].message == "lone \ufffd surrogate"
        assert s.scalar(select(ModelMeasurement.measurements)) == {"latency_secs": 1.5, "note": "ab"}
    store.dispose()


def test_captured_output_tail_keeps_its_end() -> None:
    text = "start " + "x" * 10_000 + " the end"
    tail = cap_tail(text, TAIL_BYTES)
    assert len(tail.encode()) <= TAIL_BYTES and tail.endswith(" the end") and "characters cut" in tail


def test_junit_cases_validated_and_xml_entities_refused(db_url: str, tmp_path: Path) -> None:
    junit = tmp_path / "report.xml"
    junit.write_text(
        '<?xml version="1.0"?><testsuites><testsuite name="pytest" timestamp="2026-12-01T00:00:00">'
        '<testcase classname="tests.test_a" name="test_ok" time="0.1"/>'
        '<testcase classname="tests.test_a" name="test_bad_time" time="abc"/>'
        f'<testcase classname="tests.test_a" name="test_fail" time="0.2"><failure message="{"F" * 9000}"/>'
        '</testcase></testsuite></testsuites>')
    report = ingest([str(junit)], db_url)
    assert (report.added.results, report.rejected) == (2, 1)
    (rejected,) = [json.loads(line) for line in Path(report.rejected_files[0]).read_text().splitlines()]
    assert rejected["line"] == 2 and "test_bad_time" in rejected["reason"] and "'abc' is not a number" in (
        rejected["reason"])
    bomb = tmp_path / "bomb.xml"
    bomb.write_text('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]>'
                    '<testsuite name="x"><testcase classname="a" name="&lol2;"/></testsuite>')
    with pytest.raises(HarnessError, match="forbidden construct"):
        ingest([str(bomb)], db_url)


@pytest.mark.parametrize("content, reason", [(b"", "empty file"), (b"hello\nworld\n", "not a results bundle"),
                                             (b"<a>", "not valid JUnit XML")])
def test_unusable_inputs_refused_before_writing(content: bytes, reason: str, tmp_path: Path) -> None:
    path = tmp_path / ("in.xml" if content.startswith(b"<") else "in.jsonl")
    path.write_bytes(content)
    db = tmp_path / "never" / "results.db"
    with pytest.raises(HarnessError, match=reason):
        ingest([str(path)], f"sqlite:///{db}")
    assert not db.exists()
