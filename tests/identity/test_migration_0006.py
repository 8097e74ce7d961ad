"""Migration 0006 on Postgres and SQLite: a store at the previous revision, with rows, is upgraded and
its failing and skipped rows get the exception, signature and skip category their messages imply."""

from __future__ import annotations

from sqlalchemy import text

from harness.signature import signature
from harness.store import Store, rollup_backfill

PREVIOUS = "0005"

ROWS = [  # nodeid, model, outcome, message
    ("t.py::test_fwd[llama]", "llama", "failed",
     "RuntimeError: expected scalar type BFloat16 but found Float at 0x7f00aa in LlamaAttention"),
    ("t.py::test_fwd[gemma]", "gemma", "failed",
     "RuntimeError: expected scalar type BFloat16 but found Float at 0x5500bb in GemmaAttention"),
    ("t.py::test_cfg", None, "error", "ValueError: bad config 12"),
    ("t.py::test_eq", None, "failed", "assert 1 == 2"),
    ("t.py::test_ok", None, "passed", None),
    ("t.py::test_gpu", None, "skipped", "Skipped: requires CUDA"),
    ("t.py::test_off", None, "skipped", "Skipped: broken, see #1"),
    ("t.py::test_xf", None, "xfail", "needs a GPU"),
]


def test_upgrade_backfills_existing_rows(db_url: str) -> None:
    store = Store.open(db_url, upgrade=False)
    try:
        store.upgrade(PREVIOUS)
        assert store.current_revision() == PREVIOUS
        with store.engine.begin() as conn:
            conn.execute(text("INSERT INTO runs (uuid, started_at, status, gpu_count) "
                              "VALUES ('r-1', '2026-01-01 00:00:00', 'completed', 0)"))
            run_id = conn.execute(text("SELECT id FROM runs")).scalar_one()
            conn.execute(text("INSERT INTO test_results (run_id, nodeid, nodeid_hash, model, outcome, duration_s, "
                              "message, attempt) VALUES (:run, :nodeid, :hash, :model, :outcome, 0, :message, 1)"),
                         [{"run": run_id, "nodeid": n, "hash": str(i), "model": m, "outcome": o, "message": msg}
                          for i, (n, m, o, msg) in enumerate(ROWS)])
            rollup_backfill.backfill(conn)  # what 0005 keeps for a run written before 0006
        store.upgrade()
        with store.engine.connect() as conn:
            got = {r.nodeid.split("::")[1]: r for r in conn.execute(text(
                "SELECT nodeid, exception, signature, skip_category, started_at, output_tail FROM test_results"))}
            daily = conn.execute(text("SELECT signature, model, n FROM rollup_signatures_daily "
                                      "ORDER BY n DESC, model")).all()
            kinds = conn.execute(text("SELECT signature, exception FROM rollup_signatures")).all()
            skips = conn.execute(text("SELECT sum(n_skip_explicit), sum(n_skip) FROM rollup_run_counts")).one()
    finally:
        store.dispose()
    assert got["test_fwd[llama]"].signature == got["test_fwd[gemma]"].signature == signature(
        "RuntimeError", ROWS[0][3], "llama")
    assert got["test_fwd[llama]"].exception == "RuntimeError"
    assert got["test_cfg"].exception == "ValueError" and got["test_cfg"].signature != got["test_fwd[llama]"].signature
    assert got["test_eq"].exception == "AssertionError"
    assert got["test_ok"].signature is None and got["test_ok"].skip_category is None
    assert (got["test_gpu"].skip_category, got["test_off"].skip_category, got["test_xf"].skip_category) == (
        "not-applicable", "skipped", "skipped")
    assert all(r.started_at is None and r.output_tail is None for r in got.values())  # not derivable
    dtype = got["test_fwd[llama]"].signature  # the rollups are backfilled too: one signature, two models
    assert sorted((m, n) for s, m, n in daily if s == dtype) == [("gemma", 1), ("llama", 1)]
    assert len(daily) == 4 and dict(kinds)[dtype] == "RuntimeError" and len(kinds) == 3
    assert tuple(skips) == (2, 2)  # the explicit skip and the xfail; not the CUDA gate
