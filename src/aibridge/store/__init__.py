"""Persistence: SQLAlchemy models, repositories, migrations and pub/sub backends.

Nothing here knows about HTTP.
"""
