"""Persistence: SQLAlchemy models and sessions, and the object store."""
