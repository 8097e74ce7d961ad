"""Probe server: a Python process that imports a target's third-party dependencies once (torch, numpy, ...)
and forks one child per probe, which runs pytest in the probe's worktree.

Standard library only (pytest is imported lazily): like the probe plugin it is copied under a private
module name and run by the probe's interpreter, where a `harness` package may be another version or
absent. It never imports the package under test: a child gets the probe's worktree first on `sys.path`
and its working directory there, and before collection it checks that no module of the checkout (a
top-level name the worktree provides, or a file inside it) is loaded; if one is, it logs a
``fork_refused`` event and exits with `REFUSED`, and the caller reruns the probe in a fresh interpreter.

Protocol: JSON lines on stdin; replies on the stdout it was started with (its own prints go to stderr).
  {"op": "preload", "modules": [...], "exclude": [...]} -> {"op": "preloaded", "ok": [...], "failed": [...]}
  {"op": "fork", "id": N, "args": [...], "cwd": ..., "env": {...}, "log": ..., "events": ...,
   "local": [...], "roots": [...]} -> {"op": "forked", "id": N, "pid": P}, later {"op": "exit", "id": N, "rc": R}
End of stdin: exit. A child still running goes on, like a fresh probe whose bisect died: the bisect kills
its probes when interrupted, and after a SIGKILL the next bisect of the repository kills the orphan it
finds in the worktree's owner file.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import selectors
import signal
import sys
import time
import traceback
from typing import Any

REFUSED = 86
PROTO = -1
BASE_PATH: list[str] = []


def send(obj: dict[str, Any]) -> None:
    data = (json.dumps(obj) + "\n").encode()
    while data:
        data = data[os.write(PROTO, data):]


def preload(names: list[str], exclude: set[str]) -> tuple[list[str], list[str]]:
    """Import `names` (and pytest's entry-point plugins), skipping the checkout's own top-level names."""
    ok, failed = [], []
    for name in names:
        if name.partition(".")[0] in exclude or name in sys.modules:
            continue
        try:
            importlib.import_module(name)
            ok.append(name)
        except BaseException:  # noqa: BLE001 - a dependency that fails to import is the child's to report
            failed.append(name)
    return ok, failed


def plugins(exclude: set[str]) -> list[str]:
    """Modules of pytest's entry-point plugins (but `harness`'s own, which probes turn off)."""
    from importlib import metadata

    try:
        eps = metadata.entry_points(group="pytest11")
    except Exception:  # noqa: BLE001
        return []
    return [ep.value.split(":")[0] for ep in eps if ep.name != "harness"
            and ep.value.split(":")[0].partition(".")[0] not in exclude]


def leaked(local: set[str], roots: list[str]) -> list[str]:
    """Modules of the checkout already loaded (which the probe must import from its own commit), and CUDA
    initialised by a preloaded module (a forked child could not use it)."""
    out = []
    torch = sys.modules.get("torch")
    cuda = getattr(torch, "cuda", None)
    if cuda is not None and getattr(cuda, "is_initialized", lambda: False)():
        out.append("torch.cuda (initialised in the probe server)")
    for name, mod in list(sys.modules.items()):
        path = getattr(mod, "__file__", None) or ""
        if name.partition(".")[0] in local or any(path.startswith(r.rstrip("/") + "/") for r in roots):
            out.append(name)
    return sorted(out)


def child(req: dict[str, Any], keep: list[int]) -> None:
    """In the forked child: become the probe's pytest process; never returns."""
    rc = 70
    try:
        os.setsid()
        for fd in keep:
            os.close(fd)
        out = os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.close(out)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.chdir(req["cwd"])
        os.environ.clear()
        os.environ.update(req["env"])
        sys.dont_write_bytecode = True
        extra = [p for p in req["env"].get("PYTHONPATH", "").split(os.pathsep) if p]
        sys.path[:] = list(dict.fromkeys([req["cwd"], *extra, *BASE_PATH]))
        importlib.invalidate_caches()
        with open(req["events"], "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"kind": "phase", "name": "forked", "t": time.time()}) + "\n")
            bad = leaked(set(req["local"]), req["roots"])
            if bad:
                fh.write(json.dumps({"kind": "fork_refused", "modules": bad[:20]}) + "\n")
                fh.flush()
                os._exit(REFUSED)
        import pytest

        sys.argv = ["pytest", *req["args"]]
        rc = int(pytest.main(req["args"]))
        with open(req["events"], "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"kind": "phase", "name": "exiting", "t": time.time()}) + "\n")
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001
        traceback.print_exc()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(rc)


def main() -> None:
    global PROTO, BASE_PATH
    PROTO = os.dup(1)
    os.dup2(2, 1)
    BASE_PATH = [p for p in sys.path[1:] if p]  # without this script's folder
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sel = selectors.DefaultSelector()
    sel.register(0, selectors.EVENT_READ, None)
    children: dict[int, tuple[int, int]] = {}  # pidfd -> (request id, pid)
    buf = b""
    send({"op": "ready", "pid": os.getpid()})
    while True:
        for key, _ in sel.select():
            if key.data is not None:
                req_id, pid = key.data
                sel.unregister(key.fd)
                os.close(key.fd)
                children.pop(key.fd, None)
                _, status = os.waitpid(pid, 0)
                send({"op": "exit", "id": req_id, "rc": os.waitstatus_to_exitcode(status)})
                continue
            chunk = os.read(0, 1 << 16)
            if not chunk:
                os._exit(0)
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                req = json.loads(line)
                if req["op"] == "preload":
                    exclude = set(req.get("exclude") or [])
                    names = [*req.get("modules", []), *(plugins(exclude) if req.get("plugins") else [])]
                    ok, failed = preload(names, exclude)
                    send({"op": "preloaded", "ok": ok, "failed": failed, "t": time.time()})
                elif req["op"] == "fork":
                    gc.freeze()  # the preloaded objects: a child's gc.collect skips them and leaves their pages shared
                    sys.stdout.flush()
                    sys.stderr.flush()
                    pid = os.fork()
                    if pid == 0:
                        child(req, [PROTO, sel.fileno(), *children])
                    fd = os.pidfd_open(pid)
                    children[fd] = (req["id"], pid)
                    sel.register(fd, selectors.EVENT_READ, (req["id"], pid))
                    send({"op": "forked", "id": req["id"], "pid": pid})


if __name__ == "__main__":
    main()
