"""The Copilot, Google and Vercel types at the runtime level: protocol family, credentials,
Copilot's route table (no ``/v1``), and where the default base URLs send each route."""

from __future__ import annotations

import pytest

from aibridge.providers.base import Provider, build_provider
from aibridge.providers.defaults import DEFAULT_BASE_URLS
from aibridge.providers.routes import NOT_FOUND, BridgedRoute, PassthroughRoute, RoutingError
from aibridge.providers.snapshot import ProviderSnapshot
from aibridge.testing.providers import provider_record


def runtime(name: str, ptype: str, base_url: str | None = None) -> Provider:
    built = build_provider(
        provider_record(name, ptype, base_url or DEFAULT_BASE_URLS[ptype], keys=[])
    )
    assert isinstance(built, Provider)
    return built


SNAPSHOT = ProviderSnapshot(
    3,
    {
        p.name: p
        for p in (
            runtime("copilot", "copilot"),
            runtime("gemini", "google"),
            runtime("vercel", "vercel"),
            runtime("oai", "openai"),
        )
    },
)


def test_the_new_types_speak_openai_and_only_copilot_is_always_byok() -> None:
    for name in ("copilot", "gemini", "vercel"):
        p = SNAPSHOT.get(name)
        assert isinstance(p, Provider)
        assert (p.family, p.auth_header) == ("openai", "Authorization")
        assert p.always_byok is (name == "copilot")
    oai = SNAPSHOT.get("oai")
    assert isinstance(oai, Provider) and oai.always_byok is False


@pytest.mark.parametrize(
    ("path", "api"),
    [("/chat/completions", "chat"), ("/responses", "responses")],
)
def test_copilots_bridged_routes_have_no_v1_segment(path: str, api: str) -> None:
    route = SNAPSHOT.resolve("copilot", path, "POST")
    assert isinstance(route, BridgedRoute)
    assert (route.api, route.upstream_suffix, route.label) == (api, path, path)
    assert str(route.provider.upstream_url(route.upstream_suffix)) == (
        "https://api.individual.githubcopilot.com" + path
    )
    refused = SNAPSHOT.resolve("copilot", path, "GET")
    assert isinstance(refused, RoutingError) and refused.status == 405


@pytest.mark.parametrize(
    "path",
    [
        "/models",
        "/models/gpt-4.1",
        "/agents/list",
        "/agents/github/skills",
        "/mcp/readonly",
        "/mcp/",
        "/.well-known/oauth-protected-resource",
    ],
)
def test_copilots_passthrough_routes(path: str) -> None:
    for method in ("GET", "POST"):
        route = SNAPSHOT.resolve("copilot", path, method)
        assert isinstance(route, PassthroughRoute), (path, method)
        assert route.upstream_suffix == path


@pytest.mark.parametrize(
    "path",
    [
        "/v1/chat/completions",  # Copilot's API has no /v1, so neither has the gateway
        "/v1/responses",
        "/v1/models",
        "/agents",
        "/mcp",
        "/.well-known",
        "/conversations",
        "/responses/resp_1",
        "/embeddings",
        "/",
    ],
)
def test_copilot_paths_outside_its_table_are_404(path: str) -> None:
    assert SNAPSHOT.resolve("copilot", path, "POST") == NOT_FOUND


@pytest.mark.parametrize(
    "path",
    [
        "/.well-known/../chat/completions",
        "/mcp/%2e%2e/chat/completions",
        "/agents/x%2F..%2F..%2Fchat",
    ],
)
def test_copilot_paths_that_could_leave_their_route_are_400(path: str) -> None:
    refused = SNAPSHOT.resolve("copilot", path, "GET")
    assert isinstance(refused, RoutingError)
    assert (refused.status, refused.family) == (400, "openai")


@pytest.mark.parametrize(
    ("name", "path", "url"),
    [
        (
            "gemini",
            "/v1/chat/completions",
            "https://generativelanguage.googleapis.com/v1beta/openai/chat/completions",
        ),
        (
            "gemini",
            "/v1/models",
            "https://generativelanguage.googleapis.com/v1beta/openai/models",
        ),
        ("vercel", "/v1/chat/completions", "https://ai-gateway.vercel.sh/v1/chat/completions"),
        ("vercel", "/v1/responses", "https://ai-gateway.vercel.sh/v1/responses"),
        ("vercel", "/v1/models", "https://ai-gateway.vercel.sh/v1/models"),
    ],
)
def test_google_and_vercel_route_like_openai_to_their_default_endpoints(
    name: str, path: str, url: str
) -> None:
    route = SNAPSHOT.resolve(name, path, "POST" if "models" not in path else "GET")
    assert isinstance(route, BridgedRoute | PassthroughRoute)
    assert str(route.provider.upstream_url(route.upstream_suffix)) == url
