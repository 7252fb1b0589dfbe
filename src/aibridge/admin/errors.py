"""The admin API error envelope ``{"message", "detail", "validations"}``."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import orjson
from aiohttp import web

from aibridge.httputil import json_response
from aibridge.inputcheck import FieldError, InputError
from aibridge.store.outage import is_database_unavailable

T = TypeVar("T")

log = logging.getLogger(__name__)

# Seconds a client is told to wait when the database is unavailable.
DATABASE_RETRY_AFTER = "5"


@dataclass(frozen=True, slots=True)
class Validation:
    """One field-level validation failure."""

    field: str
    detail: str


class APIError(Exception):
    """Raise from a handler to answer with a JSON error envelope."""

    def __init__(
        self,
        status: int,
        message: str,
        detail: str = "",
        validations: list[Validation] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.detail = detail
        self.validations = validations or []
        self.headers = headers

    def response(self) -> web.Response:
        """Render as an aiohttp response."""
        body: dict[str, object] = {"message": self.message}
        if self.detail:
            body["detail"] = self.detail
        if self.validations:
            body["validations"] = [{"field": v.field, "detail": v.detail} for v in self.validations]
        resp = json_response(body, status=self.status)
        if self.headers:
            resp.headers.update(self.headers)
        return resp


def database_unavailable(detail: str) -> APIError:
    """The 503 for a database outage: an envelope that says "retry", with ``Retry-After``."""
    return APIError(
        503, "Database unavailable.", detail, headers={"Retry-After": DATABASE_RETRY_AFTER}
    )


def validations(errors: list[FieldError]) -> list[Validation]:
    """The envelope's ``validations`` for field errors."""
    return [Validation(e.field, e.detail) for e in errors]


def input_error(err: InputError) -> APIError:
    """A validation failure as a 400 envelope with one entry per field."""
    return APIError(400, err.message, validations=validations(err.errors))


def path_reference(request: web.Request, parse: Callable[[str], T]) -> T:
    """``parse`` applied to the ``{id_or_name}`` of the path, or a 400 saying why not."""
    try:
        return parse(request.match_info["id_or_name"])
    except InputError as err:
        raise input_error(err) from err


def not_found(what: str = "Resource") -> APIError:
    """The standard 404."""
    return APIError(404, f"{what} not found.")


async def read_json_object(request: web.Request) -> dict[str, object]:
    """Parse the request body as a JSON object or raise a 400 that says why."""
    raw = await request.read()
    if not raw:
        raise APIError(400, "Request body is empty.", "send a JSON object")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise APIError(400, "Request body is not valid JSON.", str(exc)) from exc
    if not isinstance(data, dict):
        raise APIError(400, "Request body must be a JSON object.")
    return data


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn :class:`APIError` and unexpected exceptions into JSON envelopes (no tracebacks)."""
    try:
        return await handler(request)
    except APIError as err:
        return err.response()
    except web.HTTPException as exc:
        if exc.status >= 400 and request.path.startswith("/api/"):
            return APIError(exc.status, exc.reason or "Error.", exc.text or "").response()
        raise
    except Exception as exc:
        if not request.path.startswith("/api/"):
            raise
        if is_database_unavailable(exc):
            # Not a bug: one line, no traceback, and a status that says "retry".
            log.warning(
                "admin API request failed: database unavailable",
                extra={"path": request.path, "error": f"{type(exc).__name__}: {exc}"},
            )
            return database_unavailable(
                "the gateway cannot reach its database right now; retry shortly"
            ).response()
        log.exception("admin API request failed", extra={"path": request.path})
        return APIError(500, "Internal error.", "see the gateway log").response()
