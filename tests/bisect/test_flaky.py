"""The one flaky type and rule (`harness_bisect.flaky`), and that the engine's endpoint verification,
the platform's confirmation and the report all decide by it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from harness_bisect.flaky import Flaky, is_flaky, observe
from harness_bisect.probe import FAIL, PASS, SKIP, Attempt
from harness_bisect.report import BisectResult
from harness_bisect.verify import classify

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("failures", "attempts", "flaky"), [
    (0, 0, False), (0, 3, False), (1, 1, False), (3, 3, False),  # never failed / always failed: consistent
    (1, 2, True), (1, 3, True), (2, 3, True), (5, 6, True),
])
def test_rule_is_mixed_outcomes(failures: int, attempts: int, flaky: bool) -> None:
    assert is_flaky(failures, attempts) is flaky


def test_observe_counts_attempts_and_keeps_context() -> None:
    seen = observe("t.py::test_x", [True, False, True], device="cuda:1", last_failed=False)
    assert seen == Flaky("t.py::test_x", "cuda:1", 2, 3, failed=False)
    assert seen.nodeid == seen.test == "t.py::test_x"
    assert seen.fail_rate == pytest.approx(2 / 3)
    assert observe("t.py::test_x", [True, True, True]) is None
    assert observe("t.py::test_x", [False, False]) is None
    assert observe("t.py::test_x", []) is None


def test_key_includes_the_failure_signature() -> None:
    """Issue 15: a test failing two different ways is two flaky keys; without a signature, one."""
    a = Flaky("t.py::test_x", "cpu", 1, 3, signature="sig-a")
    b = Flaky("t.py::test_x", "cpu", 1, 3, signature="sig-b")
    assert a.key != b.key and a.key == ("t.py::test_x", "sig-a")
    assert Flaky("t.py::test_x", "cpu", 1, 3).key == ("t.py::test_x", None)


def test_json_shapes() -> None:
    """The bisect JSON (DESIGN.md) names the test `test`; new-failures names it `nodeid` with the device.
    A signature appears only once known."""
    f = Flaky("t.py::test_x", "cuda:0", 1, 4)
    assert f.to_json() == {"test": "t.py::test_x", "failures": 1, "attempts": 4}
    assert list(f.to_json("nodeid", device=True)) == ["nodeid", "device", "failures", "attempts"]
    assert Flaky("t", "", 1, 2, signature="abc").to_json()["signature"] == "abc"
    result = BisectResult(good="a" * 40, bad="b" * 40, commits_in_range=3, flaky=[f])
    assert result.to_json()["flaky"] == [{"test": "t.py::test_x", "failures": 1, "attempts": 4}]


def _attempts(*statuses: str) -> list[Attempt]:
    outcome = {FAIL: "failed", PASS: "passed", SKIP: "skipped"}
    return [Attempt(s, outcome[s]) for s in statuses]


@pytest.mark.parametrize(("bad", "good", "verdict"), [
    ((FAIL, FAIL, FAIL), (PASS, PASS, PASS), "candidate"),
    ((FAIL, PASS, FAIL), (PASS, PASS, PASS), "flaky"),  # mixed at bad
    ((FAIL, FAIL, FAIL), (PASS, FAIL, PASS), "flaky"),  # consistent at bad, mixed at good
    ((FAIL, FAIL, SKIP), (PASS, PASS, PASS), "flaky"),  # an attempt that did not run counts as not failing
    ((FAIL, FAIL, FAIL), (FAIL, FAIL, FAIL), "fails_at_good"),
    ((PASS, PASS, PASS), (PASS, PASS, PASS), "not_reproduced"),
])
def test_endpoint_verification_applies_the_rule_per_endpoint(bad: tuple, good: tuple, verdict: str) -> None:
    test = "t.py::test_x"
    out = classify([test], {test: _attempts(*bad)}, {test: _attempts(*good)}, retries=3)
    found = {"candidate": test in out.candidates, "flaky": [f.test for f in out.flaky] == [test],
             "fails_at_good": test in out.fails_at_good, "not_reproduced": test in out.not_reproduced}
    assert [k for k, v in found.items() if v] == [verdict]
    if verdict == "flaky":
        f = out.flaky[0]
        assert (f.failures, f.attempts) == (bad.count(FAIL) + good.count(FAIL), 6)


def test_one_flaky_type_in_the_product() -> None:
    """No second flaky dataclass: only the engine's `Flaky` and the store's `flaky_tests` table entity."""
    found = set()
    for folder in ("harness", "bisect"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ClassDef) and node.name.lower().startswith("flaky"):
                    found.add((path.relative_to(ROOT).as_posix(), node.name))
    assert found == {("bisect/harness_bisect/flaky.py", "Flaky"), ("harness/store/schema.py", "FlakyTest")}
