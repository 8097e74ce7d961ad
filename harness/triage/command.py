"""`harness new-failures` as one library call: open the store, compare, optionally confirm."""

from __future__ import annotations

from pathlib import Path

from harness.config import resolve_db_url
from harness.triage.new_failures import NewFailures, find_new_failures


def new_failures_command(*, run_id: int | None, baseline_id: int | None, confirm: bool, attempts: int = 3,
                         repo: str | Path | None = None, db: str | None = None) -> NewFailures:
    """New failures of a run against its baseline, confirmed by reruns when `confirm`. Without
    confirmation it only reads, through the fast read connection (no SQLAlchemy on a current store)."""
    url = resolve_db_url(db)
    if not confirm:
        from harness.store.reading import read_connection

        with read_connection(url) as conn:
            return find_new_failures(conn, run_id, baseline_id)
    from harness.store import Store
    from harness.triage.confirm import confirm_new_failures

    store = Store.open(url)
    try:
        return confirm_new_failures(store, find_new_failures(store, run_id, baseline_id), attempts=attempts,
                                    repo=repo)
    finally:
        store.dispose()


def to_text(found: NewFailures) -> str:
    """A short human report of a comparison."""
    head = (f"run {found.run_id} vs baseline {found.baseline_id}: {len(found.new)} new, "
            f"{len(found.still_failing)} still failing, {len(found.fixed)} fixed, {len(found.missing)} missing"
            + (f", {len(found.flaky)} flaky" if found.confirmed else " (unconfirmed)"))
    lines = [head]
    by_test = {d.nodeid: d for d in found.new}
    for group in found.signatures:  # one block per way of failing: the signature, then its tests
        if group.signature:
            models = f" in {len(group.models)} model{'s' if len(group.models) != 1 else ''}" if group.models else ""
            first = (group.message or "").strip().splitlines()[0] if group.message else "(no message)"
            lines.append(f"SIGNATURE {group.signature}: {len(group.tests)} test{'s' if len(group.tests) != 1 else ''}"
                         f"{models} - {first[:200]}" + (f" ({', '.join(group.models)})" if group.models else ""))
        for nodeid in group.tests:
            d = by_test[nodeid]
            was = f" (was {d.baseline_outcome})" if d.baseline_outcome else " (not in baseline)"
            lines.append(f"{'  ' if group.signature else ''}NEW {d.outcome}: {d.nodeid}{was}"
                         + (f" - {d.message}" if d.message and not group.signature else ""))
    for f in found.flaky:
        lines.append(f"FLAKY {f.failures}/{f.attempts}: {f.nodeid}")
    lines.extend(f"MISSING: {d.nodeid}" for d in found.missing)
    return "\n".join(lines)
