"""The OpenAPI 3.1 document of the admin API, served at ``/api/v1/openapi.json``.

Written by hand (the API is small and its shapes are the contract); a test checks
that every route registered under ``/api/v1`` is documented and vice versa.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from aibridge import __version__
from aibridge.httputil import json_response

JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _body(schema: str) -> dict[str, Any]:
    return {"required": True, "content": {JSON: {"schema": _ref(schema)}}}


def _ok(schema: dict[str, Any] | str, status: str = "200", desc: str = "OK") -> dict[str, Any]:
    body = _ref(schema) if isinstance(schema, str) else schema
    return {status: {"description": desc, "content": {JSON: {"schema": body}}}}


def _errors(*codes: str) -> dict[str, Any]:
    names = {
        "400": "Invalid request",
        "401": "Missing or invalid gateway key",
        "403": "Admin role required",
        "404": "Not found",
        "409": "Conflict",
    }
    return {
        c: {"description": names[c], "content": {JSON: {"schema": _ref("Error")}}} for c in codes
    }


def _op(summary: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": responses}
    op.update(extra)
    return op


def _array(schema: str) -> dict[str, Any]:
    return {"type": "array", "items": _ref(schema)}


PATH_PARAM = {
    "id_or_name": {
        "name": "id_or_name",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
    },
    "user": {"name": "user", "in": "path", "required": True, "schema": {"type": "string"}},
    "key_id": {"name": "key_id", "in": "path", "required": True, "schema": {"type": "string"}},
}


def _query(*names: str) -> list[dict[str, Any]]:
    return [
        {"name": n, "in": "query", "required": False, "schema": {"type": "string"}} for n in names
    ]


def build_document() -> dict[str, Any]:
    """The complete OpenAPI document."""
    auth_err = _errors("401", "403")
    paths: dict[str, Any] = {
        "/api/v1/providers": {
            "get": _op(
                "List providers (live, enabled and disabled)",
                {**_ok(_array("Provider")), **auth_err},
            ),
            "post": _op(
                "Create a provider",
                {**_ok("Provider", "201", "Created"), **_errors("400", "401", "403", "409")},
                requestBody=_body("CreateProvider"),
            ),
        },
        "/api/v1/providers/{id_or_name}": {
            "parameters": [PATH_PARAM["id_or_name"]],
            "get": _op(
                "Get a provider", {**_ok("Provider"), **_errors("400", "401", "403", "404")}
            ),
            "patch": _op(
                "Update a provider (api_keys is the complete post-patch key set)",
                {**_ok("Provider"), **_errors("400", "401", "403", "404")},
                requestBody=_body("UpdateProvider"),
            ),
            "delete": _op(
                "Soft-delete a provider",
                {"204": {"description": "Deleted"}, **_errors("400", "401", "403", "404")},
            ),
        },
        "/api/v1/mcp-servers": {
            "get": _op(
                "List MCP servers (enabled and disabled)",
                {**_ok(_array("MCPServer")), **auth_err},
            ),
            "post": _op(
                "Register an MCP server",
                {**_ok("MCPServer", "201", "Created"), **_errors("400", "401", "403", "409")},
                requestBody=_body("CreateMCPServer"),
            ),
        },
        "/api/v1/mcp-servers/{id_or_name}": {
            "parameters": [PATH_PARAM["id_or_name"]],
            "get": _op(
                "Get an MCP server", {**_ok("MCPServer"), **_errors("400", "401", "403", "404")}
            ),
            "patch": _op(
                "Update an MCP server (absent fields unchanged; leaving per_user auth deletes "
                "the users' tokens)",
                {**_ok("MCPServer"), **_errors("400", "401", "403", "404", "409")},
                requestBody=_body("UpdateMCPServer"),
            ),
            "delete": _op(
                "Delete an MCP server and its users' tokens",
                {"204": {"description": "Deleted"}, **_errors("400", "401", "403", "404")},
            ),
        },
        "/api/v1/mcp-servers/{id_or_name}/credentials": {
            "parameters": [PATH_PARAM["id_or_name"]],
            "get": _op(
                "Whether the calling user has a token for this per_user server (never the token)",
                {**_ok("MCPCredentialStatus"), **_errors("400", "401", "404")},
            ),
            "put": _op(
                "Set the calling user's own token for a per_user server (any role); sent as "
                "Authorization: Bearer. 409 when the server is not per_user",
                {**_ok("MCPCredentialStatus"), **_errors("400", "401", "404", "409")},
                requestBody=_body("MCPCredential"),
            ),
            "delete": _op(
                "Remove the calling user's token",
                {"204": {"description": "Removed"}, **_errors("400", "401", "404")},
            ),
        },
        "/api/v1/users": {
            "get": _op("List users", {**_ok(_array("User")), **auth_err}),
            "post": _op(
                "Create a user",
                {**_ok("User", "201", "Created"), **_errors("400", "401", "403", "409")},
                requestBody=_body("CreateUser"),
            ),
        },
        "/api/v1/users/{user}": {
            "parameters": [PATH_PARAM["user"]],
            "get": _op("Get a user", {**_ok("User"), **_errors("401", "403", "404")}),
            "patch": _op(
                "Update a user's email, role, status or limits (limits: per field; null clears)",
                {**_ok("User"), **_errors("400", "401", "403", "404")},
                requestBody=_body("UpdateUser"),
            ),
        },
        "/api/v1/users/{user}/keys": {
            "parameters": [PATH_PARAM["user"]],
            "get": _op(
                "List a user's gateway keys",
                {**_ok(_array("ApiKey")), **_errors("401", "403", "404")},
            ),
            "post": _op(
                "Create a gateway key (the token is returned once)",
                {**_ok("NewApiKey", "201", "Created"), **_errors("400", "401", "403", "404")},
                requestBody=_body("CreateApiKey"),
            ),
        },
        "/api/v1/users/{user}/keys/{key_id}": {
            "parameters": [PATH_PARAM["user"], PATH_PARAM["key_id"]],
            "get": _op("Get a gateway key", {**_ok("ApiKey"), **_errors("401", "403", "404")}),
            "patch": _op(
                "Set a gateway key's own limits (per field; null clears; the stricter of "
                "user and key wins)",
                {**_ok("ApiKey"), **_errors("400", "401", "403", "404")},
                requestBody=_body("UpdateApiKey"),
            ),
            "delete": _op(
                "Revoke a gateway key",
                {"204": {"description": "Revoked"}, **_errors("401", "403", "404")},
            ),
        },
        "/api/v1/me": {
            "get": _op(
                "The calling user, its limits and budget status",
                {**_ok("Me"), **_errors("401")},
            )
        },
        "/api/v1/me/keys": {
            "get": _op("The calling user's keys", {**_ok(_array("ApiKey")), **_errors("401")})
        },
        "/api/v1/interceptions": {
            "get": _op(
                "List interceptions (members see their own)",
                {**_ok("InterceptionPage"), **_errors("400", "401")},
                parameters=_query(
                    "user",
                    "provider",
                    "model",
                    "client",
                    "session",
                    "since",
                    "until",
                    "limit",
                    "cursor",
                ),
            )
        },
        "/api/v1/usage": {
            "get": _op(
                "Token sums grouped by user, model, provider or day",
                {**_ok(_array("UsageRow")), **_errors("400", "401")},
                parameters=_query("group_by", "user", "provider", "since", "until"),
            )
        },
        "/api/v1/openapi.json": {"get": _op("This document", {"200": {"description": "OpenAPI"}})},
    }
    obj = {"type": "object"}
    string = {"type": "string"}
    schemas: dict[str, Any] = {
        "Error": {
            "type": "object",
            "required": ["message"],
            "properties": {
                "message": string,
                "detail": string,
                "validations": {
                    "type": "array",
                    "items": {"type": "object", "properties": {"field": string, "detail": string}},
                },
            },
        },
        "ProviderKey": {
            "type": "object",
            "properties": {"id": string, "masked": string, "created_at": string},
        },
        "ProviderSettings": {
            "type": ["object", "null"],
            "additionalProperties": False,
            "properties": {
                "allow_byok": {"type": "boolean"},
                "key_cooldown_seconds": {"type": "number", "minimum": 0},
                "upstream_timeout_seconds": {"type": "number", "exclusiveMinimum": 0},
                "api_version": string,
                "extra_headers": {"type": "object", "additionalProperties": string},
                "responses_websocket": {"type": "boolean"},
                "circuit_breaker": {
                    "type": "object",
                    "properties": {
                        "enabled": {"type": "boolean"},
                        "failure_threshold": {"type": "integer", "minimum": 1},
                        "interval_seconds": {"type": "number"},
                        "timeout_seconds": {"type": "number"},
                        "max_requests": {"type": "integer", "minimum": 1},
                    },
                },
            },
        },
        "Provider": {
            "type": "object",
            "properties": {
                "id": string,
                "type": {
                    "enum": [
                        "openai",
                        "anthropic",
                        "azure",
                        "openai-compat",
                        "openrouter",
                        "copilot",
                        "google",
                        "vercel",
                        "bedrock",
                    ]
                },
                "name": string,
                "display_name": string,
                "icon": string,
                "enabled": {"type": "boolean"},
                "base_url": string,
                "api_keys": _array("ProviderKey"),
                "settings": _ref("ProviderSettings"),
                "created_at": string,
                "updated_at": string,
            },
        },
        "CreateProvider": {
            "type": "object",
            "required": ["type", "name"],
            "properties": {
                "type": string,
                "name": {"type": "string", "pattern": "^[a-z0-9]+(-[a-z0-9]+)*$"},
                "display_name": string,
                "icon": string,
                "enabled": {"type": "boolean"},
                "base_url": {
                    "type": "string",
                    "description": "Required for azure and openai-compat; other types store "
                    "their default when it is omitted.",
                },
                "api_keys": {"type": "array", "items": string},
                "settings": _ref("ProviderSettings"),
            },
        },
        "UpdateProvider": {
            "type": "object",
            "properties": {
                "display_name": string,
                "icon": string,
                "enabled": {"type": "boolean"},
                "base_url": string,
                "api_keys": {
                    "type": "array",
                    "items": {"type": "object", "properties": {"id": string, "api_key": string}},
                },
                "settings": _ref("ProviderSettings"),
            },
        },
        "MCPAuth": {
            "oneOf": [
                {
                    "type": "object",
                    "required": ["type"],
                    "properties": {"type": {"const": "none"}},
                },
                {
                    "type": "object",
                    "required": ["type", "name"],
                    "description": "A static header sent on every MCP request; value is "
                    "write-only (encrypted at rest, answered as a masked hint). In a PATCH "
                    "of a server that already uses header auth, value may be left out.",
                    "properties": {
                        "type": {"const": "header"},
                        "name": {"type": "string", "pattern": "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"},
                        "value": {"type": "string", "writeOnly": True, "maxLength": 8192},
                        "masked": {"type": "string", "readOnly": True},
                    },
                },
                {
                    "type": "object",
                    "required": ["type"],
                    "description": "Each user sets their own token (PUT …/credentials).",
                    "properties": {"type": {"const": "per_user"}},
                },
            ]
        },
        "MCPServer": {
            "type": "object",
            "properties": {
                "id": string,
                "name": string,
                "url": string,
                "enabled": {"type": "boolean"},
                "tool_allow": {"type": ["string", "null"]},
                "tool_deny": {"type": ["string", "null"]},
                "auth": _ref("MCPAuth"),
                "has_credential": {
                    "type": "boolean",
                    "description": "per_user servers: whether the calling user set a token",
                },
                "created_at": string,
                "updated_at": string,
            },
        },
        "CreateMCPServer": {
            "type": "object",
            "required": ["name", "url"],
            "properties": {
                "name": {"type": "string", "pattern": "^[a-z0-9]+(-[a-z0-9]+)*$"},
                "url": {"type": "string", "description": "Streamable HTTP endpoint, http(s)"},
                "enabled": {"type": "boolean"},
                "tool_allow": {
                    "type": ["string", "null"],
                    "description": "Regex searched in each tool name; a tool must match",
                },
                "tool_deny": {
                    "type": ["string", "null"],
                    "description": "Regex searched in each tool name; wins over tool_allow",
                },
                "auth": _ref("MCPAuth"),
            },
        },
        "UpdateMCPServer": {
            "type": "object",
            "properties": {
                "name": {"type": "string", "pattern": "^[a-z0-9]+(-[a-z0-9]+)*$"},
                "url": string,
                "enabled": {"type": "boolean"},
                "tool_allow": {"type": ["string", "null"]},
                "tool_deny": {"type": ["string", "null"]},
                "auth": _ref("MCPAuth"),
            },
        },
        "MCPCredential": {
            "type": "object",
            "required": ["token"],
            "properties": {"token": {"type": "string", "writeOnly": True, "maxLength": 8192}},
        },
        "MCPCredentialStatus": {
            "type": "object",
            "properties": {
                "server_id": string,
                "server": string,
                "has_credential": {"type": "boolean"},
                "updated_at": string,
            },
        },
        "User": {
            "type": "object",
            "properties": {
                "id": string,
                "username": string,
                "email": string,
                "role": {"enum": ["admin", "member"]},
                "status": {"enum": ["active", "suspended"]},
                "created_at": string,
                "updated_at": string,
                "limits": _ref("Limits"),
            },
        },
        "Limits": {
            "type": "object",
            "description": "Each null = no limit of its own (a user's inherits the configured "
            "default; a key's leaves the user's). A PATCH sets the fields it names and keeps "
            "the others; limits: null clears them all.",
            "additionalProperties": False,
            "properties": {
                "requests_per_minute": {"type": ["integer", "null"], "minimum": 1},
                "tokens_per_minute": {"type": ["integer", "null"], "minimum": 1},
                "max_concurrent": {"type": ["integer", "null"], "minimum": 1},
                "allowed_models": {
                    "type": ["array", "null"],
                    "maxItems": 64,
                    "items": {
                        "type": "string",
                        "description": "MODEL-GLOB or PROVIDER/MODEL-GLOB (* and ?), "
                        "e.g. claude-* or openai/gpt-5*",
                    },
                },
                "budget": {"oneOf": [_ref("Budget"), {"type": "null"}]},
            },
        },
        "Budget": {
            "type": "object",
            "required": ["amount_usd", "period"],
            "additionalProperties": False,
            "properties": {
                "amount_usd": {"type": "number", "minimum": 0},
                "period": {"enum": ["day", "week", "month"]},
            },
        },
        "BudgetStatus": {
            "type": "object",
            "description": "Of the user's budget (own or default) and the key's, the one "
            "with less left this period.",
            "properties": {
                "amount_usd": {"type": "number"},
                "period": {"enum": ["day", "week", "month"]},
                "spent_usd": {"type": "number"},
                "remaining_usd": {"type": "number"},
                "resets_at": {"type": "string", "format": "date-time"},
                "scope": {"enum": ["user", "key"]},
            },
        },
        "Me": {
            "allOf": [
                _ref("User"),
                {
                    "type": "object",
                    "properties": {
                        "key_id": string,
                        "limits": _ref("Limits"),
                        "key_limits": _ref("Limits"),
                        "budget": _ref("BudgetStatus"),
                    },
                },
            ],
            "description": "limits: the user's own over the configured defaults; key_limits: "
            "the presented key's own (a request must pass both); budget: present when one "
            "applies.",
        },
        "CreateUser": {
            "type": "object",
            "required": ["username"],
            "properties": {
                "username": string,
                "email": string,
                "role": {"enum": ["admin", "member"]},
            },
        },
        "UpdateUser": {
            "type": "object",
            "properties": {
                "email": string,
                "role": {"enum": ["admin", "member"]},
                "status": {"enum": ["active", "suspended"]},
                "limits": {"oneOf": [_ref("Limits"), {"type": "null"}]},
            },
        },
        "UpdateApiKey": {
            "type": "object",
            "required": ["limits"],
            "properties": {"limits": {"oneOf": [_ref("Limits"), {"type": "null"}]}},
        },
        "ApiKey": {
            "type": "object",
            "properties": {
                "id": string,
                "name": string,
                "created_at": string,
                "expires_at": {"type": ["string", "null"]},
                "last_used_at": {"type": ["string", "null"]},
                "revoked_at": {"type": ["string", "null"]},
                "limits": _ref("Limits"),
            },
        },
        "CreateApiKey": {
            "type": "object",
            "properties": {
                "name": string,
                "expires_at": string,
                "expires_in_days": {"type": "integer"},
            },
        },
        "NewApiKey": {
            "allOf": [_ref("ApiKey"), {"type": "object", "properties": {"token": string}}]
        },
        "InterceptionPage": {
            "type": "object",
            "properties": {
                "items": {"type": "array", "items": obj},
                "next_cursor": {"type": ["string", "null"]},
            },
        },
        "UsageRow": {
            "type": "object",
            "properties": {
                "key": string,
                "interceptions": {"type": "integer"},
                "input": {"type": "integer"},
                "output": {"type": "integer"},
                "cache_read": {"type": "integer"},
                "cache_write": {"type": "integer"},
                "reasoning": {"type": "integer"},
            },
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "aibridge admin API", "version": __version__},
        "components": {
            "schemas": schemas,
            "securitySchemes": {"gatewayKey": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"gatewayKey": []}],
        "paths": paths,
    }


_DOCUMENT = build_document()


async def openapi_document(_request: web.Request) -> web.Response:
    """Serve the OpenAPI document (public: it contains no data)."""
    return json_response(_DOCUMENT)


def add_routes(app: web.Application) -> None:
    """Register ``GET /api/v1/openapi.json``."""
    app.router.add_get("/api/v1/openapi.json", openapi_document)
