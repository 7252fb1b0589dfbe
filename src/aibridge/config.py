"""Settings: command-line flags override ``AIBRIDGE_*`` environment variables,
which override the defaults below."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal
from urllib.parse import unquote

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from aibridge.governance.periods import time_zone
from aibridge.limits import Budget, Limits, parse_budget_text, parse_limits
from aibridge.loglevels import parse_log_levels
from aibridge.metric_labels import DEFAULT_MAX_MODELS
from aibridge.store.urls import normalize_database_url

DEFAULT_LISTEN = "127.0.0.1:8080"


def default_data_dir() -> Path:
    """Directory for the embedded SQLite database and spill files."""
    return Path(os.environ.get("AIBRIDGE_DATA_DIR", "./aibridge-data"))


class Settings(BaseSettings):
    """Gateway settings. Every field is also ``AIBRIDGE_<FIELD>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="AIBRIDGE_", extra="ignore")

    listen: str = DEFAULT_LISTEN
    data_dir: Path = Field(default_factory=default_data_dir)
    database_url: str = ""
    encryption_key: str = ""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"
    # Per-logger levels over log_level: "aibridge.pool=debug,aiosqlite=info".
    log_levels: str = ""
    # Seconds between cheap config-version checks that heal a lost notification.
    reconcile_interval: float = 30.0
    max_body_bytes: int = 32 * 1024 * 1024
    # Bridge pool: one bridge per (user, gateway key), rebuilt after a provider change.
    pool_max_items: int = 5000
    pool_ttl: float = 15 * 60.0
    # How long requests admitted on a retired bridge (provider change, expiry) may run
    # before they are cancelled. Long agent streams must survive a reload, so the
    # default matches the longest blocking upstream call rather than a few seconds.
    bridge_retirement_timeout: float = 600.0
    # Worker processes sharing the listen port (SO_REUSEPORT).
    workers: int = Field(default=1, ge=1, le=64)
    # Seconds a resolved gateway key stays cached (revocation also invalidates it).
    auth_cache_ttl: float = 60.0
    # Who may read /metrics and /readyz's details: anyone ("none", as Prometheus and
    # probes expect) or admin keys only ("admin"; /readyz then shows others its status).
    metrics_auth: Literal["none", "admin"] = "none"
    # Upstream answers are read with a cap (a 502 above it): whole blocking responses,
    # and error bodies, which are only relayed or summarised for the record.
    max_upstream_body_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    max_upstream_error_bytes: int = Field(default=1024 * 1024, ge=1024)
    # API dumps (debugging): the default directory for providers without
    # settings.api_dump_dir (None: off), and the caps that keep a forgotten one small.
    api_dump_dir: Path | None = None
    api_dump_max_file_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    api_dump_max_dir_bytes: int = Field(default=512 * 1024 * 1024, ge=64 * 1024)
    # Distinct model names that get their own metric series; later ones count as "other".
    metrics_max_models: int = Field(default=DEFAULT_MAX_MODELS, ge=1)
    # Slow clients: seconds to send the request line and headers, seconds a request body
    # may stall, and seconds an idle kept-alive connection stays open.
    header_read_timeout: float = Field(default=10.0, gt=0)
    body_read_timeout: float = Field(default=30.0, gt=0)
    keepalive_timeout: float = Field(default=75.0, gt=0)
    # MCP tools: upstream turns one request may run with injected tools (the last turn's
    # answer goes to the client past it), seconds to connect to a server and list its
    # tools at bridge build, seconds one tool call may take, seconds a tool list is used
    # before it is fetched again (a server's list-changed notice refreshes it at once).
    mcp_max_iterations: int = Field(default=10, ge=1, le=100)
    mcp_init_timeout: float = Field(default=10.0, gt=0)
    mcp_call_timeout: float = Field(default=120.0, gt=0)
    mcp_tools_ttl: float = Field(default=300.0, gt=0)
    # OpenAI Responses over WebSocket: open sockets one user may hold in this process
    # (beyond it the handshake is a 429), and seconds a shutdown lets responses in flight
    # finish before every socket is closed with 1001 ("going away").
    responses_websocket_per_user: int = Field(default=8, ge=1)
    responses_websocket_drain_timeout: float = Field(default=30.0, ge=0)
    # aiohttp's own 400s for malformed requests: at most one log line per this many seconds.
    bad_request_log_interval: float = Field(default=60.0, ge=0)

    # Record retention: interceptions (with their prompts, tool calls and usage) older than
    # this many days are deleted by a background job every interval; 0 keeps them forever.
    retention_days: int = Field(default=60, ge=0)
    retention_interval_seconds: float = Field(default=3600.0, gt=0)

    # Governance (limits, budgets; see the README's "Limits, cost and budgets").
    # Redis shared by every replica for counters, reservations and key cooldowns (empty:
    # an in-process store, right for one replica); every key lives under the prefix.
    redis_url: str = ""
    redis_prefix: str = "aibridge:"
    # In-flight bridged requests (and open WebSockets) this replica serves at once; 0 = no
    # limit. Beyond it: 429, so one replica protects itself whatever the per-user limits.
    max_concurrency: int = Field(default=0, ge=0)
    # Defaults for every user's unset limits (0 / empty = none): requests and tokens per
    # minute, concurrent requests, comma-separated allowed model patterns, a budget as
    # AMOUNT/PERIOD ("50/month"); and one budget for the whole gateway.
    default_requests_per_minute: int = Field(default=0, ge=0)
    default_tokens_per_minute: int = Field(default=0, ge=0)
    default_max_concurrent: int = Field(default=0, ge=0)
    default_allowed_models: str = ""
    default_budget: str = ""
    global_budget: str = ""
    # Budget periods are calendar periods of this IANA time zone; past this fraction of a
    # budget a warning is logged once per period and the API and metrics show it.
    budget_timezone: str = "UTC"
    budget_soft_fraction: float = Field(default=0.8, gt=0, le=1)
    # Seconds between rebuilding each period's spend from the recorded costs.
    budget_reconcile_interval: float = Field(default=60.0, gt=0)
    # Output tokens reserved for a request that sets no max_tokens / max_output_tokens
    # (and the cap on what one that does may reserve).
    limit_default_max_tokens: int = Field(default=4096, ge=1)
    # Seconds a reservation or concurrency slot outlives its replica: held ones are
    # refreshed well before, so a killed replica's leak ends after at most this long.
    limit_lease_seconds: float = Field(default=30.0, ge=1)

    # HTTPS proxy mode (``serve --proxy-listen`` / ``aibridge proxy``): its listen address
    # (empty: off), the CA's PEM files (empty: proxy-ca.pem/proxy-ca-key.pem in the data
    # dir, created on first start), the ports CONNECT may reach, the private CIDRs tunnels
    # may reach anyway (comma-separated), and the gateway the decrypted requests go to
    # (empty with ``serve``: the gateway's own listener).
    proxy_listen: str = ""
    proxy_ca_cert: str = ""
    proxy_ca_key: str = ""
    proxy_allowed_ports: str = "80,443"
    proxy_allowed_private_cidrs: str = ""
    proxy_gateway_url: str = ""
    # An HTTP proxy the tunnels (not the decrypted requests) go through.
    proxy_upstream_proxy: str = ""
    # TLS on the proxy's own listener (both or neither).
    proxy_tls_cert: str = ""
    proxy_tls_key: str = ""

    @field_validator("default_budget", "global_budget")
    @classmethod
    def _check_budget(cls, value: str) -> str:
        if value.strip():
            parse_budget_text(value)
        return value.strip()

    @field_validator("default_allowed_models")
    @classmethod
    def _check_models(cls, value: str) -> str:
        parse_limits({"allowed_models": _patterns(value)})
        return value

    @field_validator("budget_timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        time_zone(value)
        return value

    @property
    def default_limits(self) -> Limits:
        """Every user's unset limits default to these."""
        return Limits(
            requests_per_minute=self.default_requests_per_minute or None,
            tokens_per_minute=self.default_tokens_per_minute or None,
            max_concurrent=self.default_max_concurrent or None,
            allowed_models=tuple(_patterns(self.default_allowed_models)) or None,
            budget=parse_budget_text(self.default_budget) if self.default_budget else None,
        )

    @property
    def global_budget_limit(self) -> Budget | None:
        """The budget of the whole gateway, if one is set."""
        return parse_budget_text(self.global_budget) if self.global_budget else None

    @field_validator("proxy_listen")
    @classmethod
    def _check_proxy_listen(cls, value: str) -> str:
        if value:
            parse_listen(value)
        return value

    @field_validator("proxy_allowed_ports")
    @classmethod
    def _check_ports(cls, value: str) -> str:
        parse_ports(value)
        return value

    @field_validator("log_levels")
    @classmethod
    def _check_log_levels(cls, value: str) -> str:
        parse_log_levels(value)
        return value

    def logger_levels(self) -> dict[str, str]:
        """``log_levels`` as {logger name: level}."""
        return parse_log_levels(self.log_levels)

    def log_secrets(self) -> tuple[str, ...]:
        """Secrets of the settings themselves that no log line may show: the encryption
        key and the database password."""
        found = [self.encryption_key] if self.encryption_key else []
        _scheme, sep, rest = self.resolved_database_url().partition("://")
        creds = rest.rpartition("@")[0] if sep else ""
        password = unquote(creds.partition(":")[2])
        if password:
            found += [password, creds.partition(":")[2]]
        return tuple(found)

    @field_validator("log_level", "metrics_auth", mode="before")
    @classmethod
    def _lower_level(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        parse_listen(value)
        return value

    def for_workers(self) -> Settings:
        """Settings for one of several worker processes.

        Workers on SQLite share no notification channel, so they converge through the
        config-version poll and a short key cache: both are cheap local reads.
        """
        if self.workers > 1 and not self.resolved_database_url().startswith("postgresql"):
            return self.model_copy(
                update={
                    "reconcile_interval": min(self.reconcile_interval, 1.0),
                    "auth_cache_ttl": min(self.auth_cache_ttl, 2.0),
                }
            )
        return self

    def resolved_database_url(self) -> str:
        """The database URL, defaulting to a SQLite file inside ``data_dir``."""
        if self.database_url:
            return normalize_database_url(self.database_url)
        return f"sqlite+aiosqlite:///{(self.data_dir / 'aibridge.db').resolve()}"

    def listen_address(self) -> tuple[str, int]:
        """``listen`` split into host and port."""
        return parse_listen(self.listen)


def parse_listen(value: str) -> tuple[str, int]:
    """Parse ``host:port`` (``[::1]:8080`` for IPv6); raise ``ValueError`` with the fix."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"listen address {value!r} must look like HOST:PORT, e.g. 127.0.0.1:8080")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


def parse_ports(value: str) -> frozenset[int]:
    """``"80,443"`` → {80, 443}; ValueError naming the bad entry."""
    ports: set[int] = set()
    for part in value.split(","):
        part = part.strip()
        if not part:
            continue
        if not part.isdigit() or not 0 < int(part) < 65536:
            raise ValueError(f"proxy allowed port {part!r} must be a number from 1 to 65535")
        ports.add(int(part))
    if not ports:
        raise ValueError("proxy allowed ports must name at least one port, e.g. 443")
    return frozenset(ports)


def _patterns(value: str) -> list[str]:
    return [p.strip() for p in value.split(",") if p.strip()]
