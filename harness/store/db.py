"""The store's connection: env-backed config, its error class, engine and migrations."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from harness.config import DEFAULT_DB_URL
from harness.errors import HarnessError
from harness.store.fastpath import PG_OPTIONS
from harness.store.revision import SCHEMA_HEAD

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
MIGRATION_LOCK_KEY = 0x6861726E657373  # "harness": the advisory lock every migrating process takes


class StoreError(HarnessError):
    """The results database is unusable (bad URL, unreachable, failed write)."""


@dataclass(frozen=True)
class StoreConfig:
    """Where results go: `HARNESS_DB_URL`, else the embedded SQLite default."""

    url: str = DEFAULT_DB_URL
    connect_timeout_s: int = 5

    @classmethod
    def from_env(cls, url: str | None = None) -> StoreConfig:
        return cls(url=url or os.environ.get("HARNESS_DB_URL") or DEFAULT_DB_URL)


def redact(url: str) -> str:
    """The URL with any password hidden, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparsable database URL>"


def validate_url(url: str) -> None:
    """Raise StoreError unless `url` names a supported dialect (checked before anything runs)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StoreError(f"unusable database URL {url!r}: expected e.g. sqlite:///path.db or "
                         "postgresql://user@host/db") from None
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise StoreError(f"unsupported database {parsed.get_backend_name()!r} in {redact(url)}: "
                         "use sqlite:///... or postgresql://...")
    if parsed.get_backend_name() == "postgresql" and parsed.drivername not in (
        "postgresql", "postgresql+psycopg2"
    ):
        raise StoreError(f"unsupported driver {parsed.drivername!r}: use postgresql:// (psycopg2)")


SQLITE_WAIT_S = 30.0  # how long a SQLite connection waits for another process's lock


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # noqa: ANN001 - DBAPI objects are untyped
    cur = dbapi_conn.cursor()
    cur.execute(f"PRAGMA busy_timeout={int(SQLITE_WAIT_S * 1000)}")
    cur.execute("PRAGMA foreign_keys=ON")
    _wal(cur)
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def _wal(cur) -> None:  # noqa: ANN001 - a sqlite3 cursor
    """`PRAGMA journal_mode=WAL`, retried: while other processes create or open the same new file,
    SQLite answers it "database is locked" at once, without waiting on the busy timeout."""
    import sqlite3

    deadline, delay = time.monotonic() + SQLITE_WAIT_S, 0.005
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc) or time.monotonic() > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


def make_engine(config: StoreConfig) -> Engine:
    """An engine for `config.url`; SQLite files get their folder and WAL mode."""
    validate_url(config.url)
    url = make_url(config.url)
    if url.drivername == "postgresql":  # SQLAlchemy 2.1 would pick psycopg 3; we ship psycopg2
        url = url.set(drivername="postgresql+psycopg2")
    try:
        if url.get_backend_name() == "sqlite":
            if url.database and url.database != ":memory:":
                folder = Path(url.database).expanduser().parent
                try:
                    folder.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise StoreError(f"cannot create the folder {folder} of {redact(config.url)}: "
                                     f"{exc.strerror}") from None
            engine = create_engine(url, connect_args={"timeout": SQLITE_WAIT_S})
            event.listen(engine, "connect", _sqlite_pragmas)
        else:
            engine = create_engine(url, pool_pre_ping=True,
                                   connect_args={"connect_timeout": config.connect_timeout_s, "options": PG_OPTIONS})
    except (NoSuchModuleError, ArgumentError) as exc:
        raise StoreError(f"unusable database URL {redact(config.url)}: {exc}") from None
    return engine


class Store:
    """A connected results store: sessions plus schema management."""

    def __init__(self, config: StoreConfig) -> None:
        self.config = config
        self.engine = make_engine(config)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @classmethod
    def open(cls, url: str | None = None, *, upgrade: bool = True) -> Store:
        """Connect, and bring the schema to the latest migration unless told not to."""
        store = cls(StoreConfig.from_env(url))
        try:
            store.check_connection()
            if upgrade and store.current_revision() != SCHEMA_HEAD:
                store.upgrade()
        except BaseException:
            store.dispose()
            raise
        return store

    def check_connection(self) -> None:
        try:
            with self.engine.connect():
                pass
        except OperationalError as exc:
            raise StoreError(f"cannot connect to {redact(self.config.url)}: {first_line(exc)}") from None

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session committed on success and rolled back on error."""
        with self._sessions() as session:
            try:
                yield session
                session.commit()
            except SQLAlchemyError:
                session.rollback()
                raise

    def upgrade(self, revision: str = "head") -> None:
        """Apply Alembic migrations (an empty database gets the whole schema) under a lock, so that
        any number of processes may open a new database at once: on Postgres a transaction-scoped
        advisory lock taken on the migrating connection; on SQLite one `BEGIN EXCLUSIVE` transaction
        around the whole upgrade. Whoever waits finds the work done, and Alembic does nothing."""
        from alembic import command

        engine = self.engine if self.engine.dialect.name == "postgresql" else _exclusive_sqlite(self.engine)
        try:
            with engine.begin() as conn:
                if conn.dialect.name == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
                cfg = alembic_config()
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, revision)
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot migrate {redact(self.config.url)}: {first_line(exc)}") from None
        finally:
            if engine is not self.engine:
                engine.dispose()

    def current_revision(self) -> str | None:
        try:
            with self.engine.connect() as conn:
                if not inspect(conn).has_table("alembic_version"):
                    return None
                return conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read the schema version of {redact(self.config.url)}: "
                             f"{first_line(exc)}") from None

    def dispose(self) -> None:
        self.engine.dispose()


def first_line(exc: BaseException) -> str:
    """The first line of a database error (the driver's own message when there is one)."""
    orig = getattr(exc, "orig", None) or exc
    text_ = str(orig).strip()
    return text_.splitlines()[0] if text_ else type(orig).__name__


def _exclusive_sqlite(engine: Engine) -> Engine:
    """A one-off engine on the same SQLite file whose transactions start with `BEGIN EXCLUSIVE`
    (the driver's own implicit transactions would leave DDL in autocommit)."""
    exclusive = create_engine(engine.url, connect_args={"timeout": 60, "isolation_level": None},
                              poolclass=NullPool)
    event.listen(exclusive, "connect", _sqlite_pragmas)

    @event.listens_for(exclusive, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN EXCLUSIVE")

    return exclusive


def alembic_config():  # noqa: ANN201 - alembic.config.Config, imported lazily
    """Alembic config pointing at the packaged migrations."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg
