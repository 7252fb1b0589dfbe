"""sessions API indexes

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # (initiator_id, client_session_id, started_at) serves a session's turns and the
    # sessions listing's "is there a later turn" probe, and replaces the initiator_id
    # index (its prefix); (started_at, id) is the listings' keyset order and replaces the
    # started_at index. (client_session_id) serves the interceptions' session filter.
    op.create_index(
        "ix_interceptions_initiator_id_client_session_id_started_at",
        "interceptions",
        ["initiator_id", "client_session_id", "started_at"],
    )
    op.create_index("ix_interceptions_started_at_id", "interceptions", ["started_at", "id"])
    op.create_index("ix_interceptions_client_session_id", "interceptions", ["client_session_id"])
    op.drop_index("ix_interceptions_initiator_id", table_name="interceptions")
    op.drop_index("ix_interceptions_started_at", table_name="interceptions")
    # The sessions listing's has_errors probe: only failed interceptions are indexed.
    op.create_index(
        "ix_interceptions_failed_sessions",
        "interceptions",
        ["initiator_id", "client_session_id"],
        sqlite_where=sa.text("error_type IS NOT NULL"),
        postgresql_where=sa.text("error_type IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_interceptions_failed_sessions", table_name="interceptions")
    op.create_index("ix_interceptions_started_at", "interceptions", ["started_at"])
    op.create_index("ix_interceptions_initiator_id", "interceptions", ["initiator_id"])
    op.drop_index("ix_interceptions_client_session_id", table_name="interceptions")
    op.drop_index("ix_interceptions_started_at_id", table_name="interceptions")
    op.drop_index(
        "ix_interceptions_initiator_id_client_session_id_started_at",
        table_name="interceptions",
    )
