"""Alembic's environment for the store: online only, on the connection ``ResponseStore.open`` passes in.

``open()`` runs the upgrade inside its own transaction (under PostgreSQL's advisory lock, or SQLite's write
lock), so this module neither creates an engine nor reads an ``alembic.ini``.
"""

from __future__ import annotations

from alembic import context

from openai_routes.store.tables import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, compare_type=True)
with context.begin_transaction():
    context.run_migrations()
