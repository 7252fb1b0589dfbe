"""interceptions of one user in listing order

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-08 09:00:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A member's sessions and interceptions (and an admin's user filter) newest first:
    # without it the listing walks everyone's interceptions by (started_at, id) and
    # skips the others' (about 40,000 rows read for a first page of one user among 50
    # at 100,000 interceptions, instead of the ~900 that page needs).
    op.create_index(
        "ix_interceptions_initiator_id_started_at_id",
        "interceptions",
        ["initiator_id", "started_at", "id"],
    )


def downgrade() -> None:
    op.drop_index("ix_interceptions_initiator_id_started_at_id", table_name="interceptions")
