"""Environment-first configuration shared by every verb (flags override)."""

from __future__ import annotations

import os
from dataclasses import dataclass

DEFAULT_DB_URL = "sqlite:///.harness/results.db"
RUNNER_GROUPS = ("cpu", "single-gpu", "multi-gpu")
SUITES = ("slow", "fa2", "quantization", "benchmark")


@dataclass(frozen=True)
class HarnessConfig:
    """Process-wide settings read from the environment."""

    db_url: str = DEFAULT_DB_URL
    runner_group: str | None = None

    @classmethod
    def from_env(cls) -> HarnessConfig:
        return cls(
            db_url=os.environ.get("HARNESS_DB_URL") or DEFAULT_DB_URL,
            runner_group=os.environ.get("HARNESS_RUNNER_GROUP") or None,
        )


def resolve_db_url(flag: str | None) -> str:
    """The `--db` flag wins over `HARNESS_DB_URL`, which wins over the SQLite default."""
    return flag or HarnessConfig.from_env().db_url
