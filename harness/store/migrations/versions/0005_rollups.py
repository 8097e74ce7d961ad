"""Rollup tables kept at write time for the dashboards and triage read paths (harness/store/rollups.py),
indexes for the culprit / perf-alert annotations on benchmarks and for runs by start time and device samples by benchmark (prune, device panel), and a backfill of existing runs.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

def _counts() -> list[sa.Column]:
    return [sa.Column(n, sa.Integer(), nullable=False, server_default="0")
            for n in ("n_pass", "n_fail", "n_skip", "n_total")]


def upgrade() -> None:
    op.create_index("ix_benchmarks_commit", "benchmarks", ["commit_id", "created_at"])
    op.create_index("ix_runs_started", "runs", ["started_at"])
    op.create_index("ix_device_measurements_benchmark", "device_measurements", ["benchmark_id"])
    op.create_table(
        "rollup_runs",
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("day", sa.DateTime(), nullable=False),
        sa.Column("branch", sa.String(255), nullable=False),
        sa.Column("runner_group", sa.String(64), nullable=False),
        *_counts(),
        sa.Column("baseline_id", sa.Integer(), nullable=True),
        sa.Column("source", sa.String(40), nullable=True),
    )
    op.create_table(
        "rollup_run_counts",
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("model", sa.String(128), primary_key=True),
        sa.Column("suite", sa.String(64), primary_key=True),
        *_counts(),
    )
    op.create_table(
        "rollup_daily",
        sa.Column("day", sa.DateTime(), primary_key=True),
        sa.Column("branch", sa.String(255), primary_key=True),
        sa.Column("runner_group", sa.String(64), primary_key=True),
        sa.Column("model", sa.String(128), primary_key=True),
        *_counts(),
    )
    op.create_table(
        "rollup_daily_models",
        sa.Column("day", sa.DateTime(), primary_key=True),
        sa.Column("model", sa.String(128), primary_key=True),
        *_counts(),
    )
    op.create_table(
        "rollup_new_failures",
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("nodeid_hash", sa.String(40), primary_key=True),
        sa.Column("nodeid", sa.Text(), nullable=False),
        sa.Column("model", sa.String(128)),
        sa.Column("suite", sa.String(64)),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("message", sa.Text()),
        sa.Column("device", sa.String(64)),
        sa.Column("baseline_id", sa.Integer()),
        sa.Column("baseline_outcome", sa.String(16)),
    )
    op.create_table(
        "rollup_tests",
        sa.Column("branch", sa.String(255), primary_key=True),
        sa.Column("runner_group", sa.String(64), primary_key=True),
        sa.Column("nodeid_hash", sa.String(40), primary_key=True),
        sa.Column("nodeid", sa.Text(), nullable=False),
        sa.Column("model", sa.String(128)),
        sa.Column("suite", sa.String(64)),
        sa.Column("last_run_id", sa.Integer(), nullable=False),
        sa.Column("last_started_at", sa.DateTime(), nullable=False),
        sa.Column("last_outcome", sa.String(16), nullable=False),
        sa.Column("last_duration_s", sa.Float(), nullable=False),
        sa.Column("runs", sa.Integer(), nullable=False),
        sa.Column("duration_sum", sa.Float(), nullable=False),
        sa.Column("duration_max", sa.Float(), nullable=False),
        sa.Column("changed_run_id", sa.Integer()),
        sa.Column("last_pass_run_id", sa.Integer()),
    )
    op.create_index("ix_rollup_tests_last_started", "rollup_tests", ["last_started_at"])
    op.create_table(
        "rollup_test_names",
        sa.Column("nodeid_hash", sa.String(40), primary_key=True),
        sa.Column("nodeid", sa.Text(), nullable=False),
        sa.Column("last_started_at", sa.DateTime(), nullable=False),
    )
    op.create_index("ix_rollup_test_names_last", "rollup_test_names", ["last_started_at"])
    op.create_table(
        "rollup_dims",
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("value", sa.String(255), primary_key=True),
    )
    op.create_table(
        "rollup_meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.String(255), nullable=False),
    )
    from harness.store import rollup_backfill

    conn = op.get_bind()
    rollup_backfill.backfill(conn)
    if conn.dialect.name == "postgresql":
        op.execute("ANALYZE")  # fresh statistics for the planner on the new tables


def downgrade() -> None:
    for name in ("rollup_meta", "rollup_dims", "rollup_test_names", "rollup_tests", "rollup_new_failures",
                 "rollup_daily_models", "rollup_daily", "rollup_run_counts", "rollup_runs"):
        op.drop_table(name)
    op.drop_index("ix_device_measurements_benchmark", table_name="device_measurements")
    op.drop_index("ix_runs_started", table_name="runs")
    op.drop_index("ix_benchmarks_commit", table_name="benchmarks")
