"""Alembic environment for propready's state database.

propready runs migrations itself (`propready db upgrade`): it passes an open connection in
`config.attributes["connection"]`, so the same code works from a checkout and from a wheel.
"""

from __future__ import annotations

from alembic import context

from propready.adapters.store.schema import metadata

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # pragma: no cover - only when someone runs the alembic CLI by hand
    raise RuntimeError("run migrations through `propready db upgrade`, which supplies a connection")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
