"""The engine's side of probe servers (`forkserver`): start one per interpreter, preload the dependencies the
bisected tests import, fork a probe, and decide when a probe must start a fresh interpreter instead.

What to preload: the top-level modules the test files import at module level (and the conftest.py and
__init__.py files on their way), followed through the checkout's own modules, that the checkout does not
provide; then whatever a probe reports it imported from outside the checkout during collection. The
checkout's own modules are never preloaded, and a forked child refuses to run if any is loaded.

A probe starts a fresh interpreter instead when: forking is off (`HARNESS_BISECT_FORK=0` in the
environment or the request's env, or `BisectRequest.fork=False`), the target has its own pytest command,
the platform has no `os.fork`/`os.pidfd_open`, the server could not start or died, a child refused, or
a dependency file differs from the commit the server started at. Dependency files, at the repository root
and at the bisected subfolder: pyproject.toml, setup.py, setup.cfg, requirements*.txt, a requirements/
folder, environment.yml, Pipfile(.lock), poetry.lock, uv.lock: what an install reads. conftest.py is not
one: it is the checkout's code, which every child loads from its own commit like any other module.
"""

from __future__ import annotations

import ast
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import git

from harness_bisect import forkserver

SERVER_MODULE = "_harness_bisect_forkserver"
DEP_FILES = {"pyproject.toml", "setup.py", "setup.cfg", "requirements", "environment.yml", "Pipfile",
             "Pipfile.lock", "poetry.lock", "uv.lock"}


def fork_wanted(env: dict[str, str]) -> bool:
    """False when the caller's environment or the probes' turns probe servers off."""
    value = env.get("HARNESS_BISECT_FORK", os.environ.get("HARNESS_BISECT_FORK", "1"))
    return value.strip().lower() not in ("0", "false", "no", "off")


def fork_supported() -> bool:
    return hasattr(os, "fork") and hasattr(os, "pidfd_open") and hasattr(os, "waitstatus_to_exitcode")


def _is_dep_file(name: str) -> bool:
    return name in DEP_FILES or (name.startswith("requirements") and name.endswith(".txt"))


def dependency_key(repo: git.Repo, commit: str, subdir: str = "") -> tuple[tuple[str, str], ...]:
    """(path, blob id) of every dependency file at `commit` (root and `subdir`): equal keys, same inputs."""
    out = []
    for folder in dict.fromkeys(["", subdir.strip("/")]):
        args = [commit, f"{folder}/"] if folder else [commit]
        try:
            listing = repo.git.ls_tree(*args)
        except git.GitCommandError:
            continue
        for line in listing.splitlines():
            meta, _, path = line.partition("\t")
            if _is_dep_file(path.rsplit("/", 1)[-1]):
                out.append((path, meta.split()[2]))
    return tuple(sorted(out))


def local_names(*folders: Path) -> set[str]:
    """Top-level module and package names the checkout provides (as the probe plugin counts them)."""
    names: set[str] = set()
    for folder in folders:
        try:
            entries = list(folder.iterdir())
        except OSError:
            continue
        for entry in entries:
            if entry.suffix == ".py":
                names.add(entry.stem)
            elif entry.name.isidentifier() and entry.is_dir():
                names.add(entry.name)
    return names


def _module_level(tree: ast.AST) -> Iterable[ast.AST]:
    """Statements run at import: module level, inside if/try/with and class bodies, not in functions."""
    stack = list(getattr(tree, "body", []))
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
            continue
        for name in ("body", "orelse", "finalbody", "handlers"):
            stack.extend(getattr(node, name, []) or [])


def scan_deps(roots: list[Path], files: list[str], base: Path) -> list[str]:
    """Modules from outside the checkout (dotted names as written, e.g. `safetensors.torch`; some may be
    attributes rather than modules) that importing `files` (relative to `base`) imports at module level."""
    local = local_names(*roots)
    todo: list[Path] = []
    for f in files:
        path = base / f
        todo.append(path)
        folder = path.parent
        while True:
            todo += [folder / "conftest.py", folder / "__init__.py"]
            if folder == base or base not in folder.parents:
                break
            folder = folder.parent
    seen: set[Path] = set()
    deps: set[str] = set()

    def module_files(dotted: str) -> list[Path]:
        parts = dotted.split(".")
        out = []
        for root in roots:
            for i in range(1, len(parts) + 1):
                stem = root.joinpath(*parts[:i])
                out += [stem / "__init__.py", stem.with_suffix(".py")]
        return out

    while todo:
        path = todo.pop()
        if path in seen or not path.is_file():
            continue
        seen.add(path)
        try:
            tree = ast.parse(path.read_bytes())
        except (SyntaxError, ValueError, OSError):
            continue
        for node in _module_level(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif node.level:
                pkg = path.parent
                for _ in range(node.level - 1):
                    pkg = pkg.parent
                stem = pkg.joinpath(*(node.module or "").split(".")) if node.module else pkg
                todo += [stem / "__init__.py", stem.with_suffix(".py")]
                todo += [stem / a.name / "__init__.py" for a in node.names] + [stem / f"{a.name}.py" for a in node.names]
                continue
            else:
                names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            for name in names:
                top = name.partition(".")[0]
                if not top:
                    continue
                if top in local:
                    todo += module_files(name)
                else:
                    deps.add(name)
    stdlib = getattr(sys, "stdlib_module_names", set())
    return sorted(d for d in deps if d.partition(".")[0] not in stdlib and d != "__future__")


def server_script(folder: Path) -> Path:
    """The server under a private module name in `folder` (beside the probe plugin)."""
    target = folder / f"{SERVER_MODULE}.py"
    source = Path(forkserver.__file__).read_bytes()
    if not target.exists() or target.read_bytes() != source:
        tmp = folder / f".{os.getpid()}.{threading.get_ident()}.server.tmp"
        tmp.write_bytes(source)
        tmp.replace(target)
    return target


class ServerGone(Exception):
    """The probe server died or refused: run this probe in a fresh interpreter."""


class ProbeServer:
    """One running probe server and the probes in flight on it (thread-safe)."""

    def __init__(self, python: str, script: Path, env: dict[str, str], log: Path, key: tuple,
                 local: set[str]) -> None:
        self.key, self.local = key, local
        self.preloaded: set[str] = set(local)  # names never to ask for again
        self._log = open(log, "ab")  # noqa: SIM115 - the server's own stderr, kept for its lifetime
        # torch.cuda.is_available() by NVML in the server: a CUDA driver initialised before fork is unusable
        env = {**env, "PYTORCH_NVML_BASED_CUDA_CHECK": env.get("PYTORCH_NVML_BASED_CUDA_CHECK", "1")}
        self.proc = subprocess.Popen([python, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._log, env=env, start_new_session=True)
        self._write_lock = threading.Lock()
        self._waiting: dict[int, queue.Queue] = {}
        self._preloads: queue.Queue = queue.Queue()
        self._next = 0
        self.dead = False
        self.refused = False
        self._reader = threading.Thread(target=self._read, name="hb-probe-server", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if msg.get("op") == "preloaded":
                self._preloads.put(msg)
            elif "id" in msg:
                q = self._waiting.get(msg["id"])
                if q is not None:
                    q.put(msg)
                elif msg.get("op") == "forked":
                    _killpg(int(msg["pid"]))  # its probe gave up waiting for it
        self.dead = True
        for q in list(self._waiting.values()):
            q.put({"op": "gone"})

    def _send(self, obj: dict[str, Any]) -> None:
        with self._write_lock:
            if self.dead or self.proc.stdin is None:
                raise ServerGone("probe server is not running")
            try:
                self.proc.stdin.write((json.dumps(obj) + "\n").encode())
                self.proc.stdin.flush()
            except (BrokenPipeError, OSError, ValueError):
                self.dead = True
                raise ServerGone("probe server is not running") from None

    def preload(self, names: Iterable[str], plugins: bool = False) -> None:
        """Ask the server to import `names` before its next fork (asynchronous)."""
        new = [n for n in names if n not in self.preloaded]
        if not new and not plugins:
            return
        self.preloaded.update(new)
        self._send({"op": "preload", "modules": new, "exclude": sorted(self.local), "plugins": plugins})

    def fork(self, request: dict[str, Any], timeout: float, on_pid: Any) -> tuple[int, bool]:
        """Run one probe in a forked child; (returncode, timed_out). `on_pid(pid)` when it started."""
        with self._write_lock:
            self._next += 1
            req_id = self._next
        q: queue.Queue = queue.Queue()
        self._waiting[req_id] = q
        try:
            self._send({**request, "op": "fork", "id": req_id})
            try:
                msg = q.get(timeout=timeout)
            except queue.Empty:
                self.dead = True  # stuck (in an import?): no more forks from it
                raise ServerGone("probe server did not start the probe in time") from None
            if msg.get("op") != "forked":
                raise ServerGone(f"probe server died before the probe started: {self.why()}")
            pid = int(msg["pid"])
            on_pid(pid)
            try:
                msg = q.get(timeout=timeout)
                timed_out = False
            except queue.Empty:
                _killpg(pid)
                msg, timed_out = q.get(), True
            if msg.get("op") != "exit":
                _killpg(pid)
                raise ServerGone(f"probe server died during the probe: {self.why()}")
            return int(msg["rc"]), timed_out
        finally:
            self._waiting.pop(req_id, None)

    def close(self) -> None:
        """End the server (it kills children still running) and wait for it."""
        self.dead = True
        try:
            if self.proc.stdin:
                self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            _killpg(self.proc.pid)
            self.proc.wait()
        self._log.close()
        Path(self._log.name).unlink(missing_ok=True)

    def why(self) -> str:
        """The last line the server wrote to stderr (why it died), or its exit status."""
        try:
            lines = [ln.strip() for ln in Path(self._log.name).read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            lines = []
        return lines[-1][:300] if lines else f"exit {self.proc.poll()}"


def _killpg(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class ServerPool:
    """The probe servers of one bisect, one per interpreter, started on first use."""

    def __init__(self, plugin_dir: Path, subdir: str = "", on_start: Any = None, on_stop: Any = None) -> None:
        self.plugin_dir, self.subdir = plugin_dir, subdir
        self.on_start, self.on_stop = on_start, on_stop
        self.servers: dict[str, ProbeServer] = {}
        self.off: set[str] = set()  # interpreters whose server failed: fresh probes only
        self._lock = threading.Lock()

    def server_for(self, python: str, env: dict[str, str], repo: git.Repo, commit: str, roots: list[Path],
                   base: Path, files: list[str]) -> tuple[ProbeServer | None, str]:
        """The server to fork this probe from, or (None, why a fresh interpreter runs it)."""
        key = dependency_key(repo, commit, self.subdir)
        with self._lock:
            if python in self.off:
                return None, "probe server off for this interpreter"
            server = self.servers.get(python)
            if server is None:
                local = local_names(*roots)
                try:
                    server = ProbeServer(python, server_script(self.plugin_dir), env,
                                         self.plugin_dir.parent / f"server-{os.getpid()}-{len(self.servers)}.log",
                                         key, local)
                    server.preload(scan_deps(roots, files, base), plugins=True)
                except (OSError, ServerGone) as exc:
                    self.off.add(python)
                    return None, f"probe server could not start: {exc}"
                self.servers[python] = server
                if self.on_start:
                    self.on_start(server.proc)
        if server.dead or server.refused:
            self.disable(python)
            return None, "probe server gone"
        if server.key != key:
            changed = sorted({p for p, _ in set(server.key) ^ set(key)})
            return None, "dependency files differ from the probe server's commit: " + ", ".join(changed)
        return server, ""

    def learn(self, python: str, deps: Iterable[str]) -> None:
        """Preload, before the next fork, what a probe imported from outside the checkout."""
        server = self.servers.get(python)
        stdlib = getattr(sys, "stdlib_module_names", set())
        if server is not None and not server.dead:
            try:
                server.preload(sorted(d for d in deps if d not in stdlib and not d.startswith("_")))
            except ServerGone:
                pass

    def disable(self, python: str) -> None:
        """No more forks for `python` (probes in flight on its server finish; it stops with the pool)."""
        with self._lock:
            self.off.add(python)

    def _stop(self, server: ProbeServer) -> None:
        server.close()
        if self.on_stop:
            self.on_stop(server.proc)

    def close(self) -> None:
        with self._lock:
            servers, self.servers = list(self.servers.values()), {}
        for server in servers:
            self._stop(server)
