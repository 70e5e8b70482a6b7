"""Alembic environment: runs on the connection api.db.migrate() hands it, or on DATABASE_URL."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, text

from api.db import make_engine
from api.models import Base
from api.settings import get_settings

target_metadata = Base.metadata


def run(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        # Several API instances may start at once: one migrates, the others wait here.
        connection.execute(text("SELECT pg_advisory_xact_lock(7401402)"))
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    run(connection)
else:
    with make_engine(get_settings().database_url).begin() as own_connection:
        run(own_connection)
