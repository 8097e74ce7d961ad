"""runs.heartbeat_at: a `running` run whose heartbeat is older than a limit is marked `abandoned`
(harness/store/lifecycle.py); ix_runs_status finds running runs without scanning the table.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("heartbeat_at", sa.DateTime(), nullable=True))
        batch.create_index("ix_runs_status", ["status"], unique=False)


def downgrade() -> None:
    # Never a batch (copy-and-move) of `runs` on SQLite: dropping the old table with foreign keys on
    # cascades to every child row (test_results, rollups ...), so a downgrade would empty the store.
    op.drop_index("ix_runs_status", table_name="runs")
    if op.get_bind().dialect.name != "sqlite":
        op.drop_column("runs", "heartbeat_at")
        return
    import sqlite3

    if sqlite3.sqlite_version_info < (3, 35):
        raise RuntimeError("downgrading below 0003 on SQLite needs SQLite 3.35+ (ALTER TABLE DROP COLUMN); "
                           f"this one is {sqlite3.sqlite_version}")
    op.execute("ALTER TABLE runs DROP COLUMN heartbeat_at")  # in place: no child row is touched
