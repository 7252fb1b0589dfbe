"""Provider ``settings``: one parser (aibridge.providers.settings) for the admin API, the CLI
and the runtime, so a row is accepted by all of them or refused by all of them. The admin
API's messages are pinned in tests/admin/test_providers.py; these tests check the parsed
value and that the runtime applies the very same rules."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from aibridge.providers.base import Provider, ProviderBuildError, build_provider
from aibridge.providers.circuitbreaker import CircuitBreakerConfig
from aibridge.providers.settings import (
    DEFAULT_AZURE_API_VERSION,
    FieldError,
    ProviderSettings,
    parse_settings,
)
from aibridge.providers.validation import ProviderInputError, validate_create
from aibridge.store.providers import ProviderRecord
from aibridge.testing.providers import provider_record

NOW = datetime(2025, 1, 1, tzinfo=UTC)
BODY = {"type": "openai", "name": "p", "base_url": "https://api.example.com/v1"}


def record(settings: dict[str, Any] | None, ptype: str = "openai") -> ProviderRecord:
    """An enabled provider row with one key and ``settings``."""
    return provider_record(
        "p",
        ptype,
        keys=["sk-settings-test-0001"],
        settings=settings,
        display_name="",
        at=NOW,
    )


def test_absent_settings_are_the_defaults_and_azure_gets_its_api_version() -> None:
    assert parse_settings(None, "openai") == ProviderSettings()
    assert parse_settings({}, "anthropic") == ProviderSettings()
    defaults = ProviderSettings()
    assert (defaults.allow_byok, defaults.key_cooldown_seconds) == (False, 60.0)
    assert (defaults.upstream_timeout_seconds, defaults.circuit_breaker) == (600.0, None)
    azure = parse_settings(None, "azure")
    assert isinstance(azure, ProviderSettings)
    assert azure.api_version == DEFAULT_AZURE_API_VERSION
    own = parse_settings({"api_version": "2025-01-01"}, "azure")
    assert isinstance(own, ProviderSettings) and own.api_version == "2025-01-01"


def test_valid_settings_parse_to_typed_values_with_breaker_defaults() -> None:
    parsed = parse_settings(
        {
            "allow_byok": True,
            "key_cooldown_seconds": 0,
            "upstream_timeout_seconds": 2,
            "extra_headers": {"OpenAI-Organization": "org-1"},
            "circuit_breaker": {"enabled": True, "failure_threshold": 2, "timeout_seconds": 1.5},
        },
        "openai",
    )
    assert parsed == ProviderSettings(
        allow_byok=True,
        key_cooldown_seconds=0.0,
        upstream_timeout_seconds=2.0,
        extra_headers={"OpenAI-Organization": "org-1"},
        circuit_breaker=CircuitBreakerConfig(
            enabled=True, failure_threshold=2, interval_seconds=10.0, timeout_seconds=1.5
        ),
    )
    assert isinstance(parsed, ProviderSettings)
    assert isinstance(parsed.upstream_timeout_seconds, float)
    # An empty breaker object configures no breaker, as null does.
    empty = parse_settings({"circuit_breaker": {}}, "openai")
    assert isinstance(empty, ProviderSettings) and empty.circuit_breaker is None


def test_every_problem_is_listed_at_once() -> None:
    problems = parse_settings(
        {
            "allow_byok": "yes",
            "circuit_breaker": {
                "enabled": "yes",
                "failure_threshold": True,
                "interval_seconds": -1,
                "timeout_seconds": float("nan"),
                "max_requests": 0,
                "failure_treshold": 3,
            },
            "api_version": "2024-10-21",
        },
        "openai",
    )
    assert problems == [
        FieldError("settings.allow_byok", "allow_byok must be a boolean"),
        FieldError("settings.circuit_breaker.enabled", "enabled must be a boolean"),
        FieldError(
            "settings.circuit_breaker.failure_threshold", "failure_threshold must be an integer"
        ),
        FieldError("settings.circuit_breaker.interval_seconds", "interval_seconds must be > 0"),
        FieldError("settings.circuit_breaker.timeout_seconds", "timeout_seconds must be a number"),
        FieldError("settings.circuit_breaker.max_requests", "max_requests must be >= 1"),
        FieldError("settings.circuit_breaker.failure_treshold", "unknown setting"),
        FieldError("settings.api_version", "api_version is only valid for type=azure"),
    ]
    assert parse_settings([1, 2], "openai") == [
        FieldError("settings", "settings must be an object or null")
    ]


def test_breaker_counts_and_durations_are_capped() -> None:
    problems = parse_settings(
        {
            "circuit_breaker": {
                "failure_threshold": 2**32,
                "max_requests": 2**32 - 1,
                "interval_seconds": 86_401,
                "timeout_seconds": 86_400,
            }
        },
        "anthropic",
    )
    assert problems == [
        FieldError(
            "settings.circuit_breaker.failure_threshold", "failure_threshold must be <= 4294967295"
        ),
        FieldError(
            "settings.circuit_breaker.interval_seconds", "interval_seconds must be <= 86400"
        ),
    ]


def test_the_admin_validation_and_the_runtime_use_the_same_parser() -> None:
    settings = {"key_cooldown_seconds": 5, "circuit_breaker": {"enabled": True}}
    spec = validate_create(
        {
            "type": "openai",
            "name": "p",
            "base_url": "https://api.example.com/v1",
            "settings": settings,
        }
    )
    assert spec.settings == settings  # stored as submitted
    provider = build_provider(record(spec.settings))
    assert isinstance(provider, Provider)
    assert provider.options == parse_settings(settings, "openai")
    assert provider.keys is not None


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        # Each of these was accepted by the runtime's own, laxer parser before.
        ({"upstream_timeout_seconds": "5"}, "upstream_timeout_seconds must be a number"),
        ({"circuit_breaker": {"interval_seconds": 0}}, "interval_seconds must be > 0"),
        ({"allow_byok": 1}, "allow_byok must be a boolean"),
        ({"extra_headers": {"Authorization": "Bearer x"}}, "carries credentials"),
        ({"api_version": "2024-10-21"}, "api_version is only valid for type=azure"),
        ({"colour": "red"}, "settings.colour: unknown setting"),
    ],
)
def test_the_runtime_refuses_settings_the_admin_api_refuses(
    settings: dict[str, Any], problem: str
) -> None:
    with pytest.raises(ProviderInputError) as refused:
        validate_create({**BODY, "settings": settings})
    assert any(problem in f"{e.field}: {e.detail}" for e in refused.value.errors)
    with pytest.raises(ProviderBuildError, match="invalid settings") as failed:
        build_provider(record(settings))
    assert problem in str(failed.value)


def test_responses_websocket_is_on_by_default_and_only_for_openai_protocol_types() -> None:
    on = parse_settings({}, "openai")
    off = parse_settings({"responses_websocket": False}, "openai-compat")
    assert isinstance(on, ProviderSettings) and on.responses_websocket is True
    assert isinstance(off, ProviderSettings) and off.responses_websocket is False
    assert parse_settings({"responses_websocket": "yes"}, "openai") == [
        FieldError("settings.responses_websocket", "responses_websocket must be a boolean")
    ]
    assert parse_settings({"responses_websocket": True}, "anthropic") == [
        FieldError(
            "settings.responses_websocket",
            "responses_websocket is only valid for OpenAI-protocol types",
        )
    ]


@pytest.mark.parametrize("ptype", ["openai", "anthropic", "azure", "openai-compat"])
def test_propagate_trace_context_is_off_by_default_and_a_boolean(ptype: str) -> None:
    default = parse_settings({}, ptype)
    on = parse_settings({"propagate_trace_context": True}, ptype)
    assert isinstance(default, ProviderSettings) and default.propagate_trace_context is False
    assert isinstance(on, ProviderSettings) and on.propagate_trace_context is True
    assert parse_settings({"propagate_trace_context": "true"}, ptype) == [
        FieldError("settings.propagate_trace_context", "propagate_trace_context must be a boolean")
    ]
