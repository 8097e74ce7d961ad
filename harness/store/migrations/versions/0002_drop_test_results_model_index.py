"""Drop ix_test_results_model: no query filters test results by (model, suite) without a run or test
key, and every index on test_results costs ingest throughput (benchmarks/bench_ingest.py).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""
from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("test_results") as batch:
        batch.drop_index("ix_test_results_model")


def downgrade() -> None:
    with op.batch_alter_table("test_results") as batch:
        batch.create_index("ix_test_results_model", ["model", "suite"], unique=False)
