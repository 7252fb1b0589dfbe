"""SQLAlchemy 2 ORM models: the whole data model of DESIGN.md.

The migrations in ``store/migrations`` create exactly these tables; a test compares
the two so they cannot drift.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from aibridge.store.types import JSONType, UTCDateTime, utcnow

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

PROVIDER_TYPES = (
    "openai",
    "anthropic",
    "azure",
    "openai-compat",
    "openrouter",
    "copilot",
    "google",
    "vercel",
    "bedrock",
)
"""Accepted ``ai_providers.type`` values. ``anthropic`` and ``bedrock`` speak Anthropic
Messages; the others the OpenAI protocol."""

PROVIDER_NAME_PATTERN = r"^[a-z0-9]+(-[a-z0-9]+)*$"
# First path segments owned by the gateway itself; provider names may not use them.
# "status": GET /api/v1/providers/status (live status) would shadow the GET of a provider
# of that name.
RESERVED_PROVIDER_NAMES = frozenset(
    {"api", "metrics", "healthz", "readyz", "ui", "static", "admin", "docs", "openapi", "status"}
)
USER_ROLES = ("admin", "member")
USER_STATUSES = ("active", "suspended")


class Base(DeclarativeBase):
    """Declarative base with a deterministic constraint naming convention."""

    metadata = MetaData(naming_convention=NAMING)


def _created() -> Mapped[datetime]:
    return mapped_column(UTCDateTime(), nullable=False, default=utcnow)


class User(Base):
    """A person (or service) that owns gateway keys and to whom requests are attributed."""

    __tablename__ = "users"
    __table_args__ = (
        CheckConstraint("role IN ('admin', 'member')", name="role"),
        CheckConstraint("status IN ('active', 'suspended')", name="status"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid(), primary_key=True, default=uuid.uuid4)
    username: Mapped[str] = mapped_column(Text, nullable=False, unique=True)
    email: Mapped[str] = mapped_column(Text, nullable=False, default="")
    role: Mapped[str] = mapped_column(Text, nullable=False, default="member")
    status: Mapped[str] = mapped_column(Text, nullable=False, default="active")
    # aibridge.limits.Limits.to_json(); NULL = no limits of its own.
    limits: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _created()


class ApiKey(Base):
    """A gateway-issued key. Only ``secret_hash`` is stored; the token is shown once."""

    __tablename__ = "api_keys"
    __table_args__ = (Index("ix_api_keys_user_id", "user_id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(
        Uuid(), ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    )
    name: Mapped[str] = mapped_column(Text, nullable=False, default="")
    secret_hash: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = _created()
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # aibridge.limits.Limits.to_json(); NULL = no limits of its own.
    limits: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)


class AIProvider(Base):
    """An upstream LLM provider instance; ``name`` is the first path segment of its routes."""

    __tablename__ = "ai_providers"
    __table_args__ = (
        Index(
            "uq_ai_providers_name_live",
            "name",
            unique=True,
            sqlite_where=text("deleted = 0"),
            postgresql_where=text("deleted = false"),
        ),
        Index(
            "ix_ai_providers_enabled_live",
            "enabled",
            sqlite_where=text("deleted = 0"),
            postgresql_where=text("deleted = false"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid(), primary_key=True, default=uuid.uuid4)
    type: Mapped[str] = mapped_column(Text, nullable=False)
    name: Mapped[str] = mapped_column(Text, nullable=False)
    display_name: Mapped[str] = mapped_column(Text, nullable=False, default="")
    icon: Mapped[str] = mapped_column(Text, nullable=False, default="")
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    deleted: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    base_url: Mapped[str] = mapped_column(Text, nullable=False)
    # JSON text (encrypted when settings_key_id is set); NULL when empty.
    settings: Mapped[str | None] = mapped_column(Text, nullable=True)
    settings_key_id: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _created()


class AIProviderKey(Base):
    """One upstream credential of a provider; the oldest is the primary."""

    __tablename__ = "ai_provider_keys"
    __table_args__ = (Index("ix_ai_provider_keys_provider_id", "provider_id"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid(), primary_key=True, default=uuid.uuid4)
    provider_id: Mapped[uuid.UUID] = mapped_column(
        Uuid(), ForeignKey("ai_providers.id", ondelete="CASCADE"), nullable=False
    )
    # Ciphertext when api_key_key_id is set, plaintext otherwise.
    api_key: Mapped[str] = mapped_column(Text, nullable=False)
    api_key_key_id: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _created()


class ConfigVersion(Base):
    """Monotonic counters bumped in the same transaction as a config write.

    Replicas poll this one row cheaply to heal a lost change notification.
    """

    __tablename__ = "config_versions"

    name: Mapped[str] = mapped_column(Text, primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    updated_at: Mapped[datetime] = _created()


class MCPServer(Base):
    """A centrally managed MCP server whose tools are injected into requests."""

    __tablename__ = "mcp_servers"

    id: Mapped[uuid.UUID] = mapped_column(Uuid(), primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(Text, nullable=False, unique=True)
    url: Mapped[str] = mapped_column(Text, nullable=False)
    tool_allow_regex: Mapped[str] = mapped_column(Text, nullable=False, default="")
    tool_deny_regex: Mapped[str] = mapped_column(Text, nullable=False, default="")
    # "none", "header" (a shared static header: sealed JSON {"name", "value"} in auth) or
    # "per_user" (each user's token in mcp_user_credentials, sent as a bearer token).
    auth_type: Mapped[str] = mapped_column(Text, nullable=False, default="none")
    auth: Mapped[str | None] = mapped_column(Text, nullable=True)
    auth_key_id: Mapped[str | None] = mapped_column(Text, nullable=True)
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _created()


class MCPUserCredential(Base):
    """A user's own credential for one MCP server (encrypted at rest when configured)."""

    __tablename__ = "mcp_user_credentials"
    __table_args__ = (UniqueConstraint("server_id", "user_id"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid(), primary_key=True, default=uuid.uuid4)
    server_id: Mapped[uuid.UUID] = mapped_column(
        Uuid(), ForeignKey("mcp_servers.id", ondelete="CASCADE"), nullable=False
    )
    user_id: Mapped[uuid.UUID] = mapped_column(
        Uuid(), ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    )
    credential: Mapped[str] = mapped_column(Text, nullable=False)
    credential_key_id: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _created()


class Interception(Base):
    """One client request handled by the gateway (possibly several upstream calls)."""

    __tablename__ = "interceptions"
    __table_args__ = (
        # A session's turns, and the sessions listing's "later turn" probe.
        Index(
            "ix_interceptions_initiator_id_client_session_id_started_at",
            "initiator_id",
            "client_session_id",
            "started_at",
        ),
        # The listings' keyset order (newest first, ties broken by id).
        Index("ix_interceptions_started_at_id", "started_at", "id"),
        # The same order for one user: a member's listings, the user filter.
        Index("ix_interceptions_initiator_id_started_at_id", "initiator_id", "started_at", "id"),
        Index("ix_interceptions_client_session_id", "client_session_id"),
        # The sessions listing's has_errors probe.
        Index(
            "ix_interceptions_failed_sessions",
            "initiator_id",
            "client_session_id",
            sqlite_where=text("error_type IS NOT NULL"),
            postgresql_where=text("error_type IS NOT NULL"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid(), primary_key=True)
    # No foreign keys on recording tables: inserts stay cheap and order-independent.
    initiator_id: Mapped[uuid.UUID] = mapped_column(Uuid(), nullable=False)
    api_key_id: Mapped[str | None] = mapped_column(Text, nullable=True)
    provider: Mapped[str] = mapped_column(Text, nullable=False)
    provider_name: Mapped[str] = mapped_column(Text, nullable=False)
    model: Mapped[str] = mapped_column(Text, nullable=False, default="")
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSONType, nullable=False, default=dict)
    client: Mapped[str | None] = mapped_column(Text, nullable=True)
    user_agent: Mapped[str | None] = mapped_column(Text, nullable=True)
    client_session_id: Mapped[str | None] = mapped_column(Text, nullable=True)
    correlating_tool_call_id: Mapped[str | None] = mapped_column(Text, nullable=True)
    credential_kind: Mapped[str] = mapped_column(Text, nullable=False, default="centralized")
    credential_hint: Mapped[str | None] = mapped_column(Text, nullable=True)
    error_type: Mapped[str | None] = mapped_column(Text, nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The gateway process that served it (``<replica id>:<slot>``, recording/journal.py):
    # at start-up a replica ends the interceptions its previous run left open, and only
    # those.
    replica_id: Mapped[str | None] = mapped_column(Text, nullable=True)


class TokenUsage(Base):
    """Token counts of one upstream call, split the way providers bill them."""

    __tablename__ = "token_usages"
    __table_args__ = (Index("ix_token_usages_interception_id", "interception_id"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid(), primary_key=True)
    interception_id: Mapped[uuid.UUID] = mapped_column(Uuid(), nullable=False)
    provider_response_id: Mapped[str] = mapped_column(Text, nullable=False, default="")
    provider_model: Mapped[str | None] = mapped_column(Text, nullable=True)
    input_tokens: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    output_tokens: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    cache_read_input_tokens: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    cache_write_input_tokens: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    reasoning_tokens: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    extra_token_types: Mapped[dict[str, int]] = mapped_column(
        JSONType, nullable=False, default=dict
    )
    # What the call cost in pico-USD (10^-12 USD, exact integer arithmetic: prices are
    # micro-USD per million tokens); NULL when the model had no price ("unpriced").
    cost_pusd: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSONType, nullable=False, default=dict)
    created_at: Mapped[datetime] = _created()


class UserPrompt(Base):
    """The user prompt of an interception (at most one)."""

    __tablename__ = "user_prompts"
    __table_args__ = (Index("ix_user_prompts_interception_id", "interception_id"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid(), primary_key=True)
    interception_id: Mapped[uuid.UUID] = mapped_column(Uuid(), nullable=False)
    provider_response_id: Mapped[str] = mapped_column(Text, nullable=False, default="")
    prompt: Mapped[str] = mapped_column(Text, nullable=False)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSONType, nullable=False, default=dict)
    created_at: Mapped[datetime] = _created()


class ToolUsage(Base):
    """A tool call made by the model: client-defined, or injected (server_url set)."""

    __tablename__ = "tool_usages"
    __table_args__ = (Index("ix_tool_usages_interception_id", "interception_id"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid(), primary_key=True)
    interception_id: Mapped[uuid.UUID] = mapped_column(Uuid(), nullable=False)
    provider_response_id: Mapped[str] = mapped_column(Text, nullable=False, default="")
    provider_tool_call_id: Mapped[str | None] = mapped_column(Text, nullable=True)
    item_id: Mapped[str | None] = mapped_column(Text, nullable=True)
    server_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    tool: Mapped[str] = mapped_column(Text, nullable=False)
    input: Mapped[str] = mapped_column(Text, nullable=False, default="")
    injected: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    invocation_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSONType, nullable=False, default=dict)
    created_at: Mapped[datetime] = _created()


class ModelThought(Base):
    """Model thinking / reasoning summary text."""

    __tablename__ = "model_thoughts"
    __table_args__ = (Index("ix_model_thoughts_interception_id", "interception_id"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid(), primary_key=True)
    interception_id: Mapped[uuid.UUID] = mapped_column(Uuid(), nullable=False)
    content: Mapped[str] = mapped_column(Text, nullable=False)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSONType, nullable=False, default=dict)
    created_at: Mapped[datetime] = _created()


class ModelPrice(Base):
    """What one model of one provider type costs, in micro-USD per million tokens
    (= pico-USD per token), so every cost is an exact integer."""

    __tablename__ = "model_prices"
    __table_args__ = (UniqueConstraint("provider_type", "model"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid(), primary_key=True, default=uuid.uuid4)
    provider_type: Mapped[str] = mapped_column(Text, nullable=False)
    model: Mapped[str] = mapped_column(Text, nullable=False)
    input_micros: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    output_micros: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    cache_read_micros: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    cache_write_micros: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    # ISO date (YYYY-MM-DD) from which the price is known to apply.
    effective_date: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = _created()
    updated_at: Mapped[datetime] = _created()


class AuditLog(Base):
    """One admin write: who did what to which resource, with a masked diff."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_created_at", "created_at"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid(), primary_key=True, default=uuid.uuid4)
    created_at: Mapped[datetime] = _created()
    actor_id: Mapped[uuid.UUID | None] = mapped_column(Uuid(), nullable=True)
    actor_username: Mapped[str] = mapped_column(Text, nullable=False, default="")
    action: Mapped[str] = mapped_column(Text, nullable=False)
    resource_type: Mapped[str] = mapped_column(Text, nullable=False)
    resource_id: Mapped[str] = mapped_column(Text, nullable=False, default="")
    resource_name: Mapped[str] = mapped_column(Text, nullable=False, default="")
    diff: Mapped[dict[str, Any]] = mapped_column(JSONType, nullable=False, default=dict)
    status_code: Mapped[int] = mapped_column(Integer, nullable=False, default=200)


class Replica(Base):
    """One gateway process (replica slot) and the provider configuration it has applied.

    Each replica upserts its own row at start, after every reload and on every reconcile
    tick (never per request); the providers status API lists the rows.
    """

    __tablename__ = "replicas"
    __table_args__ = (Index("ix_replicas_last_seen", "last_seen"),)

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    pid: Mapped[int] = mapped_column(Integer, nullable=False)
    host: Mapped[str] = mapped_column(Text, nullable=False)
    config_version: Mapped[int] = mapped_column(BigInteger, nullable=False)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
