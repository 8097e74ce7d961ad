"""One probe: a commit checked out in a worktree, installed if the target says how, and the selected tests
run in ONE pytest process whose per-test outcomes are read back.

Per test and attempt the status is ``pass`` (passed, skipped, xfail, deselected by the target, or not
collected at that commit: a test that does not exist cannot fail), ``fail`` (failed, error, xpass, crashed, timeout) or ``skip``
(the test could not run there: its module failed to collect, the install failed, pytest could not
start). Node ids are relative to the repository root, or to the subfolder the bisect was pointed at
(`--rootdir` is that folder, whatever ini file the target has). Probes run with the worktree first on PYTHONPATH, bytecode writing off (a checkout can keep a
file's size and mtime second, which would let a stale .pyc win) and xdist off.

A bisect's probes fork from a probe server where that is safe (`servers`), else start a fresh interpreter;
either way with the same arguments, environment (`env_for`) and plugin.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from harness_bisect.cost import phases_of, read_marks
from harness_bisect.envs import SharedEnvs
from harness_bisect.forkserver import REFUSED
from harness_bisect.procs import _run, _run_forked, _tail, _track, _untrack, allow_probes, kill_live
from harness_bisect.servers import (
    ServerGone,
    ServerPool,
    fork_supported,
    fork_wanted,
    local_names,
)
from harness_bisect.worktrees import Worktree

__all__ = ["FAIL", "PASS", "SKIP", "Attempt", "ProbeConfig", "ProbeResult", "ProbeRunner", "allow_probes", "kill_live",
           "parse_events"]

PASS, FAIL, SKIP = "pass", "fail", "skip"
PASSING = ("passed", "skipped", "xfail", "absent", "deselected")
RAN = ("passed", "failed", "error", "crashed", "timeout", "xpass")  # outcomes of a test that really ran
PLUGIN_MODULE = "_harness_bisect_probe"


@dataclass
class Attempt:
    """One run of one test at one commit."""

    status: str
    outcome: str
    duration_s: float = 0.0
    metric: float | None = None
    message: str | None = None


@dataclass
class ProbeResult:
    """Per-test attempts of one probe; `invoked` tells whether pytest actually ran."""

    commit: str
    attempts: dict[str, list[Attempt]] = field(default_factory=dict)
    invoked: bool = False
    skip_reason: str | None = None
    wall_s: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)  # seconds per phase (see `cost`)
    path: str = "none"  # how pytest started: "fresh" (a new interpreter), "fork" (probe server), "none"
    deps: list[str] = field(default_factory=list)  # top-level modules from outside the checkout it imported


InstallFor = Callable[[Path], "str | None"]  # a checkout folder -> its install command, or None


@dataclass
class ProbeConfig:
    """How probes run: per-probe timeout, metric to log, GPUs to spread workers over, and what the caller
    knows of the target: its install command (fixed, or read from each checkout by `install_for`), the
    command that starts pytest, and the environment its tests need."""

    timeout_s: float = 1800.0
    metric: str | None = None
    install: str | None = None
    install_for: InstallFor | None = None  # asked at the probe folder, then at the worktree root
    gpus: list[str] = field(default_factory=list)
    python: str = sys.executable
    pytest_command: list[str] | None = None  # default: `<python> -m pytest` (the worktree venv's python)
    subdir: str = ""  # where pytest runs, relative to the repository root (node ids are relative to it)
    env: dict[str, str] = field(default_factory=dict)  # the suites' environment (e.g. RUN_SLOW=1)
    fork: bool = False  # fork probes from a probe server (`servers`) where it is safe


def plugin_dir(cache: Path) -> Path:
    """A folder holding the probe plugin under a private module name (it cannot be shadowed by a target)."""
    source = (Path(__file__).parent / "probe_plugin.py").read_bytes()
    folder = cache / "plugin" / hashlib.sha1(source).hexdigest()[:12]
    target = folder / f"{PLUGIN_MODULE}.py"
    if not target.exists():
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{os.getpid()}.{threading.get_ident()}.tmp"
        tmp.write_bytes(source)
        tmp.replace(target)
    return folder


class ProbeRunner:
    """Runs probes in worktrees; thread-safe as long as each worktree is used by one thread at a time."""

    def __init__(self, config: ProbeConfig, cache: Path) -> None:
        self.config = config
        self.plugin_dir = plugin_dir(cache)
        self.xdist = importlib.util.find_spec("xdist") is not None
        self.envs = SharedEnvs(cache)  # one install per dependency key, shared by the worktrees (envs.py)
        self.progress = None  # set by the Executor: install lines go to the bisect's progress
        self.servers: ServerPool | None = None
        if config.fork and fork_wanted(config.env) and fork_supported() and not config.pytest_command:
            self.servers = ServerPool(self.plugin_dir, config.subdir, on_start=_track, on_stop=_untrack)

    def _server_env(self, tree: Worktree) -> dict[str, str]:
        """A probe's environment without what is the probe's own: its worktree on PYTHONPATH, its device."""
        env = self.env_for(tree)
        user_path = self.config.env.get("PYTHONPATH", os.environ.get("PYTHONPATH"))
        env.pop("PYTHONPATH", None) if not user_path else env.update(PYTHONPATH=user_path)
        if self.config.gpus:
            env.pop("CUDA_VISIBLE_DEVICES", None)  # each child gets its own
        return env

    def prestart(self, tree: Worktree, commit: str, tests: list[str], checkout: Path) -> None:
        """Start the probe server for `commit` while the first worktrees check out, preloading what the
        tests import in the caller's `checkout` (only a guess of what to import: never code that runs)."""
        base = checkout / self.config.subdir if self.config.subdir else checkout
        find = self.config.install_for
        if self.servers is None or self.config.install or (find and (find(base) or find(checkout))):
            return  # an installing target's interpreter is the worktree's venv, made at its first probe
        files = sorted({t.split("::", 1)[0] for t in tests})
        self.servers.server_for(self.config.python, self._server_env(tree), tree.repo, commit, [base, checkout],
                                base, files)

    def close(self) -> None:
        """Stop the probe servers (and any probe still running on them)."""
        if self.servers is not None:
            self.servers.close()

    def _launch(self, tree: Worktree, commit: str, files: list[str], select: Path, out: Path, repeat: int,
                log: Path) -> tuple[int, bool, str]:
        """Start pytest for one probe, forked from a probe server where possible; (rc, timed_out, path)."""
        base, env = self.base(tree), self.env_for(tree)
        python = str(tree.data["venv"] / "bin" / "python") if tree.data.get("venv") else self.config.python
        # A target with an install runs in the shared install environment, whose PYTHONPATH points the
        # installed package at this probe's worktree (envs.py): a fresh interpreter, never a fork.
        if self.servers is not None and not tree.data.get("venv"):
            server, why = self.servers.server_for(python, self._server_env(tree), tree.repo, commit,
                                                  [base, tree.path], base, files)
            if server is not None:
                request = {"args": self.pytest_args(files, select, out, repeat, tree), "cwd": str(base),
                           "env": env, "log": str(log), "events": str(out), "roots": [str(tree.path)],
                           "local": sorted(local_names(base, tree.path))}
                try:
                    rc, timed_out = _run_forked(server, request, tree, self.config.timeout_s)
                    if rc != REFUSED or '"fork_refused"' not in out.read_text(errors="replace"):
                        return rc, timed_out, "fork"
                    server.refused = True
                    why = "a module of the checkout was loaded in the probe server"
                except ServerGone as exc:
                    why = str(exc)
                self.servers.disable(python)
                out.write_text("")  # the refused child's events are not this probe's
            with open(log, "a") as fh:
                fh.write(f"[harness bisect] fresh interpreter: {why}\n")
        rc, timed_out = _run(self.command(files, select, out, repeat, tree), tree, env, log, self.config.timeout_s,
                             base)
        return rc, timed_out, "fresh"

    def base(self, tree: Worktree) -> Path:
        """The folder pytest runs in (and node ids are relative to): the worktree, or a subfolder of it."""
        return tree.path / self.config.subdir if self.config.subdir else tree.path

    def env_for(self, tree: Worktree) -> dict[str, str]:
        env = {**os.environ, **self.config.env}
        paths = list(dict.fromkeys([str(self.base(tree)), str(tree.path), str(self.plugin_dir)]))
        if env.get("PYTHONPATH"):
            paths.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(paths)
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env.pop("HARNESS_DB_URL", None)  # probes must not record themselves as runs
        if self.config.gpus:
            env["CUDA_VISIBLE_DEVICES"] = self.config.gpus[tree.index % len(self.config.gpus)]
        return self.envs.apply(tree, env)  # the shared install environment, if any (envs.py)

    def _prepare(self, tree: Worktree, commit: str, log: Path, marks: dict[str, float]) -> str | None:
        """Check out and install `commit`; the reason it cannot run, or None."""
        if tree.current == commit and tree.installed in (commit, "none"):
            return None
        tree.checkout(commit)
        marks["checkout"] = time.time()
        tree.installed = None
        find = self.config.install_for
        cmd = self.config.install or (find and (find(self.base(tree)) or find(tree.path)))
        if not cmd:
            tree.installed = "none"
            return None
        tree.data.pop("env", None)
        tree.data.pop("venv", None)
        where = self.base(tree) if self.base(tree).is_dir() else tree.path
        reason = self.envs.prepare(tree, where, cmd, self.env_for(tree), log, self.config.timeout_s, _run,
                                   self.progress)
        if reason is None:
            tree.installed = commit
        return reason

    def command(self, files: list[str], select: Path, out: Path, repeat: int, tree: Worktree) -> list[str]:
        python = str(tree.data["venv"] / "bin" / "python") if tree.data.get("venv") else self.config.python
        return [*(self.config.pytest_command or [python, "-m", "pytest"]), *self.pytest_args(files, select, out, repeat, tree)]

    def pytest_args(self, files: list[str], select: Path, out: Path, repeat: int, tree: Worktree) -> list[str]:
        """pytest's arguments for one probe (after `python -m pytest`)."""
        cmd = ["-p", PLUGIN_MODULE, "-p", "no:harness", "-p", "no:cacheprovider",
               # `--opt=value`: pytest looks for the ini file before plugin options exist, and would take
               # a separate value (a path outside the worktree) as a test path, losing the target's ini.
               f"--hb-select={select}", f"--hb-out={out}", f"--hb-repeat={repeat}",
               "--continue-on-collection-errors", "-q", "--no-header", "-rN", f"--rootdir={self.base(tree)}",
               f"--hb-tree={tree.path}"]
        if self.config.metric:
            cmd += [f"--hb-metric={self.config.metric}"]
        if self.xdist and not os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD"):
            cmd += ["-n", "0"]  # a target's addopts may ask for xdist; a probe is one process
        return [*cmd, *files]

    def run(self, tree: Worktree, commit: str, tests: list[str], repeat: int = 1) -> ProbeResult:
        """Probe `tests` at `commit` in `tree`, each `repeat` times in one pytest process."""
        started = time.perf_counter()
        result = ProbeResult(commit=commit)
        marks: dict = {"start": time.time()}
        with tempfile.TemporaryDirectory(prefix=tree.path.name + ".probe-", dir=tree.scratch()) as tmp:
            log = Path(tmp) / "log.txt"
            reason = self._prepare(tree, commit, log, marks)
            marks.setdefault("checkout", marks["start"])
            marks["install"] = time.time()
            if reason is not None:
                result.skip_reason = reason
                result.attempts = {t: [Attempt(SKIP, "not_run", message=reason)] * repeat for t in tests}
                result.wall_s = time.perf_counter() - started
                marks["end"] = time.time()
                result.phases = phases_of(marks)
                return result
            base = self.base(tree)
            present = {t for t in tests if base.is_dir() and (base / t.split("::", 1)[0]).exists()}
            for t in tests:
                if t not in present:
                    result.attempts[t] = [Attempt(PASS, "absent")] * repeat
            files = sorted({t.split("::", 1)[0] for t in present})
            if files:
                select, out = Path(tmp) / "select.json", Path(tmp) / "events.jsonl"
                select.write_text(json.dumps(sorted(present)))
                marks["launch"] = time.time()
                rc, timed_out, result.path = self._launch(tree, commit, files, select, out, repeat, log)
                marks["exit"] = time.time()
                result.invoked = True
                plugin_marks = read_marks(out)
                result.deps = plugin_marks.pop("deps", [])
                marks.update(plugin_marks)
                if self.servers is not None and result.deps:
                    self.servers.learn(str(tree.data["venv"] / "bin" / "python") if tree.data.get("venv")
                                       else self.config.python, result.deps)
                parsed = parse_events(out, sorted(present), repeat, timed_out)
                if parsed is None:
                    result.skip_reason = f"pytest could not run (exit {rc}): {_tail(log)}"
                    parsed = {t: [Attempt(SKIP, "not_run", message=result.skip_reason)] * repeat
                              for t in present}
                result.attempts.update(parsed)
        result.wall_s = time.perf_counter() - started
        marks["end"] = time.time()
        result.phases = phases_of(marks)
        return result


def _covered(test: str, prefix: str) -> bool:
    return prefix == "" or test == prefix or test.startswith(prefix + "::") or test.startswith(prefix + "/")


def parse_events(path: Path, tests: list[str], repeat: int, timed_out: bool) -> dict[str, list[Attempt]] | None:
    """Per-test attempts from a probe's event log; None when pytest never finished collecting."""
    collected: set[str] | None = None
    errors: list[tuple[str, str | None]] = []
    results: dict[tuple[str, int], dict] = {}
    started: set[tuple[str, int]] = set()
    deselected: set[str] = set()
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        try:
            ev = json.loads(line)
        except ValueError:
            continue  # torn last line of a killed process
        kind = ev.get("kind")
        if kind == "collected":
            collected = set(ev["nodeids"])
        elif kind == "deselected":
            deselected.update(ev.get("nodeids") or [])
        elif kind == "collect_error":
            errors.append((ev.get("nodeid") or "", ev.get("message")))
        elif kind == "start":
            started.add((ev["nodeid"], ev["attempt"]))
        elif kind == "result":
            results[(ev["nodeid"], ev["attempt"])] = ev
    if collected is None:
        return None
    out: dict[str, list[Attempt]] = {}
    for test in tests:
        if test not in collected:
            err = next((msg for prefix, msg in errors if _covered(test, prefix)), None)
            if err is not None or any(_covered(test, p) for p, _ in errors):
                out[test] = [Attempt(SKIP, "collect_error", message=err)] * repeat
            elif test in deselected:
                out[test] = [Attempt(PASS, "deselected")] * repeat
            else:
                out[test] = [Attempt(PASS, "absent")] * repeat
            continue
        attempts = []
        for n in range(1, repeat + 1):
            ev = results.get((test, n))
            if ev is not None:
                outcome = ev.get("outcome") or "failed"
                attempts.append(Attempt(PASS if outcome in PASSING else FAIL, outcome,
                                        float(ev.get("duration_s") or 0.0), ev.get("metric"), ev.get("message")))
            elif (test, n) in started:
                outcome = "timeout" if timed_out else "crashed"
                attempts.append(Attempt(FAIL, outcome, message=f"probe process {outcome} in this test"))
            else:
                attempts.append(Attempt(SKIP, "not_run", message="probe process ended before this test"))
        out[test] = attempts
    return out
