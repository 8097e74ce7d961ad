"""Results store: schema, migrations, writes and queries (imports no CLI, runner or report code)."""

from __future__ import annotations

from harness.store.db import Store, StoreConfig, StoreError, redact

__all__ = ["Store", "StoreConfig", "StoreError", "redact"]
