"""Alembic environment: always runs on a connection handed in by ``store.db``."""

from __future__ import annotations

from alembic import context

from aibridge.store.models import Base

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only reachable from a bare `alembic` call
    raise RuntimeError("run migrations with `aibridge migrate`, not the alembic CLI")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
