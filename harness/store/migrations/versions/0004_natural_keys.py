"""Natural unique keys, so that a second write of a record is a no-op even at the same moment.

runs.uuid and test_results (run, test, attempt) already had theirs; this adds
- benchmarks (run, test, config, dtype, batch size, prompt length), for rows of a run;
- perf_alerts (series = metric, model, GPU, branch; commit after);
- culprits (test, commit, run): a culprit found without a run (run_id NULL, or SET NULL when its run is
  deleted) is not keyed, so pruning runs can never collide; bisect replaces those rows itself.
Other nullable key parts go through COALESCE (NULLs are distinct in a plain unique index). Duplicates left
by earlier concurrent writers are deleted first, keeping the oldest row.

Revision ID: 0004
Revises: 0002
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

BENCHMARK_KEY = ("run_id", "COALESCE(nodeid_hash, '')", "COALESCE(config, '')", "COALESCE(dtype, '')",
                 "COALESCE(batch_size, -1)", "COALESCE(prompt_length, -1)")
PERF_ALERT_KEY = ("metric", "COALESCE(model, '')", "COALESCE(gpu_name, '')", "COALESCE(branch, '')",
                  "commit_after")
CULPRIT_KEY = ("nodeid_hash", "commit_sha", "run_id")


def _dedupe(table: str, pk: str, key: tuple[str, ...], where: str = "1 = 1") -> None:
    """Delete every row but the oldest of each key (constant SQL: no user input)."""
    op.execute(sa.text(
        f"DELETE FROM {table} WHERE {where} AND {pk} NOT IN "
        f"(SELECT MIN({pk}) FROM {table} WHERE {where} GROUP BY {', '.join(key)})"))


def upgrade() -> None:
    # Children of duplicate benchmarks first (SQLite enforces ON DELETE CASCADE only with its pragma on).
    dup = (f"benchmark_id IN (SELECT benchmark_id FROM benchmarks WHERE run_id IS NOT NULL AND benchmark_id "
           f"NOT IN (SELECT MIN(benchmark_id) FROM benchmarks WHERE run_id IS NOT NULL "
           f"GROUP BY {', '.join(BENCHMARK_KEY)}))")
    op.execute(sa.text(f"DELETE FROM model_measurements WHERE {dup}"))
    op.execute(sa.text(f"DELETE FROM device_measurements WHERE {dup}"))
    _dedupe("benchmarks", "benchmark_id", BENCHMARK_KEY, "run_id IS NOT NULL")
    _dedupe("perf_alerts", "id", PERF_ALERT_KEY)
    _dedupe("culprits", "id", CULPRIT_KEY, "run_id IS NOT NULL")
    op.create_index("ux_benchmarks_natural", "benchmarks", [sa.text(c) for c in BENCHMARK_KEY], unique=True,
                    postgresql_where=sa.text("run_id IS NOT NULL"), sqlite_where=sa.text("run_id IS NOT NULL"))
    op.create_index("ux_perf_alerts_natural", "perf_alerts", [sa.text(c) for c in PERF_ALERT_KEY], unique=True)
    op.create_index("ux_culprits_natural", "culprits", list(CULPRIT_KEY), unique=True)


def downgrade() -> None:
    op.drop_index("ux_culprits_natural", table_name="culprits")
    op.drop_index("ux_perf_alerts_natural", table_name="perf_alerts")
    op.drop_index("ux_benchmarks_natural", table_name="benchmarks")
