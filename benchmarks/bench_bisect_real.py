"""`harness bisect -j 1` and `-j 2` against per-test `git bisect run` on a generated model library whose
tests import torch, numpy and safetensors, side by side in one run, with where the wall time goes.

The repository (`mlib`, written with `git fast-import`): a package of `--families` model families (config,
modeling, tokenizer, conversion modules each, all importing torch; the package imports torch and numpy
at its top like a real model library), shared layers and utils, one test file per family (a tiny
forward pass, a safetensors round trip, a numpy check), a few hundred files in all. History: `--commits`
first-parent commits after `good`, most touching one family's code, PRs merged as merge commits; one PR
(two commits on its branch, merged at 60 % of the range) changes the shared attention scaling and breaks
3 tests of 2 families; one test is flaky (fails every other run) and is handed to the bisect too.
"Classic" is one `git bisect start --first-parent` + `git bisect run` per failing test in a clone.

    .venv/bin/python benchmarks/bench_bisect_real.py --commits 90 --families 40
    .venv/bin/python benchmarks/bench_bisect_real.py --modes fork fresh   # probe server on / off
    git worktree add /tmp/before 3ffc09c && .venv/bin/python benchmarks/bench_bisect_real.py --before-src /tmp/before

Per approach: wall, pytest invocations, rounds, culprits right, flaky blamed or not, and for harness the
`cost` object of `harness bisect --json` (seconds per phase over all probes, and along the critical
path: per round, the phases of the probe that ended it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BROKEN = ["tests/models/fam03/test_modeling_fam03.py::test_attention_scale",
          "tests/models/fam03/test_modeling_fam03.py::test_forward_values",
          "tests/models/fam17/test_modeling_fam17.py::test_attention_scale"]
FLAKY = "tests/models/fam09/test_modeling_fam09.py::test_generation_flaky"
ALL = [*BROKEN, FLAKY]

PYPROJECT = """[project]
name = "mlib"
version = "0.1.0"
dependencies = ["torch>=2.1", "numpy", "safetensors"]

[tool.pytest.ini_options]
testpaths = ["tests"]
"""
INIT = """import numpy as np
import torch

from mlib.layers.attention import Attention, attention_scale
from mlib.utils.registry import MODELS, register

__all__ = ["Attention", "MODELS", "attention_scale", "np", "register", "torch"]
"""
ATTENTION = """import math

import torch

_CORRECTION = {correction}


def attention_scale(head_dim: int) -> float:
    return 1.0 / math.sqrt(head_dim + _CORRECTION.get(head_dim, 0.0))


class Attention(torch.nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.qkv = torch.nn.Linear(dim, 3 * dim, bias=False)
        self.out = torch.nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, self.head_dim).unbind(2)
        att = (q.transpose(1, 2) @ k.transpose(1, 2).transpose(-1, -2)) * attention_scale(self.head_dim)
        y = att.softmax(-1) @ v.transpose(1, 2)
        return self.out(y.transpose(1, 2).reshape(b, t, d))
"""
# The culprit PR: fam03 (head dim 28) gets a scale far off, fam17 (head dim 84) one off by 6e-8, which
# only the exact test sees: 3 tests break.
NO_CORRECTION, BAD_CORRECTION = "{}", "{28: 1.0, 84: 1e-5}"
MLP = """import torch


class MLP(torch.nn.Module):
    def __init__(self, dim: int, mult: int = 4) -> None:
        super().__init__()
        self.up = torch.nn.Linear(dim, mult * dim)
        self.down = torch.nn.Linear(mult * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(torch.nn.functional.gelu(self.up(x)))
"""
REGISTRY = """MODELS: dict[str, type] = {}


def register(name: str):
    def wrap(cls: type) -> type:
        MODELS[name] = cls
        return cls
    return wrap
"""
IO = """from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def save(model: torch.nn.Module, path: Path) -> None:
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))


def load(model: torch.nn.Module, path: Path) -> torch.nn.Module:
    model.load_state_dict(load_file(str(path)))
    return model
"""
CONFIG = """from dataclasses import dataclass


@dataclass
class {Cls}Config:
    dim: int = {dim}
    heads: int = {heads}
    layers: int = 2
    vocab: int = 64
    revision: int = {rev}
"""
MODELING = """import torch

from mlib.layers.attention import Attention
from mlib.layers.mlp import MLP
from mlib.models.{fam}.configuration_{fam} import {Cls}Config
from mlib.utils.registry import register


class Block(torch.nn.Module):
    def __init__(self, cfg: {Cls}Config) -> None:
        super().__init__()
        self.norm1, self.norm2 = torch.nn.LayerNorm(cfg.dim), torch.nn.LayerNorm(cfg.dim)
        self.attn, self.mlp = Attention(cfg.dim, cfg.heads), MLP(cfg.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


@register("{fam}")
class {Cls}Model(torch.nn.Module):
    def __init__(self, cfg: {Cls}Config | None = None) -> None:
        super().__init__()
        self.cfg = cfg or {Cls}Config()
        self.embed = torch.nn.Embedding(self.cfg.vocab, self.cfg.dim)
        self.blocks = torch.nn.ModuleList(Block(self.cfg) for _ in range(self.cfg.layers))
        self.head = torch.nn.Linear(self.cfg.dim, self.cfg.vocab, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        for block in self.blocks:
            x = block(x)
        return self.head(x)
# rev {rev}
"""
TOKENIZER = """import numpy as np


class {Cls}Tokenizer:
    vocab = 64

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode(), dtype=np.uint8).astype(np.int64) % self.vocab
# rev {rev}
"""
CONVERT = """import torch

from mlib.utils.io import save


def convert(model: torch.nn.Module, path) -> None:
    save(model, path)
# rev {rev}
"""
TEST = """import numpy as np
import torch

from mlib import attention_scale
from mlib.models.{fam}.configuration_{fam} import {Cls}Config
from mlib.models.{fam}.modeling_{fam} import {Cls}Model
from mlib.models.{fam}.tokenization_{fam} import {Cls}Tokenizer
from mlib.utils.io import load, save


def _model() -> {Cls}Model:
    torch.manual_seed(0)
    return {Cls}Model({Cls}Config()).eval()


def test_forward_shape():
    with torch.no_grad():
        assert _model()(torch.arange(8).view(1, 8)).shape == (1, 8, 64)


def test_forward_values():
    with torch.no_grad():
        a = _model()(torch.arange(8).view(1, 8))
        assert torch.isfinite(a).all()
        head_dim = {Cls}Config().dim // {Cls}Config().heads
        assert abs(attention_scale(head_dim) * head_dim ** 0.5 - 1.0) < 1e-6


def test_attention_scale():
    cfg = {Cls}Config()
    assert attention_scale(cfg.dim // cfg.heads) == 1.0 / (cfg.dim // cfg.heads) ** 0.5


def test_safetensors_roundtrip(tmp_path):
    m = _model()
    save(m, tmp_path / "m.safetensors")
    m2 = load({Cls}Model({Cls}Config()), tmp_path / "m.safetensors")
    for a, b in zip(m.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)


def test_tokenizer():
    ids = {Cls}Tokenizer().encode("hello")
    assert isinstance(ids, np.ndarray) and ids.max() < 64
"""
FLAKY_TEST = """

def test_generation_flaky():
    import os
    from pathlib import Path
    p = Path(os.environ["FLAKE_DIR"]) / "count"
    n = int(p.read_text()) if p.exists() else 0
    p.write_text(str(n + 1))
    assert n % 2 == 1, f"flaky run {n}"
"""


def _fam(i: int) -> tuple[str, str]:
    return f"fam{i:02d}", f"Fam{i:02d}"


def family_files(i: int, rev: int) -> dict[str, str]:
    fam, cls = _fam(i)
    dim, heads = 32 + 8 * i, 2
    fmt = {"fam": fam, "Cls": cls, "dim": dim, "heads": heads, "rev": rev}
    base = f"mlib/models/{fam}"
    test = TEST.format(**fmt) + (FLAKY_TEST if i == 9 else "")
    return {f"{base}/__init__.py": "", f"{base}/configuration_{fam}.py": CONFIG.format(**fmt),
            f"{base}/modeling_{fam}.py": MODELING.format(**fmt),
            f"{base}/tokenization_{fam}.py": TOKENIZER.format(**fmt),
            f"{base}/convert_{fam}_checkpoint.py": CONVERT.format(**fmt),
            f"tests/models/{fam}/__init__.py": "", f"tests/models/{fam}/test_modeling_{fam}.py": test,
            f"docs/models/{fam}.md": f"# {cls}\n\nrevision {rev}\n"}


def initial_files(families: int) -> dict[str, str]:
    files = {"pyproject.toml": PYPROJECT, "mlib/__init__.py": INIT, "mlib/layers/__init__.py": "",
             "mlib/layers/attention.py": ATTENTION.format(correction=NO_CORRECTION), "mlib/layers/mlp.py": MLP,
             "mlib/utils/__init__.py": "", "mlib/utils/registry.py": REGISTRY, "mlib/utils/io.py": IO,
             "mlib/models/__init__.py": "", "tests/__init__.py": "", "tests/models/__init__.py": "",
             "conftest.py": "import torch\n\ntorch.set_num_threads(1)\n", "README.md": "# mlib\n"}
    for i in range(families):
        files.update(family_files(i, 0))
    return files


class History:
    """A fast-import stream: first-parent commits on main, PRs merged with --no-ff."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.mark = 0
        self.tip: int | None = None

    def commit(self, ref: str, subject: str, files: dict[str, str], parents: list[int]) -> int:
        self.mark += 1
        when = 1_700_000_000 + self.mark * 60
        msg = subject.encode()
        self.parts.append(f"commit {ref}\nmark :{self.mark}\n"
                          f"author Dev {self.mark % 5} <dev{self.mark % 5}@example.com> {when} +0000\n"
                          f"committer CI <ci@example.com> {when} +0000\ndata {len(msg)}\n{subject}\n")
        if parents:
            self.parts.append(f"from :{parents[0]}\n")
            self.parts.extend(f"merge :{p}\n" for p in parents[1:])
        for path, text in files.items():
            self.parts.append(f"M 100644 inline {path}\ndata {len(text.encode())}\n{text}\n")
        self.parts.append("\n")
        return self.mark


def make_repo(root: Path, commits: int, families: int) -> tuple[list[str], str]:
    """The repository; (first-parent shas good..bad, the culprit merge's sha)."""
    root.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True)
    h = History()
    tip = h.commit("refs/heads/main", "initial import", initial_files(families), [])
    culprit_pos = round(commits * 0.6)
    for pos in range(1, commits + 1):
        fam = (pos * 7) % families
        if pos == culprit_pos:
            a = h.commit("refs/heads/pr", "attention: a per-head-dim correction of the scale",
                         {"mlib/layers/attention.py": ATTENTION.format(correction=NO_CORRECTION) + "# table\n"},
                         [tip])
            b = h.commit("refs/heads/pr", "attention: correct the odd head dims",
                         {"mlib/layers/attention.py": ATTENTION.format(correction=BAD_CORRECTION)}, [a])
            tip = h.commit("refs/heads/main", f"Merge pull request #{2000 + pos} from dev/attention-scale",
                           {"mlib/layers/attention.py": ATTENTION.format(correction=BAD_CORRECTION)}, [tip, b])
        elif pos % 4 == 0:
            change = {k: v for k, v in family_files(fam, pos).items() if "modeling_" in k and k.startswith("mlib")}
            br = h.commit("refs/heads/pr", f"{_fam(fam)[0]}: tidy the modeling code", change, [tip])
            # fast-import writes a merge's tree from its first parent: the PR's files are listed again
            tip = h.commit("refs/heads/main", f"Merge pull request #{2000 + pos} from dev/{_fam(fam)[0]}", change,
                           [tip, br])
        else:
            files = {k: v for k, v in family_files(fam, pos).items() if not k.startswith("tests/")}
            tip = h.commit("refs/heads/main", f"{_fam(fam)[0]}: update (#{2000 + pos})", files, [tip])
    subprocess.run(["git", "fast-import", "--quiet"], cwd=root, input="".join(h.parts).encode(), check=True)
    subprocess.run(["git", "checkout", "-q", "-f", "main"], cwd=root, check=True)
    shas = subprocess.run(["git", "rev-list", "--first-parent", "--reverse", "main"], cwd=root, check=True,
                          capture_output=True, text=True).stdout.split()
    return shas, shas[culprit_pos]


def run_harness(repo: Path, shas: list[str], workers: int, env: dict[str, str], fork: bool,
                src: Path | None = None) -> dict:
    """`harness bisect` through the CLI; `src`: another source tree of harness to run (the engine before)."""
    reset_flaky(env)
    cache = Path(env["FLAKE_DIR"]) / f"cache-{workers}-{int(fork)}-{time.monotonic_ns()}"
    run_env = {**env, "HARNESS_CACHE_DIR": str(cache), "HARNESS_BISECT_FORK": "1" if fork else "0"}
    if src is not None:
        run_env["PYTHONPATH"] = os.pathsep.join([str(src), str(src / "bisect"), *filter(None, [env.get("PYTHONPATH")])])
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "bisect", "--repo", str(repo), "--good", shas[0],
                           "--bad", shas[-1], "-j", str(workers), "--retries", "3", "--json", "--no-store", *ALL],
                          capture_output=True, text=True, cwd=src or ROOT, env=run_env)
    wall = time.perf_counter() - started
    shutil.rmtree(cache, ignore_errors=True)
    if proc.returncode not in (0, 1):
        raise SystemExit(f"harness bisect failed: {proc.stderr.strip()[-2000:]}")
    out = json.loads(proc.stdout)
    found = {t: c["commit"] for c in out["culprits"] for t in c["tests"]}
    return {"probes": out["probes"], "rounds": out["rounds"], "wall_s": wall, "found": found,
            "flaky": [f["test"] for f in out["flaky"]], "cost": out.get("cost")}


WRAPPER = """#!/bin/sh
echo x >> "$COUNT_FILE"
"$PYTHON" -m pytest -q -p no:cacheprovider -p no:harness "$1" >/dev/null 2>&1
rc=$?
[ $rc -eq 0 ] && exit 0
[ $rc -eq 1 ] && exit 1
exit 125
"""


def run_classic(repo: Path, shas: list[str], tmp: Path, env: dict[str, str]) -> dict:
    """One `git bisect run` per test in a separate clone (git bisect moves HEAD: never the user's)."""
    clone = tmp / "classic"
    shutil.rmtree(clone, ignore_errors=True)
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    wrapper = tmp / "run_test.sh"
    wrapper.write_text(WRAPPER)
    wrapper.chmod(0o755)
    count = tmp / "classic-count"
    count.write_text("")
    reset_flaky(env)
    cenv = {**env, "COUNT_FILE": str(count), "PYTHON": sys.executable, "PYTHONDONTWRITEBYTECODE": "1"}
    found: dict[str, str] = {}
    started = time.perf_counter()
    for test in ALL:
        def g(*a: str) -> subprocess.CompletedProcess:
            return subprocess.run(["git", *a], cwd=clone, env=cenv, capture_output=True, text=True)
        g("bisect", "start", "--first-parent", shas[-1], shas[0])
        g("bisect", "run", str(wrapper), test)
        found[test] = g("rev-parse", "--verify", "-q", "refs/bisect/bad").stdout.strip()
        g("bisect", "reset")
    wall = time.perf_counter() - started
    steps = len(count.read_text().splitlines())
    return {"probes": steps, "rounds": steps, "wall_s": wall, "found": found}


def reset_flaky(env: dict[str, str]) -> None:
    (Path(env["FLAKE_DIR"]) / "count").unlink(missing_ok=True)


def _load() -> str:
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--commits", type=int, default=90)
    ap.add_argument("--families", type=int, default=40)
    ap.add_argument("--modes", nargs="+", default=["fork", "fresh"], choices=["fork", "fresh"],
                    help="harness probe start: probe server (fork) and/or a fresh interpreter per probe")
    ap.add_argument("--before-src", type=Path, help="also run harness from this source tree (e.g. a `git worktree` "
                    "of the commit before the probe server), side by side")
    ap.add_argument("--no-classic", action="store_true")
    ap.add_argument("--out", type=Path, help="write all figures (with the cost objects) as JSON here")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-bisect-real-"))
    env = {**os.environ, "FLAKE_DIR": str(tmp)}
    env.pop("HARNESS_DB_URL", None)
    repo = tmp / "repo"
    shas, culprit = make_repo(repo, args.commits, args.families)
    files = subprocess.run(["git", "ls-files"], cwd=repo, capture_output=True, text=True).stdout.split()
    want = dict.fromkeys(BROKEN, culprit)
    runs: list[tuple[str, dict]] = []
    report: dict = {"machine": os.uname().nodename, "cpus": os.cpu_count(), "files": len(files),
                    "commits": len(shas) - 1, "load_before": _load()}
    plan = [(f"harness bisect -j {w}{'' if mode == 'fork' else ' (fresh interpreter per probe)'}",
             (lambda w=w, mode=mode: run_harness(repo, shas, w, env, mode == "fork")))
            for mode in args.modes for w in (1, 2)]
    if args.before_src:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=args.before_src, capture_output=True,
                             text=True).stdout.strip() or args.before_src.name
        plan += [(f"harness bisect -j {w} (before: engine at {sha})",
                  (lambda w=w: run_harness(repo, shas, w, env, False, args.before_src.resolve()))) for w in (1, 2)]
    if not args.no_classic:
        plan.append(("classic: git bisect run per test", lambda: run_classic(repo, shas, tmp, env)))
    for label, fn in plan:
        load = _load()
        res = fn()
        res["load"] = load
        runs.append((label, res))
        report[label] = {k: v for k, v in res.items() if k != "found"} | {
            "culprits_right": sum(res["found"].get(t) == s for t, s in want.items())}
        print(f"{label}: {res['wall_s']:.1f}s, {res['probes']} invocations (load {load})", file=sys.stderr)
    classic = next((r for lbl, r in runs if lbl.startswith("classic")), None)
    print(f"\n{len(files)} files, N = {len(shas) - 1} first-parent commits, {len(BROKEN)} tests broken by one PR "
          f"(merge {culprit[:10]}), 1 flaky test; {os.cpu_count()} CPUs, load before {report['load_before']}\n")
    print("| approach | culprits right | flaky blamed? | pytest invocations | rounds | wall s | vs classic wall |")
    print("|---|---|---|---|---|---|---|")
    for label, res in runs:
        right = sum(res["found"].get(t) == s for t, s in want.items())
        flaky = "no (reported flaky)" if FLAKY in res.get("flaky", []) else (
            f"yes: {res['found'][FLAKY][:10]}" if res["found"].get(FLAKY) else "no")
        ratio = f"{res['wall_s'] / classic['wall_s']:.2f}x" if classic else "-"
        print(f"| {label} | {right}/{len(want)} | {flaky} | {res['probes']} | {res['rounds']} | "
              f"{res['wall_s']:.1f} | {ratio} |")
    print("\nWhere the wall goes (harness; seconds summed over probes / along the critical path):\n")
    phases = ["worktree", "install", "interpreter", "startup", "imports", "collection", "setup", "call", "teardown",
              "test_other", "shutdown", "other"]
    print("| approach | " + " | ".join(phases) + " | critical path s |")
    print("|---|" + "---|" * (len(phases) + 1))
    for label, res in runs:
        cost = res.get("cost")
        if not cost:
            continue
        crit = dict.fromkeys(phases, 0.0)
        for rnd in cost["rounds"]:
            for k, v in rnd["critical"].items():
                crit[k] = crit.get(k, 0.0) + v
        cells = [f"{cost['phases'].get(p, 0.0):.1f} / {crit.get(p, 0.0):.1f}" for p in phases]
        print(f"| {label} | " + " | ".join(cells) + f" | {cost['critical_s']:.1f} |")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2, default=str))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
