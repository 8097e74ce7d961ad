"""Alembic environment: runs on the connection handed over by `Store.upgrade`."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from harness.store.schema import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is None:  # plain `alembic` CLI use: sqlalchemy.url from the ini/options
        engine = create_engine(config.get_main_option("sqlalchemy.url"))
        with engine.begin() as conn:
            context.configure(connection=conn, target_metadata=target_metadata,
                              render_as_batch=conn.dialect.name == "sqlite")
            context.run_migrations()
        return
    context.configure(connection=connection, target_metadata=target_metadata,
                      render_as_batch=connection.dialect.name == "sqlite")
    context.run_migrations()


run_migrations_online()
