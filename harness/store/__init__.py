"""Results store: schema, migrations, writes and queries (imports no CLI, runner or report code).

Names are imported lazily so that the bundle follower's fast path can run without SQLAlchemy.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Store", "StoreConfig", "StoreError", "redact"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from harness.store import db

        return getattr(db, name)
    raise AttributeError(name)
