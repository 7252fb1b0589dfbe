"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-30 04:21:37.627093
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "ai_providers",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("type", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("display_name", sa.Text(), nullable=False),
        sa.Column("icon", sa.Text(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("base_url", sa.Text(), nullable=False),
        sa.Column("settings", sa.Text(), nullable=True),
        sa.Column("settings_key_id", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ai_providers")),
    )
    if op.get_bind().dialect.name == "postgresql":
        # SQLite has no regex operator; the API validates names on every backend, the
        # database enforces it too where it can.
        op.create_check_constraint(
            "ck_ai_providers_name", "ai_providers", "name ~ '^[a-z0-9]+(-[a-z0-9]+)*$'"
        )
    with op.batch_alter_table("ai_providers", schema=None) as batch_op:
        batch_op.create_index(
            "ix_ai_providers_enabled_live",
            ["enabled"],
            unique=False,
            sqlite_where=sa.text("deleted = 0"),
            postgresql_where=sa.text("deleted = false"),
        )
        batch_op.create_index(
            "uq_ai_providers_name_live",
            ["name"],
            unique=True,
            sqlite_where=sa.text("deleted = 0"),
            postgresql_where=sa.text("deleted = false"),
        )

    op.create_table(
        "audit_log",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor_id", sa.Uuid(), nullable=True),
        sa.Column("actor_username", sa.Text(), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("resource_type", sa.Text(), nullable=False),
        sa.Column("resource_id", sa.Text(), nullable=False),
        sa.Column("resource_name", sa.Text(), nullable=False),
        sa.Column(
            "diff",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.create_index("ix_audit_log_created_at", ["created_at"], unique=False)

    op.create_table(
        "config_versions",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_config_versions")),
    )
    op.create_table(
        "interceptions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("initiator_id", sa.Uuid(), nullable=False),
        sa.Column("api_key_id", sa.Text(), nullable=True),
        sa.Column("provider", sa.Text(), nullable=False),
        sa.Column("provider_name", sa.Text(), nullable=False),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "metadata",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("client", sa.Text(), nullable=True),
        sa.Column("user_agent", sa.Text(), nullable=True),
        sa.Column("client_session_id", sa.Text(), nullable=True),
        sa.Column("correlating_tool_call_id", sa.Text(), nullable=True),
        sa.Column("credential_kind", sa.Text(), nullable=False),
        sa.Column("credential_hint", sa.Text(), nullable=True),
        sa.Column("error_type", sa.Text(), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_interceptions")),
    )
    with op.batch_alter_table("interceptions", schema=None) as batch_op:
        batch_op.create_index("ix_interceptions_initiator_id", ["initiator_id"], unique=False)
        batch_op.create_index("ix_interceptions_started_at", ["started_at"], unique=False)

    op.create_table(
        "mcp_servers",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("tool_allow_regex", sa.Text(), nullable=False),
        sa.Column("tool_deny_regex", sa.Text(), nullable=False),
        sa.Column("auth_type", sa.Text(), nullable=False),
        sa.Column("auth", sa.Text(), nullable=True),
        sa.Column("auth_key_id", sa.Text(), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mcp_servers")),
        sa.UniqueConstraint("name", name=op.f("uq_mcp_servers_name")),
    )
    op.create_table(
        "model_thoughts",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("interception_id", sa.Uuid(), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column(
            "metadata",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_thoughts")),
    )
    with op.batch_alter_table("model_thoughts", schema=None) as batch_op:
        batch_op.create_index(
            "ix_model_thoughts_interception_id", ["interception_id"], unique=False
        )

    op.create_table(
        "token_usages",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("interception_id", sa.Uuid(), nullable=False),
        sa.Column("provider_response_id", sa.Text(), nullable=False),
        sa.Column("provider_model", sa.Text(), nullable=True),
        sa.Column("input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("output_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cache_read_input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cache_write_input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("reasoning_tokens", sa.BigInteger(), nullable=False),
        sa.Column(
            "extra_token_types",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "metadata",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_token_usages")),
    )
    with op.batch_alter_table("token_usages", schema=None) as batch_op:
        batch_op.create_index("ix_token_usages_interception_id", ["interception_id"], unique=False)

    op.create_table(
        "tool_usages",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("interception_id", sa.Uuid(), nullable=False),
        sa.Column("provider_response_id", sa.Text(), nullable=False),
        sa.Column("provider_tool_call_id", sa.Text(), nullable=True),
        sa.Column("item_id", sa.Text(), nullable=True),
        sa.Column("server_url", sa.Text(), nullable=True),
        sa.Column("tool", sa.Text(), nullable=False),
        sa.Column("input", sa.Text(), nullable=False),
        sa.Column("injected", sa.Boolean(), nullable=False),
        sa.Column("invocation_error", sa.Text(), nullable=True),
        sa.Column(
            "metadata",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tool_usages")),
    )
    with op.batch_alter_table("tool_usages", schema=None) as batch_op:
        batch_op.create_index("ix_tool_usages_interception_id", ["interception_id"], unique=False)

    op.create_table(
        "user_prompts",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("interception_id", sa.Uuid(), nullable=False),
        sa.Column("provider_response_id", sa.Text(), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column(
            "metadata",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_user_prompts")),
    )
    with op.batch_alter_table("user_prompts", schema=None) as batch_op:
        batch_op.create_index("ix_user_prompts_interception_id", ["interception_id"], unique=False)

    op.create_table(
        "users",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("username", sa.Text(), nullable=False),
        sa.Column("email", sa.Text(), nullable=False),
        sa.Column("role", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("role IN ('admin', 'member')", name=op.f("ck_users_role")),
        sa.CheckConstraint("status IN ('active', 'suspended')", name=op.f("ck_users_status")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("username", name=op.f("uq_users_username")),
    )
    op.create_table(
        "ai_provider_keys",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("provider_id", sa.Uuid(), nullable=False),
        sa.Column("api_key", sa.Text(), nullable=False),
        sa.Column("api_key_key_id", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["provider_id"],
            ["ai_providers.id"],
            name=op.f("fk_ai_provider_keys_provider_id_ai_providers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ai_provider_keys")),
    )
    with op.batch_alter_table("ai_provider_keys", schema=None) as batch_op:
        batch_op.create_index("ix_ai_provider_keys_provider_id", ["provider_id"], unique=False)

    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("secret_hash", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_api_keys_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
    )
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.create_index("ix_api_keys_user_id", ["user_id"], unique=False)

    op.create_table(
        "mcp_user_credentials",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("server_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("credential", sa.Text(), nullable=False),
        sa.Column("credential_key_id", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["server_id"],
            ["mcp_servers.id"],
            name=op.f("fk_mcp_user_credentials_server_id_mcp_servers"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_mcp_user_credentials_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mcp_user_credentials")),
        sa.UniqueConstraint(
            "server_id", "user_id", name=op.f("uq_mcp_user_credentials_server_id_user_id")
        ),
    )


def downgrade() -> None:

    op.drop_table("mcp_user_credentials")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_index("ix_api_keys_user_id")

    op.drop_table("api_keys")
    with op.batch_alter_table("ai_provider_keys", schema=None) as batch_op:
        batch_op.drop_index("ix_ai_provider_keys_provider_id")

    op.drop_table("ai_provider_keys")
    op.drop_table("users")
    with op.batch_alter_table("user_prompts", schema=None) as batch_op:
        batch_op.drop_index("ix_user_prompts_interception_id")

    op.drop_table("user_prompts")
    with op.batch_alter_table("tool_usages", schema=None) as batch_op:
        batch_op.drop_index("ix_tool_usages_interception_id")

    op.drop_table("tool_usages")
    with op.batch_alter_table("token_usages", schema=None) as batch_op:
        batch_op.drop_index("ix_token_usages_interception_id")

    op.drop_table("token_usages")
    with op.batch_alter_table("model_thoughts", schema=None) as batch_op:
        batch_op.drop_index("ix_model_thoughts_interception_id")

    op.drop_table("model_thoughts")
    op.drop_table("mcp_servers")
    with op.batch_alter_table("interceptions", schema=None) as batch_op:
        batch_op.drop_index("ix_interceptions_started_at")
        batch_op.drop_index("ix_interceptions_initiator_id")

    op.drop_table("interceptions")
    op.drop_table("config_versions")
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_log_created_at")

    op.drop_table("audit_log")
    with op.batch_alter_table("ai_providers", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_ai_providers_name_live",
            sqlite_where=sa.text("deleted = 0"),
            postgresql_where=sa.text("deleted = false"),
        )
        batch_op.drop_index(
            "ix_ai_providers_enabled_live",
            sqlite_where=sa.text("deleted = 0"),
            postgresql_where=sa.text("deleted = false"),
        )

    op.drop_table("ai_providers")
