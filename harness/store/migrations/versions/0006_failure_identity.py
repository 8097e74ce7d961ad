"""Failure identity on every result: when the test started, its exception type, failure signature,
skip category and the tail of its captured output (issue 15).

Existing rows are backfilled where the stored message says enough: a failing row gets the exception
type named at the head of its message and the signature of that message (normalised with the row's
model, as the plugin does); a skipped or xfail row gets the category its reason implies. Rows are
read and updated in batches of BATCH by id, the same on Postgres and SQLite; `started_at` and
`output_tail` cannot be derived and stay NULL for old rows. Flaky history is kept per (test, device,
signature); existing histories get the empty signature ("unknown"). The failure-identity rollups
(`rollup_run_signatures`, `rollup_signatures_daily`, `rollup_signatures`, `rollup_run_counts.n_skip_explicit`)
are created and filled for every stored run.

Revision ID: 0006
Revises: 0005
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from harness.signature import exception_type, signature, skip_category
from harness.store import rollup_backfill

revision = "0006"
down_revision = "0005"

branch_labels = None
depends_on = None

BATCH = 5000
FAILING = ("failed", "error", "crashed", "timeout", "xpass")
SKIPS = ("skipped", "xfail")


def upgrade() -> None:
    op.add_column("test_results", sa.Column("started_at", sa.DateTime(), nullable=True))
    op.add_column("test_results", sa.Column("exception", sa.String(255), nullable=True))
    op.add_column("test_results", sa.Column("signature", sa.String(40), nullable=True))
    op.add_column("test_results", sa.Column("skip_category", sa.String(16), nullable=True))
    op.add_column("test_results", sa.Column("output_tail", sa.Text(), nullable=True))
    backfill(op.get_bind())
    # Flaky history per (test, device, signature): a test failing two different ways is not one flaky test.
    with op.batch_alter_table("flaky_tests") as batch:
        batch.add_column(sa.Column("signature", sa.String(40), nullable=False, server_default=""))
        batch.drop_constraint("uq_flaky_tests_test_device", type_="unique")
        batch.create_unique_constraint("uq_flaky_tests_test_device_signature", ["nodeid_hash", "device", "signature"])
    op.create_index("ix_test_results_signature", "test_results", ["signature", "run_id"],
                    postgresql_where=sa.text("signature IS NOT NULL"), sqlite_where=sa.text("signature IS NOT NULL"))
    # Rollups of failure identity (harness/store/rollups.py): top signatures, explicit skips per suite.
    op.add_column("rollup_run_counts", sa.Column("n_skip_explicit", sa.Integer(), nullable=False, server_default="0"))
    op.create_table(
        "rollup_run_signatures",
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("signature", sa.String(40), primary_key=True),
        sa.Column("model", sa.String(128), primary_key=True),
        sa.Column("exception", sa.String(255), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("n", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("started_at", sa.DateTime(), nullable=False),
    )
    op.create_table(
        "rollup_signatures_daily",
        sa.Column("day", sa.DateTime(), primary_key=True),
        sa.Column("signature", sa.String(40), primary_key=True),
        sa.Column("model", sa.String(128), primary_key=True),
        sa.Column("n", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("first_seen", sa.DateTime(), nullable=False),
        sa.Column("last_seen", sa.DateTime(), nullable=False),
    )
    op.create_table(
        "rollup_signatures",
        sa.Column("signature", sa.String(40), primary_key=True),
        sa.Column("exception", sa.String(255), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("first_seen", sa.DateTime(), nullable=False),
        sa.Column("last_seen", sa.DateTime(), nullable=False),
    )
    rollup_backfill.backfill_identity(op.get_bind())


def backfill(conn: sa.Connection, batch: int = BATCH) -> int:
    """Derive exception, signature and skip category of stored rows from their messages; rows updated."""
    read = sa.text("SELECT id, outcome, message, model, nodeid FROM test_results WHERE id > :last "
                   "AND outcome IN ('failed', 'error', 'crashed', 'timeout', 'xpass', 'skipped', 'xfail') "
                   "ORDER BY id LIMIT :n")
    write = sa.text("UPDATE test_results SET exception = :exception, signature = :signature, "
                    "skip_category = :category WHERE id = :id")
    last, done = 0, 0
    while True:
        rows = conn.execute(read, {"last": last, "n": batch}).all()
        if not rows:
            return done
        updates = []
        for row in rows:
            if row.outcome in FAILING:
                message = row.message
                if message and row.nodeid and row.nodeid in message:
                    message = message.replace(row.nodeid, "<test>")
                exc = exception_type(message) if row.outcome != "xpass" else None
                updates.append({"id": row.id, "exception": exc, "signature": signature(exc, message, row.model),
                                "category": None})
            else:
                updates.append({"id": row.id, "exception": None, "signature": None,
                                "category": skip_category(row.message, xfail=row.outcome == "xfail")})
        conn.execute(write, updates)
        done += len(updates)
        last = rows[-1].id


def downgrade() -> None:
    for table in ("rollup_signatures", "rollup_signatures_daily", "rollup_run_signatures"):
        op.drop_table(table)
    with op.batch_alter_table("rollup_run_counts") as batch:
        batch.drop_column("n_skip_explicit")
    op.drop_index("ix_test_results_signature", table_name="test_results")
    op.execute(sa.text("DELETE FROM flaky_tests WHERE signature <> '' AND id NOT IN "
                       "(SELECT MIN(id) FROM flaky_tests GROUP BY nodeid_hash, device)"))
    with op.batch_alter_table("flaky_tests") as batch:
        batch.drop_constraint("uq_flaky_tests_test_device_signature", type_="unique")
        batch.drop_column("signature")
        batch.create_unique_constraint("uq_flaky_tests_test_device", ["nodeid_hash", "device"])
    with op.batch_alter_table("test_results") as batch:
        for column in ("output_tail", "skip_category", "signature", "exception", "started_at"):
            batch.drop_column(column)
