"""Alembic environment: migrations run on the connection the service hands over (ci.service.db)."""

from __future__ import annotations

from alembic import context

from ci.service.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through ci.service.db.Database.migrate(), which provides the connection")
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
