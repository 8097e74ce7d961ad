"""SQLAlchemy entities of the rollups kept at write time for the read paths (harness/store/rollups.py;
migrations 0005-0007). Text keys hold '(none)' for a missing value (primary keys cannot hold NULL), as the
dashboards show it. Registered on `schema.Base` (schema.py imports this module at its end).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from harness.store.schema import Base


class RollupRun(Base):
    """Per run: final-outcome totals, the day / branch / runner group it counts under, its baseline."""

    __tablename__ = "rollup_runs"

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    day: Mapped[datetime] = mapped_column(DateTime)
    branch: Mapped[str] = mapped_column(String(255))
    runner_group: Mapped[str] = mapped_column(String(64))
    n_pass: Mapped[int] = mapped_column(Integer, default=0)
    n_fail: Mapped[int] = mapped_column(Integer, default=0)
    n_skip: Mapped[int] = mapped_column(Integer, default=0)
    n_total: Mapped[int] = mapped_column(Integer, default=0)
    baseline_id: Mapped[int | None] = mapped_column(Integer)
    source: Mapped[str | None] = mapped_column(String(40))  # fingerprint of what the rollups were made from


class RollupRunCount(Base):
    """Final-outcome counts of one run per model x suite."""

    __tablename__ = "rollup_run_counts"

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    suite: Mapped[str] = mapped_column(String(64), primary_key=True)
    n_pass: Mapped[int] = mapped_column(Integer, default=0)
    n_fail: Mapped[int] = mapped_column(Integer, default=0)
    n_skip: Mapped[int] = mapped_column(Integer, default=0)
    n_total: Mapped[int] = mapped_column(Integer, default=0)
    n_skip_explicit: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # 0006: skips not not-applicable


class RollupDaily(Base):
    """Final-outcome counts per UTC day x branch x runner group x model (the pass-rate panel)."""

    __tablename__ = "rollup_daily"

    day: Mapped[datetime] = mapped_column(DateTime, primary_key=True)
    branch: Mapped[str] = mapped_column(String(255), primary_key=True)
    runner_group: Mapped[str] = mapped_column(String(64), primary_key=True)
    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    n_pass: Mapped[int] = mapped_column(Integer, default=0)
    n_fail: Mapped[int] = mapped_column(Integer, default=0)
    n_skip: Mapped[int] = mapped_column(Integer, default=0)
    n_total: Mapped[int] = mapped_column(Integer, default=0)


class RollupDailyModel(Base):
    """`rollup_daily` summed over every branch and runner group (the pass-rate panel's default view)."""

    __tablename__ = "rollup_daily_models"

    day: Mapped[datetime] = mapped_column(DateTime, primary_key=True)
    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    n_pass: Mapped[int] = mapped_column(Integer, default=0)
    n_fail: Mapped[int] = mapped_column(Integer, default=0)
    n_skip: Mapped[int] = mapped_column(Integer, default=0)
    n_total: Mapped[int] = mapped_column(Integer, default=0)


class RollupNewFailure(Base):
    """A new failure of a completed run against its baseline (rollups.classify_sql)."""

    __tablename__ = "rollup_new_failures"

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    nodeid_hash: Mapped[str] = mapped_column(String(40), primary_key=True)
    nodeid: Mapped[str] = mapped_column(Text)
    model: Mapped[str | None] = mapped_column(String(128))
    suite: Mapped[str | None] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16))
    message: Mapped[str | None] = mapped_column(Text)
    device: Mapped[str | None] = mapped_column(String(64))
    baseline_id: Mapped[int | None] = mapped_column(Integer)
    baseline_outcome: Mapped[str | None] = mapped_column(String(16))


class RollupTest(Base):
    """Latest final state of one test per branch x runner group, with duration statistics."""

    __tablename__ = "rollup_tests"
    __table_args__ = (Index("ix_rollup_tests_last_started", "last_started_at"),)

    branch: Mapped[str] = mapped_column(String(255), primary_key=True)
    runner_group: Mapped[str] = mapped_column(String(64), primary_key=True)
    nodeid_hash: Mapped[str] = mapped_column(String(40), primary_key=True)
    nodeid: Mapped[str] = mapped_column(Text)
    model: Mapped[str | None] = mapped_column(String(128))
    suite: Mapped[str | None] = mapped_column(String(64))
    last_run_id: Mapped[int] = mapped_column(Integer)
    last_started_at: Mapped[datetime] = mapped_column(DateTime)
    last_outcome: Mapped[str] = mapped_column(String(16))
    last_duration_s: Mapped[float] = mapped_column(Float, default=0.0)
    runs: Mapped[int] = mapped_column(Integer, default=1)
    duration_sum: Mapped[float] = mapped_column(Float, default=0.0)
    duration_max: Mapped[float] = mapped_column(Float, default=0.0)
    changed_run_id: Mapped[int | None] = mapped_column(Integer)
    last_pass_run_id: Mapped[int | None] = mapped_column(Integer)


class RollupTestName(Base):
    """Every test seen, with the start of the last run that had it (the test-history variable)."""

    __tablename__ = "rollup_test_names"
    __table_args__ = (Index("ix_rollup_test_names_last", "last_started_at"),)

    nodeid_hash: Mapped[str] = mapped_column(String(40), primary_key=True)
    nodeid: Mapped[str] = mapped_column(Text)
    last_started_at: Mapped[datetime] = mapped_column(DateTime)


class RollupDim(Base):
    """Distinct values for the dashboards' template variables (kind: model, branch, runner_group)."""

    __tablename__ = "rollup_dims"

    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    value: Mapped[str] = mapped_column(String(255), primary_key=True)


class RollupMeta(Base):
    """Small settings of the rollups (the cutoff of the last prune)."""

    __tablename__ = "rollup_meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(255))


class RollupRunSignature(Base):
    """Failing final results of one run per failure signature x model (migration 0006)."""

    __tablename__ = "rollup_run_signatures"

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    signature: Mapped[str] = mapped_column(String(40), primary_key=True)
    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    exception: Mapped[str | None] = mapped_column(String(255))
    message: Mapped[str | None] = mapped_column(Text)
    n: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime] = mapped_column(DateTime)


class RollupSignatureDaily(Base):
    """Failures per UTC day x signature x model, with the first and last run start they were seen in."""

    __tablename__ = "rollup_signatures_daily"

    day: Mapped[datetime] = mapped_column(DateTime, primary_key=True)
    signature: Mapped[str] = mapped_column(String(40), primary_key=True)
    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    n: Mapped[int] = mapped_column(Integer, default=0)
    first_seen: Mapped[datetime] = mapped_column(DateTime)
    last_seen: Mapped[datetime] = mapped_column(DateTime)


class RollupSignature(Base):
    """One failure signature: its exception type, an example message, first and last sighting."""

    __tablename__ = "rollup_signatures"

    signature: Mapped[str] = mapped_column(String(40), primary_key=True)
    exception: Mapped[str | None] = mapped_column(String(255))
    message: Mapped[str | None] = mapped_column(Text)
    first_seen: Mapped[datetime] = mapped_column(DateTime)
    last_seen: Mapped[datetime] = mapped_column(DateTime)


class RollupRunSuite(Base):
    """Final-outcome counts of one run per suite, over every model (migration 0007): what per-suite panels
    read when every model is selected, a few rows per run instead of one per model x suite."""

    __tablename__ = "rollup_run_suites"

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    suite: Mapped[str] = mapped_column(String(64), primary_key=True)
    n_skip: Mapped[int] = mapped_column(Integer, default=0)
    n_skip_explicit: Mapped[int] = mapped_column(Integer, default=0)
    n_total: Mapped[int] = mapped_column(Integer, default=0)
