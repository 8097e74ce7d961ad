"""`harness new-failures` as one library call: open the store, compare, optionally confirm."""

from __future__ import annotations

from pathlib import Path

from harness.config import resolve_db_url
from harness.store import Store
from harness.triage.new_failures import NewFailures, find_new_failures


def new_failures_command(*, run_id: int | None, baseline_id: int | None, confirm: bool, attempts: int = 3,
                         repo: str | Path | None = None, db: str | None = None) -> NewFailures:
    """New failures of a run against its baseline, confirmed by reruns when `confirm`."""
    store = Store.open(resolve_db_url(db))
    try:
        found = find_new_failures(store, run_id, baseline_id)
        if confirm:
            from harness.triage.confirm import confirm_new_failures

            found = confirm_new_failures(store, found, attempts=attempts, repo=repo)
        return found
    finally:
        store.dispose()


def to_text(found: NewFailures) -> str:
    """A short human report of a comparison."""
    head = (f"run {found.run_id} vs baseline {found.baseline_id}: {len(found.new)} new, "
            f"{len(found.still_failing)} still failing, {len(found.fixed)} fixed, {len(found.missing)} missing"
            + (f", {len(found.flaky)} flaky" if found.confirmed else " (unconfirmed)"))
    lines = [head]
    for d in found.new:
        was = f" (was {d.baseline_outcome})" if d.baseline_outcome else " (not in baseline)"
        lines.append(f"NEW {d.outcome}: {d.nodeid}{was}" + (f" - {d.message}" if d.message else ""))
    for f in found.flaky:
        lines.append(f"FLAKY {f.failures}/{f.attempts}: {f.nodeid}")
    lines.extend(f"MISSING: {d.nodeid}" for d in found.missing)
    return "\n".join(lines)
