"""The `harness` pytest plugin (entry point `pytest11`): records every test outcome.

Inert unless `--harness-db`, `--harness-bundle` or `HARNESS_DB_URL` is given. When active, the
controller process appends one bundle line per finished test (xdist workers report to it), and the
store is fed from that bundle by one writer: the `harness run` process, or, for a plain `pytest`
session, a sidecar process started here. This module imports only the standard library and pytest, so
the plugin stays cheap in the test process.
"""

from __future__ import annotations

import functools
import os
import platform
import socket
import subprocess
import sys
import uuid as uuid_mod
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from harness.bundle import (
    BenchmarkRecord,
    BundleWriter,
    NotJSONError,
    PassedLines,
    ResultRecord,
    RunEnd,
    RunRecord,
    short_message,
)
from harness.run import sidecar
from harness.run.plugin_records import (
    PLAIN,
    RECORD_ERROR_PROPERTY,
    coerce_properties,
    failure_identity,
    internal_error_line,
    qualified_type,
    started_iso,
)

EARLY_SIDECAR = pytest.StashKey[tuple]()
BENCHMARK_PROPERTY = "harness_benchmark"
SAMPLES_PROPERTY = "harness_device_samples"
_MODEL_PARAMS = ("model_name", "model")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("harness", "record results in the harness store")
    group.addoption("--harness-db", metavar="URL", default=None,
                    help="store results in this database (also HARNESS_DB_URL)")
    group.addoption("--harness-bundle", metavar="PATH", default=None,
                    help="append results to this JSONL bundle (default .harness/bundles/<run>.jsonl)")
    group.addoption("--harness-run-uuid", default=None, help=argparse_suppress())
    group.addoption("--harness-suite", default=None, help="suite name recorded with each result")
    group.addoption("--harness-models", default=None,
                    help="comma-separated model names used to attribute tests to models")
    group.addoption("--harness-attempt", type=int, default=1, help=argparse_suppress())


def argparse_suppress() -> str:
    import argparse

    return argparse.SUPPRESS


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


def is_active(config: pytest.Config) -> bool:
    return bool(config.getoption("harness_db") or config.getoption("harness_bundle")
                or os.environ.get("HARNESS_DB_URL"))


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser, args: list[str]) -> None:
    """Start the store sidecar as early as pytest allows, so that its start-up (Python, the database
    driver, a connection) overlaps collection and the tests instead of delaying the end of a short
    session. Only a plain `pytest --harness-db` controller does this; `harness run` feeds the store
    itself, and xdist workers never write."""
    ns = early_config.known_args_namespace
    db_url = getattr(ns, "harness_db", None) or os.environ.get("HARNESS_DB_URL")
    if not db_url or getattr(ns, "harness_run_uuid", None) or os.environ.get("PYTEST_XDIST_WORKER"):
        return
    run_uuid = str(uuid_mod.uuid4())
    bundle = Path(getattr(ns, "harness_bundle", None) or
                  Path(early_config.rootpath) / ".harness" / "bundles" / f"{run_uuid}.jsonl")
    early_config.stash[EARLY_SIDECAR] = (run_uuid, bundle, sidecar.start(bundle, db_url))


def pytest_configure(config: pytest.Config) -> None:
    if not is_active(config):
        return
    if os.environ.get("HARNESS_DIE_WITH_PARENT") == "1":  # set by `harness run`
        from harness.run.lifeline import ENV_PARENT, die_with_parent

        if hasattr(config, "workerinput"):  # an xdist worker dies with the pytest controller
            parent = os.environ.get(ENV_PARENT)
            die_with_parent(int(parent) if parent and parent.isdigit() else None)
        else:
            os.environ[ENV_PARENT] = str(os.getpid())  # inherited by the workers xdist starts
    config.addinivalue_line("markers", "benchmark: runs under the harness device sampler")
    known = config.getoption("harness_models") or os.environ.get("HARNESS_MODELS") or ""
    config.pluginmanager.register(ItemAnnotator([m for m in known.split(",") if m]), "harness-annotator")
    if not hasattr(config, "workerinput"):  # controller (or a plain, non-xdist session)
        config.pluginmanager.register(Recorder(config), "harness-recorder")


DEVICE_CHARS = 64  # test_results.device: a longer value would make every result line unstorable


def current_device() -> str:
    """Where this process runs tests: HARNESS_DEVICE, the GPU pinned for this worker, or cpu (at most
    `DEVICE_CHARS` characters: CUDA_VISIBLE_DEVICES may list several GPU UUIDs of 40 characters each)."""
    if os.environ.get("HARNESS_DEVICE"):
        return os.environ["HARNESS_DEVICE"][:DEVICE_CHARS]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        return (f"cuda:{visible}" if visible else f"cuda:{torch.cuda.current_device()}")[:DEVICE_CHARS]
    return "cpu"


def attribute_model(item: pytest.Item, known: list[str]) -> str | None:
    """The model a test belongs to, by the target's attribution rules (harness/run/attribution.py)."""
    from harness.run.attribution import attribute_item  # standard library only

    return attribute_item(item, known)


@functools.lru_cache(maxsize=4096)
def _model_from_path(path: str, known: tuple[str, ...]) -> str | None:
    parts = Path(path).parts
    for name in known:
        if name in parts or f"test_{name}.py" in parts or f"test_modeling_{name}.py" in parts:
            return name
    return None


def _benchmark_marked(item: pytest.Item, parents: dict[Any, bool]) -> bool:
    """`item.get_closest_marker("benchmark") is not None`, with each parent node looked at once."""
    if any(m.name == "benchmark" for m in item.own_markers):
        return True
    chain, node = [], item.parent
    while node is not None and node not in parents:
        chain.append(node)
        node = node.parent
    found = parents[node] if node is not None else False
    for node in reversed(chain):
        found = found or any(m.name == "benchmark" for m in node.own_markers)
        parents[node] = found
    return found


class ItemAnnotator:
    """Runs where tests run (worker or single process): tags reports with model and device."""

    def __init__(self, known_models: list[str]) -> None:
        self.known = sorted(known_models, key=len, reverse=True)
        self.device = current_device()

    def pytest_collection_modifyitems(self, session: pytest.Session, config: pytest.Config,
                                      items: list[pytest.Item]) -> None:
        """Tag every item once (model, device); reports carry the tags to the controller."""
        benchmarks = False
        parents: dict[Any, bool] = {}
        for item in items:
            item.user_properties.append(("harness_model", attribute_model(item, self.known)))
            item.user_properties.append(("harness_device", self.device))
            benchmarks = benchmarks or _benchmark_marked(item, parents)
        if benchmarks and not config.pluginmanager.has_plugin("harness-sampler"):
            config.pluginmanager.register(BenchmarkSampling(), "harness-sampler")


    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]):  # noqa: ANN201
        """Coerce what the test recorded to plain JSON where it was recorded (the common case, model
        and device strings only, costs one pass over two tuples)."""
        report = yield
        if call.excinfo is not None and not report.passed:  # failing or skipped: name what was raised
            report.harness_exception = qualified_type(call.excinfo.type)  # crosses xdist as a report attribute
        props = item.user_properties
        if len(props) == 2 and props[0][0] == "harness_model":  # only this plugin's tags: plain already
            return report
        for _, value in props:
            if type(value) not in PLAIN:
                props[:] = coerce_properties(props)
                report.user_properties = list(props)
                break
        return report


class BenchmarkSampling:
    """Registered only when benchmark-marked tests exist: runs them under the device sampler."""

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item):  # noqa: ANN201 - a hook wrapper generator
        if item.get_closest_marker("benchmark") is None:
            return (yield)
        from harness.run.device_sampler import DeviceSampler  # psutil/NVML only when benchmarking

        sampler = DeviceSampler(interval_s=float(os.environ.get("HARNESS_SAMPLE_INTERVAL_S", "0.1"))).start()
        try:
            return (yield)
        finally:
            item.user_properties.append((SAMPLES_PROPERTY, sampler.stop()))


def classify(report: pytest.TestReport) -> str:
    """The store's outcome for a failing or finished report."""
    text = report.longreprtext if report.longrepr is not None else ""
    if report.when == "???" or "crashed while running" in text:
        return "crashed"
    if report.failed and "Timeout" in text and "pytest-timeout" in text:
        return "timeout"
    if hasattr(report, "wasxfail"):
        return "xfail" if report.skipped else ("xpass" if report.failed else "passed")
    if report.failed:
        return "failed" if report.when == "call" else "error"
    return "skipped" if report.skipped else "passed"


def failure_message(report: pytest.TestReport) -> str | None:
    if report.passed and not hasattr(report, "wasxfail"):
        return None
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # skip: (path, lineno, reason)
        return short_message(str(longrepr[2]))
    crash = getattr(longrepr, "reprcrash", None)
    if crash is not None and getattr(crash, "message", None):
        return short_message(crash.message)
    if getattr(report, "wasxfail", None):
        return short_message(report.wasxfail)
    lines = [line for line in report.longreprtext.splitlines() if line.strip()]
    return short_message(lines[-1] if lines else None)


class Recorder:
    """Controller-side: one bundle line per finished test, a run header, one store writer."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.owner = config.getoption("harness_run_uuid") is None  # plain pytest: we own the run
        early = config.stash.get(EARLY_SIDECAR, None)
        self.run_uuid = config.getoption("harness_run_uuid") or (early[0] if early else str(uuid_mod.uuid4()))
        self.suite = config.getoption("harness_suite")
        self.attempt = config.getoption("harness_attempt")
        bundle = str(early[1]) if early else (config.getoption("harness_bundle") or str(
            Path(config.rootpath) / ".harness" / "bundles" / f"{self.run_uuid}.jsonl"))
        self.bundle_path = Path(bundle)
        # Flushed every 0.05 s (the sidecar reads as often): tests that crash run in xdist workers, never here.
        # A write that fails later (disk full) stops the record, not the tests: sessionfinish reports it.
        try:
            self.writer = BundleWriter(self.bundle_path, flush_s=0.05, keep_going=True)
        except OSError as exc:
            if early:
                early[2].kill()
            raise pytest.UsageError(f"harness: cannot write the results bundle {bundle}: {exc.strerror or exc}") from None
        self._passed = PassedLines(self.run_uuid, self.suite, self.attempt)
        self.db_url = config.getoption("harness_db") or os.environ.get("HARNESS_DB_URL")
        self.pending: dict[str, dict[str, Any]] = {}
        self.collect_errors: set[str] = set()
        self.counts: dict[str, int] = {}
        self.started = now_iso()
        self.known_models = [m for m in (config.getoption("harness_models") or "").split(",") if m]
        self.collected: set[str] = set()
        self.finished: set[str] = set()
        self.internal_error: str | None = None
        self._git = self._start_git_probe() if self.owner else None
        if early:
            self.sidecar: sidecar.Sidecar | None = sidecar.Sidecar(early[2])
        else:
            self.sidecar = (sidecar.Sidecar(sidecar.start(self.bundle_path, self.db_url))
                            if (self.owner and self.db_url) else None)

    def _start_git_probe(self) -> subprocess.Popen[str] | None:
        try:
            return subprocess.Popen(
                ["git", "log", "-1", "--format=%H%x00%s%x00%an%x00%ae%x00%D"], cwd=self.config.rootpath,
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        except OSError:
            return None

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        when, passed, nodeid = report.when, report.passed, report.nodeid
        state = self.pending.get(nodeid)
        if state is None:
            state = self.pending[nodeid] = {"duration": 0.0, "outcome": None, "message": None, "start": report.start}
        state["duration"] += report.duration or 0.0
        if passed and not hasattr(report, "wasxfail"):
            if when == "call":
                state["outcome"] = "passed"
                return
            if when != "teardown":
                return  # the common case: everything else is read once, from the teardown report
            props = report.user_properties
            if state["outcome"] == "passed" and len(props) == 2 and props[0][0] == "harness_model":
                line = self._passed.line(nodeid, round(state["duration"], 6), props[0][1], self._worker(report),
                                         props[1][1], started_iso(state["start"]))
                if line is not None:  # a passing test with nothing but the plugin's tags: its line at once
                    del self.pending[nodeid]
                    self.finished.add(nodeid)
                    self.counts["passed"] = self.counts.get("passed", 0) + 1
                    self.writer.write_line(line)
                    return
        props = dict(report.user_properties)
        state.setdefault("model", props.get("harness_model"))
        state.setdefault("device", props.get("harness_device"))
        if BENCHMARK_PROPERTY in props:
            state["benchmark"] = props[BENCHMARK_PROPERTY]
        if SAMPLES_PROPERTY in props:
            state["samples"] = props[SAMPLES_PROPERTY]
        if RECORD_ERROR_PROPERTY in props:
            state["record_error"] = props[RECORD_ERROR_PROPERTY]
        state["worker"] = self._worker(report)
        state["sections"] = report.sections  # the last report's hold every phase's captured output
        if when == "call" or when == "???" or (when == "setup" and not passed):
            state["outcome"], state["message"] = classify(report), failure_message(report)
            state["exc"] = getattr(report, "harness_exception", None)
        elif when == "teardown" and report.failed and state["outcome"] in (None, "passed"):
            state["outcome"], state["message"] = "error", failure_message(report)
            state["exc"] = getattr(report, "harness_exception", None)
        if when in ("teardown", "???"):
            self._finish(nodeid)

    @staticmethod
    def _worker(report: pytest.TestReport) -> str | None:
        """The xdist worker that ran the test (None in a single process)."""
        node = getattr(report, "node", None)
        return None if node is None else getattr(getattr(node, "gateway", None), "id", None)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        """A module that fails to import or collect is an `error` result under its own node id."""
        if not report.failed or report.nodeid in self.collect_errors:
            return
        self.collect_errors.add(report.nodeid)
        self.counts["error"] = self.counts.get("error", 0) + 1
        lines = [ln for ln in str(report.longreprtext).splitlines() if ln.strip()]
        message = next((ln for ln in reversed(lines) if ln.startswith("E ")), lines[-1] if lines else None)
        text = message.lstrip("E ").strip() if message else ""
        exception, signature, _, output = failure_identity("error", text, None, None, report.sections)
        self.writer.write(ResultRecord(
            run=self.run_uuid, nodeid=report.nodeid or ".", outcome="error", suite=self.suite,
            message=short_message(f"collection error: {text}"), attempt=self.attempt, device=current_device(),
            started_at=now_iso(), exception=exception, signature=signature, output_tail=output))

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        self._collected(ids)

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self._collected([item.nodeid for item in session.items])

    def _collected(self, ids: list[str]) -> None:
        """Remember the selected tests; tell `harness run` (HARNESS_PROGRESS_FILE) how many, once."""
        first = not self.collected
        self.collected.update(ids)
        path = os.environ.get("HARNESS_PROGRESS_FILE")
        if first and path:
            import json

            with open(path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"suite": self.suite, "ids": ids}) + "\n")

    def pytest_internalerror(self, excrepr: Any, excinfo: Any) -> None:
        if self.internal_error is None:
            self.internal_error = internal_error_line(excrepr, excinfo)

    def _model_of(self, nodeid: str) -> str | None:
        """A model name among the parameters of a test id (for tests whose reports were lost)."""
        params = nodeid.rpartition("[")[2].rstrip("]") if nodeid.endswith("]") else ""
        parts = set(params.split("-")) | set(Path(nodeid.split("::")[0]).parts)
        return next((m for m in self.known_models if m in parts or f"test_{m}.py" in parts), None)

    def _finish(self, nodeid: str, lost: str | None = None) -> None:
        state = self.pending.pop(nodeid, None) or {"duration": 0.0, "outcome": None, "message": None, "start": None}
        self.finished.add(nodeid)
        outcome, message = state["outcome"] or "passed", state["message"]
        if lost is not None:  # no final report: never a pass
            outcome, message = "error", short_message(lost)
        elif state.get("record_error") and outcome in ("passed", "xfail", "skipped"):
            outcome, message = "error", short_message(str(state["record_error"]))
        bench = state.get("benchmark")
        model = state["model"] if "model" in state else self._model_of(nodeid)  # the item's tag, else the id's
        if model is None and isinstance(bench, dict):
            model = bench.get("model")
        if isinstance(bench, dict):
            try:
                self._write_benchmark(nodeid, bench, state, model)
            except NotJSONError as exc:
                if outcome not in ("failed", "error", "crashed", "timeout"):
                    outcome, message = "error", short_message(f"record not stored: {exc}")
        self.counts[outcome] = self.counts.get(outcome, 0) + 1
        record = ResultRecord(
            run=self.run_uuid, nodeid=nodeid, outcome=outcome, duration_s=round(state["duration"], 6),
            model=model, suite=self.suite, message=message, attempt=self.attempt,
            worker=state.get("worker"), device=state.get("device"), started_at=started_iso(state["start"]))
        if outcome != "passed":  # only failures, errors and skips pay for their identity
            record.exception, record.signature, record.skip_category, record.output_tail = failure_identity(
                outcome, message, state.get("exc") if lost is None else None, model, state.get("sections"), nodeid)
        self.writer.write(record)

    def _write_benchmark(self, nodeid: str, bench: dict[str, Any], state: dict[str, Any],
                         model: str | None) -> None:
        known = {k: bench.get(k) for k in ("model", "config", "dtype", "batch_size", "prompt_length",
                                           "gpu_name", "measurements", "device_samples")}
        known["measurements"] = {**(known["measurements"] or {}),
                                 **({"roofline": bench["roofline"]} if "roofline" in bench else {})}
        known["device_samples"] = known["device_samples"] or state.get("samples") or []
        known["model"] = known["model"] or model
        self.writer.write(BenchmarkRecord(run=self.run_uuid, nodeid=nodeid, created_at=now_iso(), **known))

    def _header(self) -> RunRecord:
        sha = subject = author = email = branch = None
        if self._git is not None:
            out = (self._git.communicate(timeout=30)[0] or "").strip().split("\x00")
            if len(out) == 5:
                sha, subject, author, email, refs = out
                heads = [r.split("->")[-1].strip() for r in refs.split(",") if "HEAD ->" in r]
                branch = heads[0] if heads else None
        torch = sys.modules.get("torch")
        return RunRecord(
            uuid=self.run_uuid, repo=str(self.config.rootpath), branch=branch, commit_sha=sha,
            commit_subject=subject, commit_author=author, commit_email=email, event="pytest",
            hostname=socket.gethostname(), python_version=platform.python_version(),
            torch_version=getattr(torch, "__version__", None), suites=self.suite,
            models=self.config.getoption("harness_models"), started_at=self.started)

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        reason = self.internal_error or ("the session was interrupted" if exitstatus == pytest.ExitCode.INTERRUPTED
                                         else "the test's worker or its teardown was lost")
        for nodeid in list(self.pending):  # started, never finished: an error, never a pass
            self._finish(nodeid, lost=f"no final report: {reason}")
        if self.internal_error is not None:
            for nodeid in sorted(self.collected - self.finished):
                self._finish(nodeid, lost=f"not run: {self.internal_error}")
            if exitstatus in (0, 1, 5):  # xdist exits 0 after a worker's INTERNALERROR
                session.exitstatus = exitstatus = pytest.ExitCode.INTERNAL_ERROR
            sys.stderr.write(f"harness: {self.internal_error}\n")  # the line `harness run` reports
        if self.owner:
            self.writer.write(self._header())
            status = "completed" if exitstatus in (0, 1, 5) else ("cancelled" if exitstatus == 2 else "failed")
            self.writer.write(RunEnd(run=self.run_uuid, status=status, finished_at=now_iso()))
        self.writer.close()
        self.stored = self._stop_sidecar()
        if self.writer.error is not None:  # the record is incomplete: never a success
            sys.stderr.write(f"harness: results NOT recorded: {self.writer.error}\n")
            if exitstatus in (0, 1, 5):
                session.exitstatus = pytest.ExitCode.INTERNAL_ERROR

    def _stop_sidecar(self) -> bool | None:
        return None if self.sidecar is None else self.sidecar.finish()

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        """The sidecar refreshes the run's rollups after `stored`, beside pytest's summary: wait for it."""
        failed = self.sidecar.reap() if self.sidecar is not None else None
        if failed:
            sys.stderr.write(f"harness: results stored; dashboard rollups NOT refreshed ({failed}): the next "
                             "write to the store refreshes them\n")

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        tr = terminalreporter
        if self.writer.error is not None:
            tr.write_line(f"harness: results NOT recorded ({self.writer.error}); {self.bundle_path} holds only the "
                          "results written before that, and the store no more than it", red=True)
        elif self.sidecar is not None and getattr(self, "stored", None) is False:
            tr.write_line(f"harness: results NOT stored ({self.sidecar.error}); all are in "
                          f"{self.bundle_path}: load them later with `harness ingest {self.bundle_path}`",
                          red=True)
        elif self.owner:
            where = "and stored" if self.sidecar is not None else "(no database given)"
            tr.write_line(f"harness: run {self.run_uuid} recorded in {self.bundle_path} {where}")
