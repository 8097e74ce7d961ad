"""`harness run`: run suites for models, write the bundle, feed the store, summarise.

The runner validates everything before writing anything, writes the run header to the results bundle,
runs one pytest pass per suite (plus a separate, non-parallel pass for `multi_gpu` tests on machines
with several GPUs) and follows the bundle as it grows: each new line advances the progress bar and is
written to the store in batches. If the store is unreachable, at the start or mid-run, the run still
completes and the bundle keeps every result for `harness ingest`.
"""

from __future__ import annotations

import os
import subprocess
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
from harness.run.pytest_command import build_pass
from harness.run.runner_groups import detect_group, machine_type, validate_group
from harness.run.summary import LiveProgress, RunTally, failures_table, slowest_table, summary_table
from harness.run.target import load_target
from harness.store.db import Store, StoreError, redact, validate_url
from harness.store.follow import BundleFollower, BundleTail
from harness.store.writer import write_records

PYTEST_OK = (0, 1, 5)  # all passed, some failed, nothing collected


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

    @property
    def exit_code(self) -> int:
        return 1 if (self.tally.failing() or self.pytest_failures) else 0

    def as_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id, "uuid": self.uuid, "commit": self.commit, "runner_group": self.runner_group,
            "bundle": self.bundle, "stored": self.stored, "status": self.status, "counts": self.tally.counts(),
            "results": [{"test": r.nodeid, "model": r.model, "suite": r.suite, "outcome": r.outcome,
                         "duration_s": r.duration_s, "message": r.message} for r in self.tally.results],
        }


def default_workers(gpu_count: int) -> int:
    return gpu_count if gpu_count else max(1, min(4, os.cpu_count() or 1))


class _StoreFeed:
    """Follows the bundle in a thread: progress for every record, the store while it answers."""

    def __init__(self, store: Store | None, bundle: Path, progress: LiveProgress, tally: RunTally) -> None:
        self.store, self.error = store, None
        self.progress, self.tally = progress, tally
        self.follower = BundleFollower(store, bundle, on_record=self._on_record) if store else None
        self.bundle = bundle
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
            try:
                if self.follower is not None and self.error is None:
                    while self.follower.poll():
                        pass
                else:
                    self._tail_without_store()
            except Exception as exc:  # noqa: BLE001 - store died mid-run: keep following for progress
                self.error = _one_line(exc)
                if self.follower is not None:
                    self._offset_seen = self.follower.offset
                continue
            if finishing:
                return
            self.done.wait(0.25)

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


def _one_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def run(options: RunOptions, console: Console | None = None) -> RunOutcome:
    """Run the suites; raises HarnessError (before writing anything) on bad input."""
    console = console or Console(stderr=True)
    validate_url(options.db_url)
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
    store, store_error = _open_store(options.db_url)
    tally = RunTally()
    failures: list[str] = []
    with BundleWriter(bundle) as writer, LiveProgress(console, options.show_progress) as progress:
        writer.write(header)
        feed = _StoreFeed(store, bundle, progress, tally)
        feed.start()
        for suite in suites:
            progress.suite(suite.name)
            split = gpus.count >= 2
            for multi in ((False, True) if split else (None,)):
                p = build_pass(target, suite, models, run_uuid=header.uuid, bundle=bundle, workers=workers,
                               gpu_count=gpus.count, multi_gpu=multi, timeout=options.timeout)
                started = time.monotonic()
                code = _run_pytest(p.argv, p.env, cwd=target.root, log=bundle.with_suffix(".log"))
                tally.suite_wall_s[suite.name] = tally.suite_wall_s.get(suite.name, 0.0) + time.monotonic() - started
                if code not in PYTEST_OK:
                    failures.append(f"suite {suite.name}: pytest exited {code} (see {bundle.with_suffix('.log')})")
        status = "failed" if failures else "completed"
        writer.write(RunEnd(run=header.uuid, status=status, finished_at=datetime.now(timezone.utc).isoformat()))
        feed.stop()
    stored, run_id = False, None
    if store is not None:
        try:  # idempotent: fills whatever the live feed could not write
            write_records(store, read_bundle(bundle))
            run_id = _run_id(store, header.uuid)
            stored = True
        except Exception as exc:  # noqa: BLE001
            store_error = _one_line(exc)
        finally:
            store.dispose()
    if store_error and not stored:
        console.print(f"harness: results not stored in {redact(options.db_url)} ({store_error}); every result "
                      f"is in {bundle}: run `harness ingest {bundle}` when the database is back", style="red",
                      highlight=False, soft_wrap=True)
    for line in failures:
        console.print(f"harness: {line}", style="red", highlight=False, soft_wrap=True)
    return RunOutcome(run_id=run_id, uuid=header.uuid, commit=commit.sha, runner_group=group, bundle=str(bundle),
                      stored=stored, tally=tally, status=status, store_error=store_error, pytest_failures=failures)


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
    console.print(f"run {outcome.run_id or outcome.uuid} at {outcome.commit[:12]} on {outcome.runner_group}: "
                  + ", ".join(f"{v} {k}" for k, v in counts.items() if v) + f"; {stored}; wall {walls}",
                  highlight=False, soft_wrap=True)


def _open_store(url: str) -> tuple[Store | None, str | None]:
    try:
        return Store.open(url), None
    except StoreError as exc:
        return None, exc.message
    except Exception as exc:  # noqa: BLE001 - a broken database must not stop the tests
        return None, _one_line(exc)


def _run_id(store: Store, uuid: str) -> int | None:
    from sqlalchemy import select

    from harness.store.schema import Run

    with store.session() as s:
        return s.scalar(select(Run.id).where(Run.uuid == uuid))


def _run_pytest(argv: list[str], env: dict[str, str], cwd: Path, log: Path) -> int:
    with open(log, "a", encoding="utf-8") as fh:
        fh.write("$ " + " ".join(argv) + "\n")
        fh.flush()
        try:
            return subprocess.call(argv, env=env, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)
        except KeyboardInterrupt:
            raise
        except OSError as exc:
            fh.write(f"harness: cannot start pytest: {exc}\n")
            return 3


__all__ = ["RunOptions", "RunOutcome", "run", "print_summary"]
