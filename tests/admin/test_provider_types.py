"""Provider types through the admin API and the CLI: each type's default base URL is stored
on the provider, and Copilot (always bring-your-own-key) refuses provider keys."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
from aiohttp.test_utils import TestClient
from click.testing import CliRunner

from aibridge.admin.openapi import build_document
from aibridge.cli import main
from aibridge.providers.defaults import DEFAULT_BASE_URLS
from aibridge.providers.validation import COPILOT_KEYS_REFUSED
from aibridge.store.models import PROVIDER_TYPES
from aibridge.testing.gateway import admin_gateway

URL = "/api/v1/providers"
TIMEOUT = 60.0
KEY = "sk-test-aaaaaaaaaaaaaaaaaaaa1111"

EXPECTED_DEFAULTS = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
    "openrouter": "https://openrouter.ai/api/v1",
    "copilot": "https://api.individual.githubcopilot.com",
    "google": "https://generativelanguage.googleapis.com/v1beta/openai",
    "vercel": "https://ai-gateway.vercel.sh/v1",
}


async def call(
    client: TestClient, method: str, path: str, token: str, body: Any = None
) -> tuple[int, Any]:
    """One admin request; returns (status, parsed JSON or None)."""
    kwargs: dict[str, Any] = {"headers": {"Authorization": f"Bearer {token}"}}
    if body is not None:
        kwargs["data"] = orjson.dumps(body)
    async with asyncio.timeout(TIMEOUT):
        resp = await client.request(method, path, **kwargs)
        raw = await resp.read()
    return resp.status, (orjson.loads(raw) if raw else None)


def validations(body: Any) -> set[tuple[str, str]]:
    return {(v["field"], v["detail"]) for v in body.get("validations", [])}


def test_every_type_is_accepted_documented_and_defaults_name_real_types() -> None:
    assert {"copilot", "google", "vercel"} <= set(PROVIDER_TYPES)
    assert dict(DEFAULT_BASE_URLS) == EXPECTED_DEFAULTS
    assert set(DEFAULT_BASE_URLS) <= set(PROVIDER_TYPES)
    schemas = build_document()["components"]["schemas"]
    assert set(schemas["Provider"]["properties"]["type"]["enum"]) == set(PROVIDER_TYPES)
    assert "base_url" not in schemas["CreateProvider"]["required"]


async def test_a_provider_created_without_base_url_stores_its_types_default(
    db_url: str, tmp_path: Path
) -> None:
    async with admin_gateway(db_url, tmp_path) as (client, _services, token):
        for ptype, default in EXPECTED_DEFAULTS.items():
            body: dict[str, Any] = {"type": ptype, "name": f"{ptype}-default"}
            if ptype != "copilot":
                body["api_keys"] = [KEY]
            status, created = await call(client, "POST", URL, token, body)
            assert status == 201, (ptype, created)
            assert created["base_url"] == default, ptype
            # Stored, not computed on the way out: a GET and the listing show it too.
            status, got = await call(client, "GET", f"{URL}/{ptype}-default", token)
            assert status == 200 and got["base_url"] == default
        status, listed = await call(client, "GET", URL, token)
        assert {p["name"]: p["base_url"] for p in listed} == {
            f"{t}-default": u for t, u in EXPECTED_DEFAULTS.items()
        }

        # null and "" mean "not given" too; a given URL wins over the default.
        status, created = await call(
            client, "POST", URL, token, {"type": "google", "name": "g-null", "base_url": None}
        )
        assert status == 201 and created["base_url"] == EXPECTED_DEFAULTS["google"]
        status, created = await call(
            client,
            "POST",
            URL,
            token,
            {"type": "vercel", "name": "v-own", "base_url": "https://gw.example/v1"},
        )
        assert status == 201 and created["base_url"] == "https://gw.example/v1"

        # Types without a sensible default still need one, and say so.
        for ptype in ("azure", "openai-compat"):
            status, resp = await call(
                client, "POST", URL, token, {"type": ptype, "name": "x", "api_keys": [KEY]}
            )
            assert status == 400, (ptype, resp)
            assert validations(resp) == {("base_url", "base_url is required")}, ptype


async def test_copilot_refuses_api_keys_on_create_and_update(db_url: str, tmp_path: Path) -> None:
    async with admin_gateway(db_url, tmp_path) as (client, _services, token):
        status, resp = await call(
            client, "POST", URL, token, {"type": "copilot", "name": "cp", "api_keys": [KEY]}
        )
        assert status == 400
        assert resp["message"] == "Invalid AI provider request."
        assert validations(resp) == {("api_keys", COPILOT_KEYS_REFUSED)}
        assert "each user's own GitHub Copilot token" in COPILOT_KEYS_REFUSED
        status, _ = await call(client, "GET", f"{URL}/cp", token)
        assert status == 404  # nothing was created

        # An empty key list is no key at all.
        status, created = await call(
            client, "POST", URL, token, {"type": "copilot", "name": "cp", "api_keys": []}
        )
        assert status == 201 and created["api_keys"] == []

        status, resp = await call(
            client, "PATCH", f"{URL}/cp", token, {"api_keys": [{"api_key": KEY}]}
        )
        assert status == 400
        assert validations(resp) == {("api_keys", COPILOT_KEYS_REFUSED)}
        status, got = await call(client, "GET", f"{URL}/cp", token)
        assert got["api_keys"] == []

        status, patched = await call(
            client, "PATCH", f"{URL}/cp", token, {"api_keys": [], "display_name": "Copilot"}
        )
        assert status == 200 and patched["display_name"] == "Copilot"


def test_the_cli_creates_providers_with_their_default_base_url_and_refuses_copilot_keys(
    sqlite_url: str,
) -> None:
    runner = CliRunner()
    env = {"AIBRIDGE_ENCRYPTION_KEY": "", "AIBRIDGE_DATABASE_URL": sqlite_url}

    def cli(*args: str) -> Any:
        return runner.invoke(main, ["providers", *args], env=env, catch_exceptions=False)

    result = cli("create", "gemini", "--type", "google", "--api-key", KEY, "--json")
    assert result.exit_code == 0, result.output
    assert orjson.loads(result.stdout)["base_url"] == EXPECTED_DEFAULTS["google"]
    result = cli("create", "copilot", "--type", "copilot", "--json")
    assert result.exit_code == 0, result.output
    assert orjson.loads(result.stdout)["base_url"] == EXPECTED_DEFAULTS["copilot"]

    result = cli("create", "cp2", "--type", "copilot", "--api-key", KEY)
    assert result.exit_code == 2
    assert f"api_keys: {COPILOT_KEYS_REFUSED}" in result.stderr
    result = cli("update", "copilot", "--add-key", KEY)
    assert result.exit_code == 2, result.output
    assert COPILOT_KEYS_REFUSED in result.stderr
    result = cli("create", "az", "--type", "azure", "--api-key", KEY)
    assert result.exit_code == 2 and "base_url: base_url is required" in result.stderr
    assert KEY not in result.stdout + result.stderr
