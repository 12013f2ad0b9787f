"""Alembic environment and the reviewed schema migrations (see storage.migrate for the Python entry points)."""
