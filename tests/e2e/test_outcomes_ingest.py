"""Every outcome of `harness ingest` and `harness db upgrade`, through the CLI as users call it
(`python -m harness.cli` in a subprocess), table-driven: the exit code, the one stderr line of a
refusal, the summary and the `<bundle>.rejected.jsonl` file, and what the database holds after."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.conftest import PG_ADMIN_URL

RUN = {"kind": "run", "uuid": "e2e-run", "branch": "main", "started_at": "2026-12-01T00:00:00+00:00"}
END = {"kind": "run_end", "run": "e2e-run", "status": "completed", "finished_at": "2026-12-01T00:05:00+00:00"}


def result(i: int, **over: object) -> str:
    return json.dumps({"kind": "result", "run": "e2e-run", "nodeid": f"tests/t.py::test_{i}", "outcome": "passed",
                       "duration_s": 0.1, "model": "llama", "suite": "slow", **over})


def bundle(tmp: Path, lines: list[str], name: str = "run.jsonl") -> str:
    path = tmp / name
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def good(tmp: Path) -> str:
    return bundle(tmp, [json.dumps(RUN), *[result(i) for i in range(10)], json.dumps(END)])


def with_bad_lines(tmp: Path) -> str:
    return bundle(tmp, [json.dumps(RUN), result(0), result(1, duration_s="abc"), result(2),
                        "{not json", result(3, model="m" * 200), json.dumps(END)])


def all_bad(tmp: Path) -> str:
    return bundle(tmp, [result(0, attempt="x"), result(1, nodeid=None), result(2, outcome="nope")])


def gzipped(tmp: Path) -> str:
    """A bundle kept gzip-compressed (as CI artifacts often are)."""
    import gzip

    path = tmp / "run.jsonl.gz"
    path.write_bytes(gzip.compress(Path(good(tmp)).read_bytes()))
    return str(path)


def truncated_gzip(tmp: Path) -> str:
    """A compressed bundle cut short (an upload that stopped): what can be read is stored, the rest is said."""
    import gzip

    lines = [json.dumps(RUN), *[result(i, message="x" * 200) for i in range(400)], json.dumps(END)]
    data = gzip.compress(("\n".join(lines) + "\n").encode())
    path = tmp / "cut.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    return str(path)


def with_bom(tmp: Path) -> str:
    """A bundle saved by a Windows tool with a UTF-8 byte-order mark before its first line."""
    path = Path(good(tmp))
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    return str(path)


def empty_junit(tmp: Path) -> str:
    """A JUnit report of a job that ran no test (a shard with nothing selected)."""
    path = tmp / "empty.xml"
    path.write_text('<?xml version="1.0"?><testsuites><testsuite name="pytest" tests="0"/></testsuites>')
    return str(path)


def junit(tmp: Path) -> str:
    path = tmp / "junit.xml"
    path.write_text('<?xml version="1.0"?><testsuite name="pytest" timestamp="2026-12-01T00:00:00">'
                    '<testcase classname="tests.test_a" name="test_ok" time="0.1"/>'
                    '<testcase classname="tests.test_a" name="test_no" time="0.2"><failure message="boom"/>'
                    '</testcase></testsuite>')
    return str(path)


def unprivileged() -> list[str]:
    """A prefix that makes root obey file permissions (drops the capabilities that bypass them)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: a read-only folder is not read-only for root")
    return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner", "--"]


def read_only_sqlite(tmp: Path) -> str:
    """A migrated SQLite store in a folder nobody may write (made writable again by the test)."""
    folder = tmp / "ro"
    folder.mkdir()
    url = f"sqlite:///{folder / 'results.db'}"
    assert harness("db", "upgrade", "--db", url).returncode == 0
    (folder / "results.db").chmod(0o444)
    folder.chmod(0o555)
    return url


@dataclass
class Case:
    """One CLI call: argv from (tmp, db url), then what must be seen."""

    argv: Callable[[Path, str], list[str]]
    code: int
    out: str | None = None  # a piece of stdout
    err: str | None = None  # a piece of the single stderr line (a refusal has exactly one)
    db: str = "both"  # "both" backends, or "none" (the case names its own target)
    before: list[Callable[[Path, str], list[str]]] = field(default_factory=list)  # calls that must succeed first
    rows: int | None = None  # test_results rows after
    rejected: list[tuple[int | None, str]] | None = None  # (line, piece of reason) in <bundle>.rejected.jsonl
    prefix: Callable[[], list[str]] = list


def _ingest(make: Callable[[Path], str]) -> Callable[[Path, str], list[str]]:
    return lambda tmp, url: ["ingest", make(tmp), "--db", url]


CASES: dict[str, Case] = {
    "good bundle": Case(_ingest(good), 0, out="12 stored, 0 rejected; 1 new runs, 10 new results", rows=10),
    "re-ingest adds nothing": Case(_ingest(good), 0, out="12 stored, 0 rejected; 0 new runs, 0 new results",
                                   before=[_ingest(good)], rows=10),
    "bad lines": Case(_ingest(with_bad_lines), 1, out="4 stored, 3 rejected (see ", rows=2,
                      rejected=[(3, "duration_s: expected a number"), (5, "malformed JSON"),
                                (6, "model: 200 characters, at most 128")]),
    "all lines bad": Case(_ingest(all_bad), 1, out="0 stored, 3 rejected", rows=0,
                          rejected=[(1, "attempt: expected an integer"), (2, "nodeid: missing"),
                                    (3, "outcome: 'nope' is not one of")]),
    "gzip bundle": Case(_ingest(gzipped), 0, out="12 stored, 0 rejected; 1 new runs, 10 new results", rows=10),
    "byte-order mark": Case(_ingest(with_bom), 0, out="12 stored, 0 rejected; 1 new runs, 10 new results", rows=10),
    "truncated gzip bundle": Case(_ingest(truncated_gzip), 1, out=" stored, 1 rejected (see ",
                                  rejected=[(None, "compressed bundle unreadable from here")]),
    "junit with no test case": Case(_ingest(empty_junit), 2, err="empty.xml: JUnit XML with no test case, nothing to "
                                    "ingest", rows=None),
    "junit with no test case beside a bundle": Case(
        lambda tmp, url: ["ingest", good(tmp), empty_junit(tmp), "--db", url], 0,
        out="12 stored, 0 rejected; 1 new runs, 10 new results", err="empty.xml: JUnit XML with no test case, "
        "nothing ingested from it", rows=10),
    "junit xml": Case(_ingest(junit), 0, out="1 new runs, 2 new results", rows=2),
    "missing file": Case(lambda tmp, url: ["ingest", str(tmp / "nope.jsonl"), "--db", url], 2,
                         err="nope.jsonl: no such file", rows=None),
    "a directory": Case(lambda tmp, url: ["ingest", str(tmp), "--db", url], 2,
                        err=": a directory: pass the bundle files in it", rows=None),
    "not a bundle": Case(lambda tmp, url: ["ingest", bundle(tmp, ["hello", "world"]), "--db", url], 2,
                         err="not a results bundle"),
    "unreachable database": Case(lambda tmp, url: ["ingest", good(tmp), "--db", "postgresql://postgres@127.0.0.1:1/x"],
                                 2, err="cannot connect to postgresql://postgres@127.0.0.1:1/x", db="none"),
    "no such database": Case(lambda tmp, url: ["ingest", good(tmp), "--db", PG_ADMIN_URL.rsplit("/", 1)[0]
                                               + "/harness_no_such_db"], 2, err='"harness_no_such_db" does not exist',
                             db="none"),
    "read-only target": Case(lambda tmp, url: ["ingest", good(tmp), "--db", read_only_sqlite(tmp)], 2,
                             err="readonly database", db="none", prefix=unprivileged),
    "missing parent in a read-only folder": Case(
        lambda tmp, url: ["ingest", good(tmp), "--db", read_only_sqlite(tmp).replace("/ro/", "/ro/a/b/")], 2,
        err="cannot create the folder", db="none", prefix=unprivileged),
    "db upgrade": Case(lambda tmp, url: ["db", "upgrade", "--db", url], 0, out="at revision "),
    "db upgrade twice": Case(lambda tmp, url: ["db", "upgrade", "--db", url], 0, out="at revision ",
                             before=[lambda tmp, url: ["db", "upgrade", "--db", url]]),
    "db upgrade, unreachable": Case(lambda tmp, url: ["db", "upgrade", "--db", "postgresql://postgres@127.0.0.1:1/x"],
                                    2, err="cannot connect", db="none"),
    "db upgrade, no such database": Case(
        lambda tmp, url: ["db", "upgrade", "--db", PG_ADMIN_URL.rsplit("/", 1)[0] + "/harness_no_such_db"], 2,
        err="does not exist", db="none"),
    "db upgrade, read-only folder": Case(
        lambda tmp, url: ["db", "upgrade", "--db", read_only_sqlite(tmp).replace("/ro/", "/ro/new/")], 2,
        err="cannot create the folder", db="none", prefix=unprivileged),
}

PARAMS = [pytest.param(name, backend, id=f"{name}-{backend}") for name, case in CASES.items()
          for backend in (("postgresql", "sqlite") if case.db == "both" else ("none",))]


def harness(*args: str, prefix: list[str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*(prefix or []), sys.executable, "-m", "harness.cli", *args], capture_output=True,
                          text=True, timeout=300)


def rows(url: str) -> int:
    engine = create_engine(url)
    with engine.connect() as conn:
        n = conn.execute(text("SELECT count(*) FROM test_results")).scalar()
    engine.dispose()
    return n


@pytest.mark.parametrize("name, backend", PARAMS)
def test_ingest_and_upgrade_outcomes(name: str, backend: str, request: pytest.FixtureRequest,
                                     tmp_path: Path) -> None:
    case = CASES[name]
    url = ""
    if backend == "postgresql":
        url = request.getfixturevalue("pg_url")
    elif backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'store' / 'results.db'}"
    try:
        for step in case.before:
            assert harness(*step(tmp_path, url)).returncode == 0
        argv = case.argv(tmp_path, url)
        proc = harness(*argv, prefix=case.prefix())
    finally:
        for folder in tmp_path.rglob("ro"):
            folder.chmod(0o755)
    assert proc.returncode == case.code, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stdout + proc.stderr
    if case.out is not None:
        assert case.out in proc.stdout, proc.stdout
    if case.code == 2:
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("harness: "), proc.stderr
        assert case.err in lines[0], lines[0]
        assert proc.stdout == ""
    elif case.err is not None:  # a note beside a result: one line
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("harness: ") and case.err in lines[0], proc.stderr
    else:
        assert proc.stderr == ""
    if case.rows is not None and url:
        assert rows(url) == case.rows
    rejected_file = Path(argv[1] + ".rejected.jsonl") if argv[0] == "ingest" else None
    if case.rejected is not None:
        got = [json.loads(line) for line in rejected_file.read_text().splitlines()]
        assert [g["line"] if line is not None else None for g, (line, _) in zip(got, case.rejected, strict=True)] \
            == [line for line, _ in case.rejected]  # None: any line (where a cut stream ends)
        for g, (line, reason) in zip(got, case.rejected, strict=True):
            assert reason in g["reason"], g
            if line is not None:  # the rejected line, as it is in the bundle
                assert g["text"] == Path(argv[1]).read_text().splitlines()[g["line"] - 1]
        assert str(rejected_file) in proc.stdout
    elif rejected_file is not None:
        assert not rejected_file.exists()
