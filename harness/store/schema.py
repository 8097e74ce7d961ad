"""SQLAlchemy 2.0 typed entities of the results store (Postgres in production, SQLite embedded).

Timestamps are naive UTC, as in the seed schema. Test node ids can be many kilobytes long, so every
index on a test uses `nodeid_hash` (sha1 hex of the node id), never the node id itself.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from harness.store.rollups import FAILING_OUTCOMES as FAILING_OUTCOMES  # re-exported: defined with the SQL

JSONType = JSON().with_variant(JSONB(), "postgresql")
# SQLite only auto-increments INTEGER PRIMARY KEY; Postgres gets BIGSERIAL for the big tables.
BigId = BigInteger().with_variant(Integer(), "sqlite")

OUTCOMES = ("passed", "failed", "error", "skipped", "xfail", "xpass", "crashed", "timeout")
RUN_STATUSES = ("running", "completed", "failed", "cancelled", "partial", "abandoned")


def utcnow() -> datetime:
    """Naive UTC now, the store's timestamp convention."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def nodeid_hash(nodeid: str) -> str:
    """Stable short key of a test node id (indexes cannot hold 10 kB ids)."""
    return hashlib.sha1(nodeid.encode("utf-8", "surrogatepass")).hexdigest()


class Base(DeclarativeBase):
    """Declarative base of every entity."""


class Run(Base):
    """One `harness run` (or one plugin-recorded pytest session)."""

    __tablename__ = "runs"
    __table_args__ = (
        Index("ix_runs_latest", "branch", "runner_group", "started_at"),
        Index("ix_runs_commit", "commit_sha"),
        Index("ix_runs_status", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True)
    repo: Mapped[str | None] = mapped_column(String(512))
    branch: Mapped[str | None] = mapped_column(String(255))
    commit_sha: Mapped[str | None] = mapped_column(String(64))
    commit_subject: Mapped[str | None] = mapped_column(Text)
    commit_author: Mapped[str | None] = mapped_column(String(255))
    commit_email: Mapped[str | None] = mapped_column(String(255))
    event: Mapped[str | None] = mapped_column(String(64))
    workflow: Mapped[str | None] = mapped_column(String(255))
    runner_group: Mapped[str | None] = mapped_column(String(64))
    machine_type: Mapped[str | None] = mapped_column(String(128))
    hostname: Mapped[str | None] = mapped_column(String(255))
    gpu_name: Mapped[str | None] = mapped_column(String(255))
    gpu_count: Mapped[int] = mapped_column(Integer, default=0)
    python_version: Mapped[str | None] = mapped_column(String(32))
    torch_version: Mapped[str | None] = mapped_column(String(64))
    cuda_version: Mapped[str | None] = mapped_column(String(32))
    suites: Mapped[str | None] = mapped_column(String(255))
    models: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    status: Mapped[str] = mapped_column(String(16), default="running")
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime)  # written by the live `harness run`


class TestResult(Base):
    """One test outcome of one attempt in one run."""

    __tablename__ = "test_results"
    __test__ = False  # not a pytest test class
    __table_args__ = (
        UniqueConstraint("run_id", "nodeid_hash", "attempt", name="uq_test_results_run_test_attempt"),
        Index("ix_test_results_history", "nodeid_hash", "run_id"),
        # Failures by signature (migration 0006); passing rows have none and are not in it.
        Index("ix_test_results_signature", "signature", "run_id", postgresql_where=text("signature IS NOT NULL"),
              sqlite_where=text("signature IS NOT NULL")),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    nodeid: Mapped[str] = mapped_column(Text)
    nodeid_hash: Mapped[str] = mapped_column(String(40))
    model: Mapped[str | None] = mapped_column(String(128))
    suite: Mapped[str | None] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(16))
    duration_s: Mapped[float] = mapped_column(Float, default=0.0)
    message: Mapped[str | None] = mapped_column(Text)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    worker: Mapped[str | None] = mapped_column(String(32))
    device: Mapped[str | None] = mapped_column(String(64))
    # Failure identity (migration 0006, harness/signature.py).
    started_at: Mapped[datetime | None] = mapped_column(DateTime)
    exception: Mapped[str | None] = mapped_column(String(255))
    signature: Mapped[str | None] = mapped_column(String(40))
    skip_category: Mapped[str | None] = mapped_column(String(16))
    output_tail: Mapped[str | None] = mapped_column(Text)


class Benchmark(Base):
    """Seed-compatible benchmark header: one model configuration measured at one commit."""

    __tablename__ = "benchmarks"
    __table_args__ = (
        Index("ix_benchmarks_series", "model", "gpu_name", "branch", "created_at"),
        # Natural key of a run's benchmark (migration 0004): a second write is a no-op.
        Index("ux_benchmarks_natural", "run_id", text("COALESCE(nodeid_hash, '')"), text("COALESCE(config, '')"),
              text("COALESCE(dtype, '')"), text("COALESCE(batch_size, -1)"), text("COALESCE(prompt_length, -1)"),
              unique=True, postgresql_where=text("run_id IS NOT NULL"), sqlite_where=text("run_id IS NOT NULL")),
    )

    benchmark_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    branch: Mapped[str | None] = mapped_column(String(255))
    commit_id: Mapped[str | None] = mapped_column(String(72))
    commit_message: Mapped[str | None] = mapped_column(String(70))
    gpu_name: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    nodeid_hash: Mapped[str | None] = mapped_column(String(40))
    model: Mapped[str | None] = mapped_column(String(128))
    config: Mapped[str | None] = mapped_column(String(128))
    dtype: Mapped[str | None] = mapped_column(String(32))
    batch_size: Mapped[int | None] = mapped_column(Integer)
    prompt_length: Mapped[int | None] = mapped_column(Integer)


class DeviceMeasurement(Base):
    """Seed-compatible device sample taken while a benchmark ran."""

    __tablename__ = "device_measurements"

    measurement_id: Mapped[int] = mapped_column(BigId, primary_key=True)
    benchmark_id: Mapped[int] = mapped_column(ForeignKey("benchmarks.benchmark_id", ondelete="CASCADE"))
    cpu_util: Mapped[float | None] = mapped_column(Float)
    mem_megabytes: Mapped[float | None] = mapped_column(Float)
    gpu_util: Mapped[float | None] = mapped_column(Float)
    gpu_mem_megabytes: Mapped[float | None] = mapped_column(Float)
    gpu_index: Mapped[int | None] = mapped_column(Integer)
    time: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class ModelMeasurement(Base):
    """Seed-compatible metrics object (`measurements` is jsonb on Postgres)."""

    __tablename__ = "model_measurements"
    __table_args__ = (Index("ix_model_measurements_benchmark", "benchmark_id"),)

    measurement_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    benchmark_id: Mapped[int] = mapped_column(ForeignKey("benchmarks.benchmark_id", ondelete="CASCADE"))
    measurements: Mapped[dict[str, Any]] = mapped_column(JSONType)
    time: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Culprit(Base):
    """The commit found to break a test (or move a metric)."""

    __tablename__ = "culprits"
    __table_args__ = (
        Index("ix_culprits_test", "nodeid_hash"), Index("ix_culprits_commit", "commit_sha"),
        Index("ux_culprits_natural", "nodeid_hash", "commit_sha", "run_id", unique=True),  # 0004
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))
    nodeid: Mapped[str] = mapped_column(Text)
    nodeid_hash: Mapped[str] = mapped_column(String(40))
    commit_sha: Mapped[str] = mapped_column(String(64))
    author: Mapped[str | None] = mapped_column(String(255))
    email: Mapped[str | None] = mapped_column(String(255))
    subject: Mapped[str | None] = mapped_column(Text)
    pr: Mapped[int | None] = mapped_column(Integer)
    good_sha: Mapped[str | None] = mapped_column(String(64))
    bad_sha: Mapped[str | None] = mapped_column(String(64))
    method: Mapped[str] = mapped_column(String(32), default="bisect")
    confidence: Mapped[float] = mapped_column(Float, default=1.0)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class FlakyTest(Base):
    """Accumulated flake history of one test on one device, per failure signature ("" when unknown): a
    test that fails two different ways is two histories (migration 0006)."""

    __tablename__ = "flaky_tests"
    __table_args__ = (UniqueConstraint("nodeid_hash", "device", "signature", name="uq_flaky_tests_test_device_signature"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    nodeid: Mapped[str] = mapped_column(Text)
    nodeid_hash: Mapped[str] = mapped_column(String(40))
    device: Mapped[str] = mapped_column(String(64), default="")
    signature: Mapped[str] = mapped_column(String(40), default="", server_default="")
    failures: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))
    first_seen: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class PerfAlert(Base):
    """A change point found in one metric series."""

    __tablename__ = "perf_alerts"
    __table_args__ = (
        Index("ix_perf_alerts_series", "model", "metric", "gpu_name", "branch"),
        # Natural key (migration 0004): one alert per series and commit after.
        Index("ux_perf_alerts_natural", "metric", text("COALESCE(model, '')"), text("COALESCE(gpu_name, '')"),
              text("COALESCE(branch, '')"), "commit_after", unique=True),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    metric: Mapped[str] = mapped_column(String(128))
    model: Mapped[str | None] = mapped_column(String(128))
    gpu_name: Mapped[str | None] = mapped_column(String(255))
    branch: Mapped[str | None] = mapped_column(String(255))
    commit_before: Mapped[str | None] = mapped_column(String(64))
    commit_after: Mapped[str] = mapped_column(String(64))
    value_before: Mapped[float | None] = mapped_column(Float)
    value_after: Mapped[float | None] = mapped_column(Float)
    magnitude: Mapped[float] = mapped_column(Float)
    p_value: Mapped[float | None] = mapped_column(Float)
    direction: Mapped[str] = mapped_column(String(16), default="regression")
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


Index("ix_benchmarks_commit", Benchmark.commit_id, Benchmark.created_at)
Index("ix_runs_started", Run.started_at)
Index("ix_device_measurements_benchmark", DeviceMeasurement.benchmark_id)


from harness.store import rollup_schema  # noqa: E402,F401 - registers the rollup tables on Base.metadata
