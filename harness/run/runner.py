"""`harness run`: run suites for models, write the bundle, feed the store, summarise.

The runner validates everything before writing anything (a database that refuses the URL included),
marks runs whose process died `abandoned`, writes the run header to the results bundle, runs one pytest
pass per suite (plus a separate, non-parallel pass for `multi_gpu` tests on machines with several GPUs)
in a process group that dies with it, and follows the bundle as it grows: each new line advances the
progress display and is written to the store in batches, and the run's heartbeat is beaten. If the store
is unreachable, at the start or mid-run, the run still completes and the bundle keeps every result for
`harness ingest`. A pass that pytest could not run (exit other than 0/1/5) makes the run `failed` and
the exit code 2; Ctrl-C or SIGTERM makes it `cancelled` and the exit code 130.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rich.console import Console

from harness.bundle import BundleWriter, ResultRecord, RunEnd, read_bundle
from harness.errors import HarnessError
from harness.run import metadata
from harness.run.process import log_line, run_pytest
from harness.run.pytest_command import build_pass
from harness.run.runner_groups import detect_group, machine_type, validate_group
from harness.run.summary import LiveProgress, RunTally, failures_table, slowest_table, summary_table
from harness.run.target import load_target
from harness.store import lifecycle
from harness.store.db import Store, StoreError, redact, validate_url
from harness.store.follow import BundleFollower, BundleTail
from harness.store.refusal import refusal
from harness.store.writer import write_records

PYTEST_OK = (0, 1, 5)  # all passed, some failed, nothing collected
EXIT_INTERRUPTED = 130


@dataclass
class RunOptions:
    """What `harness run` was asked to do."""

    models: str = "all"
    suites: str | None = None
    runner_group: str | None = None
    workers: int | None = None
    repo: str = "."
    db_url: str = "sqlite:///.harness/results.db"
    timeout: float | None = None
    bundle_dir: str = ".harness/bundles"
    show_progress: bool = True
    branch: str | None = None  # recorded branch (a detached CI checkout or worktree has none of its own)
    heartbeat_s: float = 15.0  # how often the live run beats runs.heartbeat_at
    plain_progress_s: float | None = None  # plain progress line period when stderr is not a terminal


@dataclass
class RunOutcome:
    """What a run did; `as_json()` is the DESIGN.md `harness run --json` object."""

    run_id: int | None
    uuid: str
    commit: str
    runner_group: str
    bundle: str
    stored: bool
    tally: RunTally
    status: str
    store_error: str | None = None
    pytest_failures: list[str] = field(default_factory=list)
    abandoned: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        if self.status == "cancelled":
            return EXIT_INTERRUPTED
        if self.pytest_failures:  # pytest could not run (usage / internal error, killed): never a verdict
            return 2
        return 1 if self.tally.failing() else 0

    @property
    def complete(self) -> bool:
        return self.status == "completed"

    def as_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id, "uuid": self.uuid, "commit": self.commit, "runner_group": self.runner_group,
            "bundle": self.bundle, "stored": self.stored, "status": self.status, "complete": self.complete,
            "counts": self.tally.counts(),
            "results": [{"test": r.nodeid, "model": r.model, "suite": r.suite, "outcome": r.outcome,
                         "duration_s": r.duration_s, "message": r.message, "exception": r.exception,
                         "signature": r.signature, "skip_category": r.skip_category,
                         "started_at": r.started_at} for r in self.tally.results],
        }


def progress_period_s() -> float | None:
    """Seconds between plain progress lines when stderr is not a terminal (`HARNESS_PROGRESS_S`, default 5;
    0 turns them off)."""
    raw = os.environ.get("HARNESS_PROGRESS_S", "5")
    try:
        value = float(raw)
    except ValueError:
        raise HarnessError(f"HARNESS_PROGRESS_S={raw!r}: expected a number of seconds (0: no progress lines)") \
            from None
    return value if value > 0 else None


def default_workers(gpu_count: int) -> int:
    return gpu_count if gpu_count else max(1, min(4, os.cpu_count() or 1))


class _StoreFeed:
    """Follows the bundle in a thread: progress for every record, the store while it answers, and the
    run's heartbeat."""

    def __init__(self, store: Store | None, bundle: Path, progress: LiveProgress, tally: RunTally,
                 uuid: str, heartbeat_s: float) -> None:
        self.store, self.error = store, None
        self.progress, self.tally = progress, tally
        self.follower = BundleFollower(store, bundle, on_record=self._on_record) if store else None
        self.bundle, self.uuid, self.heartbeat_s = bundle, uuid, heartbeat_s
        self.collected = bundle.with_suffix(".collected")
        self._collected_offset = 0
        self._beat_at = 0.0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self._offset_seen = 0
        self._tail: BundleTail | None = None

    def _on_record(self, record: object) -> None:
        if isinstance(record, ResultRecord):
            self.tally.add(record)
            self.progress.result(record)

    def _loop(self) -> None:
        while True:
            finishing = self.done.is_set()
            self._read_collected()
            try:
                if self.follower is not None and self.error is None:
                    while self.follower.poll():
                        pass
                    if finishing:
                        self.follower.settle()  # the rollups that live batches left owed
                    self._beat()
                else:
                    self._tail_without_store()
            except Exception as exc:  # noqa: BLE001 - store died mid-run: keep following for progress
                self.error = _one_line(exc)
                if self.follower is not None:
                    self._offset_seen = self.follower.offset
                continue
            self.progress.tick()
            if finishing:
                return
            self.done.wait(0.25)

    def _beat(self) -> None:
        now = time.monotonic()
        if self.store is not None and now - self._beat_at >= self.heartbeat_s:
            lifecycle.beat(self.store, self.uuid)
            self._beat_at = now

    def _read_collected(self) -> None:
        """The plugin's line per pass: which tests pytest selected (totals and ETA of the suite)."""
        try:
            with open(self.collected, "rb") as fh:
                fh.seek(self._collected_offset)
                chunk = fh.read()
        except OSError:
            return
        end = chunk.rfind(b"\n")
        if end < 0:
            return
        self._collected_offset += end + 1
        for raw in chunk[: end + 1].splitlines():
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            history: dict[str, float] = {}
            if self.store is not None and self.error is None and line.get("suite"):
                try:
                    history = lifecycle.recent_durations(self.store, line["suite"], exclude_uuid=self.uuid)
                except Exception:  # noqa: BLE001 - no history is no ETA from history, nothing more
                    history = {}
            self.progress.collected(line.get("suite"), list(line.get("ids") or []), history)

    def _tail_without_store(self) -> None:
        if self._tail is None:
            self._tail = BundleTail(self.bundle)
            self._tail.commit(self._offset_seen)
        records, offset = self._tail.read()
        for record in records:
            self._on_record(record)
        self._tail.commit(offset)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.done.set()
        self.thread.join()

    def wrote_everything(self) -> bool:
        """Whether the live feed committed every line of the bundle: no store error, read to its end, no
        line refused (else the final pass writes the bundle again and says what it could not store)."""
        try:
            size = self.bundle.stat().st_size
        except OSError:
            return False
        return (self.follower is not None and self.error is None and self.follower.offset == size
                and self.follower.tail.rejected == 0)


def _one_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run(options: RunOptions, console: Console | None = None) -> RunOutcome:
    """Run the suites; raises HarnessError (before writing anything) on bad input, including a database
    that refuses the URL. Ctrl-C or SIGTERM stops the run: status `cancelled`, exit code 130."""
    console = console or Console(stderr=True)
    validate_url(options.db_url)
    limit_s = lifecycle.heartbeat_limit_s()
    if options.runner_group:
        validate_group(options.runner_group)
    if options.workers is not None and options.workers < 0:
        raise HarnessError(f"-n/--workers must be 0 or more, not {options.workers}")
    if options.timeout is not None and options.timeout <= 0:
        raise HarnessError(f"--timeout must be a positive number of seconds, not {options.timeout}")
    commit = metadata.commit_info(options.repo, options.branch)
    target = load_target(commit.repo)
    models = target.resolve_models(options.models)
    gpus = metadata.gpu_info()
    group = options.runner_group or detect_group(gpus.count)
    suites = target.resolve_suites(options.suites, group)
    workers = options.workers if options.workers is not None else default_workers(gpus.count)

    header = metadata.run_record(commit, runner_group=group, machine_type=machine_type(group, gpus.name),
                                 gpus=gpus, suites=[s.name for s in suites], models=models)
    bundle = Path(options.bundle_dir).resolve() / f"{header.uuid}.jsonl"
    store, store_error = _open_store(options.db_url)  # a refused URL raises here: nothing written yet
    abandoned: list[str] = []
    if store is not None:
        try:  # the next writer closes runs whose process died (no heartbeat for `limit_s`)
            abandoned = lifecycle.mark_abandoned(store, limit_s)
        except Exception as exc:  # noqa: BLE001 - an outage found here is reported like any other
            store_error = _one_line(exc)
    if abandoned:
        console.print(f"harness: marked {len(abandoned)} run(s) abandoned (no heartbeat for {limit_s:g}s): "
                      + ", ".join(abandoned), highlight=False, soft_wrap=True)
    tally = RunTally()
    failures: list[str] = []
    cancelled = False
    previous = signal.signal(signal.SIGTERM, _interrupt) if threading.current_thread() is threading.main_thread() \
        else None
    plain = options.plain_progress_s if not options.show_progress else None
    try:
        with BundleWriter(bundle) as writer, LiveProgress(console, options.show_progress, workers,
                                                          plain_every_s=plain) as progress:
            writer.write(header)
            feed = _StoreFeed(store, bundle, progress, tally, header.uuid, options.heartbeat_s)
            feed.start()
            try:
                for suite in suites:
                    _run_suite(suite, target, models, header.uuid, bundle, workers, gpus.count, options, tally,
                               progress, failures, console)
            except KeyboardInterrupt:
                cancelled = True
            status = "cancelled" if cancelled else ("failed" if failures else "completed")
            writer.write(RunEnd(run=header.uuid, status=status, finished_at=datetime.now(timezone.utc).isoformat()))
            feed.stop()
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    stored, run_id = False, None
    if store is not None:
        try:  # idempotent: fills whatever the live feed could not write (8.6 s for 40,000 results on Postgres)
            if not feed.wrote_everything():
                write_records(store, read_bundle(bundle))
            run_id = _run_id(store, header.uuid)
            stored = True
        except Exception as exc:  # noqa: BLE001
            store_error = _one_line(exc)
        finally:
            store.dispose()
    if store_error and not stored:
        console.print(f"harness: results NOT stored in {redact(options.db_url)} ({store_error}); every result "
                      f"is in {bundle}: run `harness ingest {bundle}` when the database is back", style="red",
                      highlight=False, soft_wrap=True)
    for line in failures:
        console.print(f"harness: {line}", style="red", highlight=False, soft_wrap=True)
    if cancelled:
        console.print(f"harness: interrupted: run {header.uuid} cancelled after {len(tally.results)} result(s); "
                      f"they are in {bundle}", style="red", highlight=False, soft_wrap=True)
    return RunOutcome(run_id=run_id, uuid=header.uuid, commit=commit.sha, runner_group=group, bundle=str(bundle),
                      stored=stored, tally=tally, status=status, store_error=store_error, pytest_failures=failures,
                      abandoned=abandoned)


def _run_suite(suite: Any, target: Any, models: list[str], uuid: str, bundle: Path, workers: int, gpu_count: int,
               options: RunOptions, tally: RunTally, progress: LiveProgress, failures: list[str],
               console: Console) -> None:
    """The pytest passes of one suite; a pass that pytest could not run is added to `failures`."""
    progress.suite(suite.name)
    log = bundle.with_suffix(".log")
    codes = []
    for multi in ((False, True) if gpu_count >= 2 else (None,)):
        p = build_pass(target, suite, models, run_uuid=uuid, bundle=bundle, workers=workers,
                       gpu_count=gpu_count, multi_gpu=multi, timeout=options.timeout)
        env = {**p.env, "HARNESS_PROGRESS_FILE": str(bundle.with_suffix(".collected"))}
        start = log.stat().st_size if log.exists() else 0
        started = time.monotonic()
        try:
            code = run_pytest(p.argv, env, cwd=target.root, log=log)
        finally:
            tally.suite_wall_s[suite.name] = tally.suite_wall_s.get(suite.name, 0.0) + time.monotonic() - started
        codes.append(code)
        if code not in PYTEST_OK:
            why = {3: "internal error", 4: "usage error", 2: "interrupted"}.get(code, "killed" if code < 0 else "error")
            failures.append(f"suite {suite.name}: pytest could not run ({why}, exit {code}): "
                            f"{log_line(log, start) or 'no output'} (log: {log})")
    if codes and all(c == 5 for c in codes):
        console.print(f"harness: suite {suite.name}: no test selected", highlight=False, soft_wrap=True)


def print_summary(outcome: RunOutcome, console: Console) -> None:
    """The end-of-run tables: per model and suite, failures, slowest tests, totals and wall time."""
    console.print(summary_table(outcome.tally))
    failures = failures_table(outcome.tally)
    if failures is not None:
        console.print(failures)
    if outcome.tally.results:
        console.print(slowest_table(outcome.tally))
    counts = outcome.tally.counts()
    walls = ", ".join(f"{k} {v:.1f}s" for k, v in outcome.tally.suite_wall_s.items())
    stored = "stored" if outcome.stored else "NOT stored (bundle kept)"
    state = "" if outcome.complete else f"INCOMPLETE ({outcome.status}); "
    console.print(f"run {outcome.run_id or outcome.uuid} at {outcome.commit[:12]} on {outcome.runner_group}: "
                  + state + (", ".join(f"{v} {k}" for k, v in counts.items() if v) or "no results")
                  + f"; {stored}; wall {walls}", highlight=False, soft_wrap=True)


def _open_store(url: str) -> tuple[Store | None, str | None]:
    """The store, or (None, why) when it is down (an outage: the tests still run). A server that
    refuses the URL itself (no such database, bad credentials) is a configuration error: HarnessError."""
    try:
        return Store.open(url), None
    except Exception as exc:  # noqa: BLE001 - a broken database must not stop the tests
        refused = refusal(exc)
        if refused is not None:
            raise HarnessError(f"database {redact(url)} refused the connection ({refused[1]}, SQLSTATE "
                               f"{refused[0]}): fix --db / HARNESS_DB_URL") from None
        return None, exc.message if isinstance(exc, StoreError) else _one_line(exc)


def _run_id(store: Store, uuid: str) -> int | None:
    from sqlalchemy import select

    from harness.store.schema import Run

    with store.session() as s:
        return s.scalar(select(Run.id).where(Run.uuid == uuid))


__all__ = ["RunOptions", "RunOutcome", "print_summary", "progress_period_s", "run"]
