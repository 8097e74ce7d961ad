"""Runs a round of probes on the worktree pool, one worker thread per worktree, and counts the work."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass

from harness_bisect.cost import CostLog
from harness_bisect.probe import ProbeResult, ProbeRunner
from harness_bisect.worktrees import Worktree, WorktreePool


@dataclass(frozen=True)
class ProbeRequest:
    """Run `tests` at the commit of `position`, each `repeat` times."""

    position: int
    commit: str
    tests: tuple[str, ...]
    repeat: int = 1


Progress = Callable[[str], None]


class Executor:
    """Parallel probe execution: a round's probes share the pool's worktrees (and GPUs)."""

    def __init__(self, pool: WorktreePool, runner: ProbeRunner, progress: Progress | None = None) -> None:
        self.runner = runner
        self.progress = progress
        runner.progress = progress  # install lines (envs.py) go to the same progress
        self.free: queue.Queue[Worktree] = queue.Queue()
        for tree in pool.trees:
            self.free.put(tree)
        self.threads = ThreadPoolExecutor(max_workers=len(pool.trees), thread_name_prefix="hb-probe")
        self.invocations = 0
        self.rounds = 0
        self.probe_wall_s = 0.0
        self.cost = CostLog()
        self._lock = threading.Lock()

    def _one(self, req: ProbeRequest) -> ProbeResult:
        tree = self.free.get()
        try:
            result = self.runner.run(tree, req.commit, list(req.tests), req.repeat)
        finally:
            self.free.put(tree)
        with self._lock:
            self.invocations += int(result.invoked)
            self.probe_wall_s += result.wall_s
            self.cost.add(result.wall_s, result.phases, result.path)
        if self.progress:
            note = f" skip: {result.skip_reason}" if result.skip_reason else ""
            self.progress(f"  probe #{req.position} {req.commit[:10]} x{req.repeat} "
                          f"({len(req.tests)} tests, {result.wall_s:.1f}s){note}")
        return result

    def run_round(self, requests: list[ProbeRequest]) -> dict[ProbeRequest, ProbeResult]:
        """Run every request (in parallel up to the pool size); one sequential round."""
        if not requests:
            return {}
        self.rounds += 1
        self.cost.new_round()
        if self.progress:
            self.progress(f"round {self.rounds}: {len(requests)} probe(s)")
        started = time.perf_counter()
        futures = {req: self.threads.submit(self._one, req) for req in requests}
        pending = set(futures.values())
        while pending:  # short waits: the kernel may hand SIGTERM to a worker thread, and the main
            _, pending = wait(pending, timeout=0.2)  # thread must wake up to run the handler
        self.cost.end_round(time.perf_counter() - started)
        return {req: fut.result() for req, fut in futures.items()}

    def close(self) -> None:
        self.threads.shutdown(wait=True, cancel_futures=True)
        self.runner.close()
