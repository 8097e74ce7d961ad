"""Per-run, per-suite counts over every model (`rollup_run_suites`, issue 12): the skips-per-suite panel
read one row per run x model x suite (~1M rows over 90 days at 300 models: 0.5 s); with every model
selected it now reads a few rows per run. Filled from `rollup_run_counts` for every stored run. On
Postgres, the two rollups that every run rewrites row by row get a tighter autovacuum threshold.

Revision ID: 0007
Revises: 0006
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"

branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rollup_run_suites",
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("suite", sa.String(64), primary_key=True),
        sa.Column("n_skip", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("n_skip_explicit", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("n_total", sa.Integer(), nullable=False, server_default="0"),
    )
    op.execute(sa.text("""INSERT INTO rollup_run_suites (run_id, suite, n_skip, n_skip_explicit, n_total)
SELECT run_id, suite, sum(n_skip), sum(n_skip_explicit), sum(n_total) FROM rollup_run_counts
GROUP BY run_id, suite"""))
    if op.get_bind().dialect.name == "postgresql":
        # Every run rewrites each of its tests' rows here: ~12k dead row versions a run. At the default
        # scale factor (0.2) autovacuum would let them pile up to a fifth of the table between passes.
        for table in ("rollup_tests", "rollup_test_names"):
            op.execute(sa.text(f"ALTER TABLE {table} SET (autovacuum_vacuum_scale_factor = 0.02)"))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in ("rollup_tests", "rollup_test_names"):
            op.execute(sa.text(f"ALTER TABLE {table} RESET (autovacuum_vacuum_scale_factor)"))
    op.drop_table("rollup_run_suites")
