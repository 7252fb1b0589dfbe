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
_PRICE_FIELDS = (
    "input_per_mtok",
    "output_per_mtok",
    "cache_read_per_mtok",
    "cache_write_per_mtok",
)


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
        "415": "Not JSON",
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
    "interception_id": {
        "name": "interception_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "format": "uuid"},
    },
    "session_id": {
        "name": "session_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": "The opaque id of a GET /api/v1/sessions entry (unpadded base64url "
        'of [user id, client session id], or ["i", interception id] for an interception '
        "without a session id)",
    },
    "key_id": {"name": "key_id", "in": "path", "required": True, "schema": {"type": "string"}},
    "provider_type": {
        "name": "provider_type",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": "openai, anthropic, azure, openai-compat, openrouter, copilot, google, "
        "vercel or bedrock",
    },
    "model": {
        "name": "model",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "maxLength": 200},
        "description": "The model name, or a prefix pattern ending in '*' "
        "(claude-sonnet-4-5*); the rest of the path, so it may contain '/'",
    },
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
        "/api/v1/providers/status": {
            "get": _op(
                "This replica's live provider view (status and reason, key pool, circuit "
                "breakers) and the provider config version every replica has applied",
                {**_ok("ProvidersStatus"), **auth_err},
            )
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
        "/api/v1/session": {
            "post": _op(
                "Sign the dashboard in: check the key, set the HttpOnly aibridge_session "
                "cookie and the aibridge_csrf cookie (echo it in X-CSRF-Token on unsafe "
                "cookie-authenticated requests); answers like /api/v1/me",
                {**_ok("Me"), **_errors("400", "401", "415")},
                requestBody=_body("SignIn"),
                security=[],
            ),
            "delete": _op(
                "Sign out: clear both cookies (needs no valid key)",
                {"204": {"description": "Signed out"}},
                security=[],
            ),
        },
        "/api/v1/interceptions": {
            "get": _op(
                "List interceptions (members see their own)",
                {**_ok("InterceptionPage"), **_errors("400", "401")},
                parameters=[
                    *_query("user", "provider", "model", "client", "session", "since", "until"),
                    {
                        "name": "status",
                        "in": "query",
                        "required": False,
                        "schema": {"enum": ["ok", "error"]},
                        "description": "ok: no error recorded; error: any error",
                    },
                    {
                        "name": "error_type",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string"},
                        "description": "Only interceptions with exactly this error type "
                        "(e.g. upstream_error, client_disconnect)",
                    },
                    *_query("limit", "cursor"),
                ],
            )
        },
        "/api/v1/interceptions/{interception_id}": {
            "parameters": [PATH_PARAM["interception_id"]],
            "get": _op(
                "One interception's full record (members: their own only)",
                {**_ok("InterceptionRecord"), **_errors("400", "401", "404")},
            ),
        },
        "/api/v1/sessions": {
            "get": _op(
                "Agent sessions, newest activity first (members see their own); filters "
                "pick interceptions and each session sums its matching ones",
                {**_ok("SessionPage"), **_errors("400", "401")},
                parameters=_query(
                    "user",
                    "client",
                    "model",
                    "provider",
                    "since",
                    "until",
                    "has_errors",
                    "limit",
                    "cursor",
                ),
            )
        },
        "/api/v1/sessions/{session_id}": {
            "parameters": [PATH_PARAM["session_id"]],
            "get": _op(
                "One session with its interceptions oldest first (members: their own only)",
                {**_ok("SessionDetail"), **_errors("400", "401", "404")},
            ),
        },
        "/api/v1/usage": {
            "get": _op(
                "Token and cost sums grouped by user, key, model, provider, client or day, "
                "optionally per day (interval=day) (members see their own)",
                {**_ok("UsageReport"), **_errors("400", "401")},
                parameters=_query(
                    "group_by",
                    "interval",
                    "user",
                    "provider",
                    "model",
                    "client",
                    "since",
                    "until",
                ),
            )
        },
        "/api/v1/prices": {
            "get": _op(
                "List model prices (any authenticated user)",
                {**_ok("PriceList"), **_errors("400", "401")},
                parameters=_query("provider_type"),
            )
        },
        "/api/v1/prices/{provider_type}/{model}": {
            "parameters": [PATH_PARAM["provider_type"], PATH_PARAM["model"]],
            "get": _op("Get one price", {**_ok("Price"), **_errors("400", "401", "404")}),
            "put": _op(
                "Create (201) or replace (200) a price",
                {
                    **_ok("Price"),
                    **_ok("Price", "201", "Created"),
                    **_errors("400", "401", "403", "409"),
                },
                requestBody=_body("PriceInput"),
            ),
            "delete": _op(
                "Delete a price (the model's calls are recorded unpriced from then on)",
                {"204": {"description": "Deleted"}, **_errors("400", "401", "403", "404")},
            ),
        },
        "/api/v1/openapi.json": {"get": _op("This document", {"200": {"description": "OpenAPI"}})},
    }
    obj = {"type": "object"}
    string = {"type": "string"}
    cost = {
        "type": "number",
        "description": "USD: the sum of the recorded cost of every priced upstream call",
    }
    unpriced = {
        "type": "boolean",
        "description": "true when some call's model had no price (counted as 0, never guessed)",
    }
    per_mtok = {"type": "number", "minimum": 0, "description": "USD per million tokens"}
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
                "api_dump_dir": string,
                "send_actor_headers": {"type": "boolean"},
                "propagate_trace_context": {"type": "boolean"},
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
                "soft_exceeded": {
                    "type": "boolean",
                    "description": "spent at least AIBRIDGE_BUDGET_SOFT_FRACTION of the amount",
                },
                "exceeded": {
                    "type": "boolean",
                    "description": "spent the amount: new requests are refused until resets_at",
                },
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
        "SignIn": {
            "type": "object",
            "required": ["key"],
            "additionalProperties": False,
            "properties": {"key": {"type": "string", "writeOnly": True}},
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
                "interceptions": {"type": "array", "items": _ref("Interception")},
                "next_cursor": {"type": ["string", "null"]},
            },
        },
        "Interception": {
            "type": "object",
            "description": "One interception with its children summarised (more members "
            "than listed here: user, client, session_id, times, errors, credential, prompt, "
            "tool_calls, thought_count).",
            "properties": {
                "id": string,
                "provider": string,
                "provider_name": string,
                "model": string,
                "tokens": obj,
                "cost_usd": cost,
                "unpriced": unpriced,
            },
        },
        "InterceptionRecord": {
            "allOf": [
                _ref("Interception"),
                {
                    "type": "object",
                    "properties": {
                        "thoughts": {"type": "array", "items": string},
                        "duration_ms": {"type": ["integer", "null"]},
                    },
                },
            ]
        },
        "Tokens": {
            "type": "object",
            "properties": {
                k: {"type": "integer"}
                for k in ("input", "output", "cache_read", "cache_write", "reasoning")
            },
        },
        "Session": {
            "type": "object",
            "properties": {
                "id": string,
                "client_session_id": {"type": ["string", "null"]},
                "user": {
                    "type": "object",
                    "properties": {"id": string, "username": {"type": ["string", "null"]}},
                },
                "client": {"type": ["string", "null"]},
                "first_at": string,
                "last_at": string,
                "interception_count": {"type": "integer"},
                "tokens": _ref("Tokens"),
                "cost_usd": cost,
                "unpriced": unpriced,
                "error_count": {"type": "integer"},
            },
        },
        "ProvidersStatus": {
            "type": "object",
            "properties": {
                "replica": {"type": "string"},
                "config_version": {"type": "integer"},
                "current_config_version": {"type": "integer"},
                "loaded": {"type": "boolean"},
                "last_reload_at": {"type": ["string", "null"], "format": "date-time"},
                "last_reload_error": {"type": ["string", "null"]},
                "stale_after_seconds": {"type": "number"},
                "providers": _array("ProviderLiveStatus"),
                "replicas": _array("ReplicaStatus"),
            },
        },
        "ProviderLiveStatus": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "type": {"type": "string"},
                "enabled": {"type": "boolean"},
                "status": {"type": "string", "enum": ["ok", "disabled", "error"]},
                "reason": {"type": ["string", "null"]},
                "keys": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "id": {"type": "string"},
                            "hint": {"type": "string"},
                            "primary": {"type": "boolean"},
                            "state": {"type": "string", "enum": ["valid", "cooling"]},
                            "cooldown_seconds": {"type": "number"},
                            "reason": {
                                "type": ["string", "null"],
                                "enum": ["rate_limited", "unauthorized", None],
                            },
                        },
                    },
                },
                "breakers_enabled": {"type": "boolean"},
                "breakers": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "endpoint": {"type": "string"},
                            "model": {"type": "string"},
                            "state": {"type": "string", "enum": ["closed", "open", "half-open"]},
                            "retry_after_seconds": {"type": ["integer", "null"]},
                        },
                    },
                },
            },
        },
        "ReplicaStatus": {
            "type": "object",
            "properties": {
                "id": {"type": "string"},
                "pid": {"type": "integer"},
                "host": {"type": "string"},
                "config_version": {"type": "integer"},
                "started_at": {"type": "string", "format": "date-time"},
                "last_seen": {"type": "string", "format": "date-time"},
                "stale": {"type": "boolean"},
                "current": {"type": "boolean"},
            },
        },
        "SessionPage": {
            "type": "object",
            "properties": {
                "sessions": _array("Session"),
                "next_cursor": {"type": ["string", "null"]},
            },
        },
        "SessionTurn": {
            "allOf": [
                _ref("InterceptionRecord"),
                {
                    "type": "object",
                    "properties": {
                        "cache_read_share": {
                            "type": ["number", "null"],
                            "description": "cache_read / (input + cache_read + cache_write)",
                        },
                        "cache_break": {
                            "type": "boolean",
                            "description": "the share collapsed against the previous turn "
                            "with input: from >= 0.5 to < 0.2, or down >= 0.5 on a turn of "
                            ">= 1024 input tokens",
                        },
                    },
                },
            ]
        },
        "SessionDetail": {
            "allOf": [
                _ref("Session"),
                {
                    "type": "object",
                    "properties": {"interceptions": _array("SessionTurn")},
                },
            ]
        },
        "UsageReport": {
            "type": "object",
            "properties": {
                "group_by": {"enum": ["user", "key", "model", "provider", "client", "day"]},
                "interval": {"enum": ["day"]},
                "rows": _array("UsageRow"),
            },
        },
        "UsageRow": {
            "type": "object",
            "properties": {
                "day": {"type": "string", "description": "interval=day: YYYY-MM-DD (UTC)"},
                "key": string,
                "name": {
                    "type": ["string", "null"],
                    "description": "group_by=key: the key's name",
                },
                "user": {"type": "string", "description": "group_by=key: the key's user"},
                "interceptions": {"type": "integer"},
                "input": {"type": "integer", "description": "uncached input tokens"},
                "output": {"type": "integer", "description": "output tokens (reasoning included)"},
                "cache_read": {"type": "integer"},
                "cache_write": {"type": "integer"},
                "reasoning": {"type": "integer"},
                "cost_usd": cost,
                "unpriced": unpriced,
            },
        },
        "Price": {
            "type": "object",
            "description": "USD per million tokens of one model (or '*' prefix pattern) of "
            "one provider type, by kind of token.",
            "properties": {
                "provider_type": string,
                "model": string,
                **{name: per_mtok for name in _PRICE_FIELDS},
                "effective_date": {"type": "string", "format": "date"},
            },
        },
        "PriceList": {"type": "object", "properties": {"prices": _array("Price")}},
        "PriceInput": {
            "type": "object",
            "required": list(_PRICE_FIELDS),
            "properties": {
                **{name: per_mtok for name in _PRICE_FIELDS},
                "effective_date": {
                    "type": "string",
                    "format": "date",
                    "description": "YYYY-MM-DD; default today (UTC)",
                },
            },
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "aibridge admin API", "version": __version__},
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "gatewayKey": {"type": "http", "scheme": "bearer"},
                # The dashboard's sign-in (POST /api/v1/session); unsafe methods also
                # need X-CSRF-Token equal to the aibridge_csrf cookie.
                "sessionCookie": {"type": "apiKey", "in": "cookie", "name": "aibridge_session"},
            },
        },
        "security": [{"gatewayKey": []}, {"sessionCookie": []}],
        "paths": paths,
    }


_DOCUMENT = build_document()


async def openapi_document(_request: web.Request) -> web.Response:
    """Serve the OpenAPI document (public: it contains no data)."""
    return json_response(_DOCUMENT)


def add_routes(app: web.Application) -> None:
    """Register ``GET /api/v1/openapi.json``."""
    app.router.add_get("/api/v1/openapi.json", openapi_document)
