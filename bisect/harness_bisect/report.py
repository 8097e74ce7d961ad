"""The bisect result (the `--json` object of DESIGN.md and a short text report) and the sink it goes to."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from harness_bisect.flaky import Flaky


@dataclass
class CulpritReport:
    """A commit blamed for some tests; `range` lists every candidate when skipped commits hide which."""

    commit: str
    author: str
    email: str
    subject: str
    pr: int | None
    tests: list[str]
    range: list[str] = field(default_factory=list)


@dataclass
class BisectResult:
    """Everything a bisect found, plus the work it took."""

    good: str
    bad: str
    commits_in_range: int
    probes: int = 0
    rounds: int = 0
    culprits: list[CulpritReport] = field(default_factory=list)
    flaky: list[Flaky] = field(default_factory=list)
    not_reproduced: list[str] = field(default_factory=list)
    skipped_commits: list[str] = field(default_factory=list)
    method: str = "bisect"
    workers: int = 1
    wall_s: float = 0.0
    cost: dict[str, Any] | None = None  # where the wall time went (`cost.CostLog.to_json`)

    def to_json(self) -> dict[str, Any]:
        """The DESIGN.md object (plus `range` per culprit, `method`, `workers`, `wall_s` and `cost`)."""
        out = {
            "good": self.good, "bad": self.bad, "commits_in_range": self.commits_in_range,
            "probes": self.probes, "rounds": self.rounds,
            "culprits": [asdict(c) for c in self.culprits],
            "flaky": [f.to_json() for f in self.flaky],
            "not_reproduced": list(self.not_reproduced),
            "skipped_commits": list(self.skipped_commits),
            "method": self.method, "workers": self.workers, "wall_s": round(self.wall_s, 3),
        }
        if self.cost is not None:
            out["cost"] = self.cost
        return out

    def to_text(self) -> str:
        lines = [f"bisected {self.good[:12]}..{self.bad[:12]}: {self.commits_in_range} commits, "
                 f"{self.probes} pytest invocations in {self.rounds} rounds ({self.wall_s:.1f}s)"]
        for c in self.culprits:
            pr = f" (PR #{c.pr})" if c.pr else ""
            lines.append(f"culprit {c.commit[:12]}{pr} {c.subject!r} by {c.author} <{c.email}>")
            if len(c.range) > 1:
                lines.append(f"  ambiguous: one of {len(c.range)} commits (skipped ones could not run): "
                             + " ".join(s[:12] for s in c.range))
            lines.extend(f"  {t}" for t in c.tests)
        for f in self.flaky:
            lines.append(f"flaky (not blamed): {f.test} failed {f.failures}/{f.attempts}")
        for t in self.not_reproduced:
            lines.append(f"not reproduced: {t}")
        if self.skipped_commits:
            lines.append("skipped (could not run): " + " ".join(s[:12] for s in self.skipped_commits))
        if not self.culprits:
            lines.append("no culprit found")
        return "\n".join(lines)


class ResultSink(Protocol):
    """Where a finished bisect's findings go: the platform stores culprits and flaky tests; the engine
    only calls `record` once, after the search, with the complete result."""

    def record(self, result: BisectResult) -> None: ...
