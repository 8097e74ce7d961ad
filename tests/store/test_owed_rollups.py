"""Rollups owed (harness/store/pending.py), on Postgres and SQLite: the live writer commits results
without refreshing rollups, says "stored", refreshes after; a writer that dies in between leaves the run
marked owed, and the next writer (a sidecar starting, `harness ingest`) pays it. The tables end equal to
those of a writer that refreshed in every transaction."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.store import Store, pending
from harness.store.fastpath import FastWriter, connect
from harness.store.writer import write_records

from .rollup_data import run_records, write_bundle
from .test_rollups import DAY1, DAY2, _snapshot

HISTORY = [*run_records("d1", 1, DAY1), *run_records("d2", 2, DAY2), *run_records("d3", 3, DAY1)]


def _fast_writer(url: str) -> FastWriter:
    conn = connect(url)
    assert conn is not None
    writer = FastWriter(*conn)
    assert writer.at_head()
    return writer


def _reference(tmp_path: Path, records: list | None = None) -> dict[str, list[tuple]]:
    """The tables of a writer that refreshed the rollups in every transaction."""
    other = Store.open(f"sqlite:///{tmp_path / 'reference.db'}")
    write_records(other, records or HISTORY)
    snap = _snapshot(other)
    other.dispose()
    return snap


def _owed_uuids(store: Store) -> list[str]:
    with store.engine.connect() as conn:
        return [uuid for _, uuid in pending.owed(conn)]


def test_writes_without_refresh_are_owed_then_paid_by_the_same_writer(store: Store, db_url: str,
                                                                        tmp_path: Path) -> None:
    writer = _fast_writer(db_url)
    for start in range(0, len(HISTORY), 7):  # live batches: each marks its runs owed
        writer.write(HISTORY[start:start + 7], refresh=False)
    assert _owed_uuids(store) == ["d1", "d2", "d3"]
    writer.refresh_rollups()
    writer.close()
    assert _owed_uuids(store) == []
    assert _snapshot(store) == _reference(tmp_path)


def test_a_refreshed_run_written_again_without_refresh_is_owed(store: Store, db_url: str) -> None:
    writer = _fast_writer(db_url)
    writer.write(HISTORY[:4])  # refreshed: d1 has its rollups
    assert _owed_uuids(store) == []
    writer.write(HISTORY[4:6], refresh=False)  # more of d1's results: its rollups are stale, so owed
    assert _owed_uuids(store) == ["d1"]
    writer.close()


@pytest.mark.parametrize("payer", ["next sidecar", "harness ingest"])
def test_a_writer_that_dies_after_stored_leaves_the_debt_to_the_next(store: Store, db_url: str, tmp_path: Path,
                                                                     payer: str) -> None:
    dead = _fast_writer(db_url)
    dead.write(HISTORY, refresh=False)
    dead.close()  # died between "stored" and its refresh
    assert _owed_uuids(store) == ["d1", "d2", "d3"]
    later = run_records("later", 5, DAY2)
    if payer == "next sidecar":
        nxt = _fast_writer(db_url)
        assert nxt.refresh_pending() == 3
        nxt.write(later)
        nxt.close()
    else:
        bundle = write_bundle(tmp_path / "later.jsonl", later)
        res = subprocess.run([sys.executable, "-m", "harness.cli", "ingest", str(bundle), "--db", db_url],
                             capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
    assert _owed_uuids(store) == []
    assert _snapshot(store) == _reference(tmp_path, [*HISTORY, *later])


def test_ingest_refreshes_each_run_once_and_a_reingest_leaves_nothing_owed(store: Store, db_url: str,
                                                                           tmp_path: Path) -> None:
    """`harness ingest` writes a file's batches without refreshing, then each run's rollups once; a
    second ingest of the same file marks them owed, finds nothing changed and only clears the marks."""
    bundle = write_bundle(tmp_path / "history.jsonl", HISTORY)
    for _ in range(2):
        res = subprocess.run([sys.executable, "-m", "harness.cli", "ingest", str(bundle), "--db", db_url],
                             capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        assert _owed_uuids(store) == []
        assert _snapshot(store) == _reference(tmp_path)


def test_ingest_in_many_batches_gives_the_tables_of_one_refresh_per_transaction(store: Store, db_url: str,
                                                                               tmp_path: Path) -> None:
    from harness.ingest import ingest

    ingest([str(write_bundle(tmp_path / "history.jsonl", HISTORY))], db_url, batch_size=3)
    assert _owed_uuids(store) == []
    assert _snapshot(store) == _reference(tmp_path)


def test_the_bundle_follower_of_harness_run_refreshes_now_and_then_and_settles(store: Store, tmp_path: Path) -> None:
    """`harness run`'s follower (SQLAlchemy writer): live batches between refreshes mark their runs owed
    (a refresh per batch costs in proportion to the run so far); a run's end is refreshed with its batch;
    `settle` pays the rest. The tables end equal to a writer's that refreshed every transaction."""
    import threading

    from harness.store.follow import BundleFollower

    bundle = tmp_path / "live.jsonl"
    bundle.write_text("")
    follower = BundleFollower(store, bundle)
    lines = write_bundle(tmp_path / "all.jsonl", HISTORY).read_text().splitlines(keepends=True)
    ends = [i for i, line in enumerate(lines) if '"run_end"' in line]
    with open(bundle, "a") as fh:
        fh.writelines(lines[: ends[0]])  # d1 up to its end: a live batch, not refreshed
    assert follower.poll() == ends[0]
    assert _owed_uuids(store) == ["d1"]
    with open(bundle, "a") as fh:
        fh.writelines(lines[ends[0]: ends[0] + 1])  # d1's end: refreshed with its batch
    follower.poll()
    assert _owed_uuids(store) == []
    with open(bundle, "a") as fh:
        fh.writelines(lines[ends[0] + 1:])
    done = threading.Event()
    done.set()
    follower.follow(done)  # drains, then settles
    assert _owed_uuids(store) == []
    assert _snapshot(store) == _reference(tmp_path)
