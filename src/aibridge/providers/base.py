"""Provider runtimes built from database rows: upstream URLs, auth, key ring, breakers.

A :class:`Provider` is immutable once built; a reload builds new ones. Two protocol
families exist: ``anthropic`` (Messages API) and ``openai`` (Chat Completions and
Responses; also ``azure``, ``openai-compat`` and ``openrouter``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from yarl import URL

from aibridge.clock import Clock, SystemClock
from aibridge.providers.bedrock import BedrockRuntime
from aibridge.providers.breaker_metrics import CircuitBreakerMetrics
from aibridge.providers.circuitbreaker import CircuitBreakerRegistry, failure_statuses_for
from aibridge.providers.copilot import is_copilot
from aibridge.providers.keyring import KeyRing, KeyRingMetrics
from aibridge.providers.paths import UnsafePath, has_dot_segment
from aibridge.providers.settings import ProviderSettings, parse_settings
from aibridge.providers.validation import base_url_error
from aibridge.store.providers import ProviderRecord

Family = Literal["anthropic", "openai"]
"""Protocol family of a provider: its wire format and error shape."""
APIName = Literal["messages", "chat", "responses"]
"""The bridged APIs (Anthropic Messages, OpenAI Chat Completions, OpenAI Responses)."""


class ProviderBuildError(ValueError):
    """A provider row cannot be turned into a working runtime (bad URL, bad settings)."""


def family_of(ptype: str) -> Family:
    """Protocol family of a provider type."""
    return "anthropic" if ptype in ("anthropic", "bedrock") else "openai"


class Provider:
    """A live, enabled provider: routing, upstream URL building, credentials, breakers."""

    enabled = True

    def __init__(
        self,
        record: ProviderRecord,
        *,
        clock: Clock | None = None,
        keyring_metrics: KeyRingMetrics | None = None,
        breaker_metrics: CircuitBreakerMetrics | None = None,
    ) -> None:
        self.record = record
        self.id = record.id
        self.name = record.name
        self.type = record.type
        self.family: Family = family_of(record.type)
        self.always_byok = is_copilot(record.type)
        """Every request must carry the user's own credential (Copilot): there is no key
        pool, and ``settings.allow_byok`` is not needed."""
        self.options = _settings(record)
        # The admin API's rule, for rows written before it (or by hand).
        problem = base_url_error(record.base_url)
        if problem is not None:
            raise ProviderBuildError(problem)
        try:
            base = URL(record.base_url)
        except (TypeError, ValueError) as exc:
            raise ProviderBuildError(f"invalid base_url: {exc}") from exc
        self.base_url = base
        self._base_path = base.raw_path.rstrip("/")
        self._clock = clock or SystemClock()
        self.bedrock: BedrockRuntime | None = None
        self.record_metadata: Mapping[str, Any] = {}
        """Attributes recorded on every interception (the start record's metadata)."""
        keys = [(str(k.id), k.secret) for k in record.keys]
        if record.type == "bedrock":
            if self.options.bedrock is None:
                raise ProviderBuildError("type=bedrock requires bedrock settings")
            self.bedrock = BedrockRuntime(self.options.bedrock, base)
            self.record_metadata = {
                "aws_bedrock": True,
                "bedrock_protocol": self.options.bedrock.protocol,
            }
            # The AWS credentials are the provider's one "key": a throttled Bedrock call
            # cools it like a 429 cools an API key (settings.key_cooldown_seconds).
            keys = [("aws", "aws-credentials")]
        try:
            self.keys = KeyRing(
                keys,
                provider=self.name,
                cooldown=self.options.key_cooldown_seconds,
                clock=self._clock,
                metrics=keyring_metrics,
            )
        except ValueError as exc:
            raise ProviderBuildError(str(exc)) from exc
        self.breakers = CircuitBreakerRegistry(
            self.options.circuit_breaker,
            clock=self._clock,
            provider=self.name,
            failure_statuses=failure_statuses_for(record.type),
            metrics=breaker_metrics,
        )

    def upstream_url(self, suffix: str, query: str = "") -> URL:
        """Base URL joined with ``suffix`` (a route's ``upstream_suffix``, see
        :mod:`aibridge.providers.routes`; the base path is kept), query preserved.

        Both are used as they are (``encoded=True``): the suffix was checked by
        the router and must not be normalised (yarl would resolve ``..`` upwards past
        the base path), and ``query`` is the client's *raw* query string, since decoding
        and re-encoding would change ``%26``, ``%2B`` and the like.
        """
        if has_dot_segment(suffix):
            raise UnsafePath("invalid request path: dot segments are not allowed")
        url = self.base_url.with_path(self._base_path + suffix, encoded=True)
        if self.options.api_version and "api-version=" not in query:
            query = (
                f"{query}&api-version={self.options.api_version}"
                if query
                else (f"api-version={self.options.api_version}")
            )
        return URL(f"{url}?{query}", encoded=True) if query else url

    # -- credentials -----------------------------------------------------------

    @property
    def auth_header(self) -> str:
        """Name of the header carrying the upstream credential."""
        if self.family == "anthropic":
            return "x-api-key"
        return "api-key" if self.type == "azure" else "Authorization"

    def auth_value(self, secret: str) -> str:
        """Header value for ``secret``."""
        return secret if self.auth_header != "Authorization" else f"Bearer {secret}"


def _settings(record: ProviderRecord) -> ProviderSettings:
    """The row's settings, by the admin API's rules (rows written before them, or by
    hand, may break them): :class:`ProviderBuildError` lists every problem."""
    parsed = parse_settings(record.settings, record.type)
    if isinstance(parsed, list):
        problems = "; ".join(f"{e.field}: {e.detail}" for e in parsed)
        raise ProviderBuildError(f"invalid settings: {problems}")
    return parsed


class DisabledProvider:
    """A configured but disabled provider: every request under it gets 503."""

    enabled = False

    def __init__(self, record: ProviderRecord) -> None:
        self.record = record
        self.id = record.id
        self.name = record.name
        self.type = record.type
        self.family: Family = family_of(record.type)


def build_provider(
    record: ProviderRecord,
    *,
    clock: Clock | None = None,
    keyring_metrics: KeyRingMetrics | None = None,
    breaker_metrics: CircuitBreakerMetrics | None = None,
) -> Provider | DisabledProvider:
    """Runtime for one row; disabled rows become 503 stubs."""
    if not record.enabled:
        return DisabledProvider(record)
    return Provider(
        record, clock=clock, keyring_metrics=keyring_metrics, breaker_metrics=breaker_metrics
    )
