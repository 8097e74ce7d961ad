"""The newest schema migration, importable without SQLAlchemy or Alembic.

`Store.open` and the fast writer skip Alembic when a database is already at this revision;
tests/test_store.py checks it against Alembic's own head.
"""

SCHEMA_HEAD = "0007"
