"""Just enough HTTP/1.1 for the proxy: bounded request heads and bodies, simple replies."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass


class BadRequest(Exception):
    """The client sent something that is not acceptable HTTP/1.1 (``status`` to answer)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class RequestHead:
    """A parsed request line and headers."""

    method: str
    target: str
    version: str
    headers: tuple[tuple[str, str], ...]

    def get(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive)."""
        lname = name.lower()
        for key, value in self.headers:
            if key.lower() == lname:
                return value
        return None

    @property
    def keep_alive(self) -> bool:
        """Whether the client wants the connection kept after this request."""
        tokens = {t.strip().lower() for t in (self.get("Connection") or "").split(",")}
        if self.version == "HTTP/1.0":
            return "keep-alive" in tokens
        return "close" not in tokens


async def read_head(
    reader: asyncio.StreamReader,
    timeout: float,  # noqa: ASYNC109
    *,
    idle_close: bool = False,
) -> RequestHead | None:
    """Read one request head within ``timeout`` seconds; None when the client closed the
    connection between requests, or (``idle_close``: between keep-alive requests) let it
    sit idle past ``timeout``, which ends it without a response that a client reusing the
    connection could take for its next request's. The reader's buffer limit bounds the
    head's size."""
    try:
        async with asyncio.timeout(timeout):
            raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial.strip():
            return None
        raise BadRequest("incomplete request head") from None
    except asyncio.LimitOverrunError:
        raise BadRequest("request head too large", 431) from None
    except TimeoutError:
        if idle_close:
            return None
        raise BadRequest("timed out reading the request head", 408) from None
    return parse_head(raw)


def parse_head(raw: bytes) -> RequestHead:
    """Parse ``request-line CRLF *(header CRLF) CRLF``."""
    lines = raw.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[0] or not parts[1] or not parts[2].startswith("HTTP/1."):
        raise BadRequest("malformed request line")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or " " in name:
            raise BadRequest("malformed header line")
        headers.append((name, value.strip()))
    return RequestHead(parts[0], parts[1], parts[2], tuple(headers))


async def read_body(
    reader: asyncio.StreamReader,
    head: RequestHead,
    *,
    max_bytes: int,
    timeout: float,  # noqa: ASYNC109
) -> bytes:
    """The request body (Content-Length or chunked), at most ``max_bytes``, read within
    ``timeout`` seconds."""
    te = (head.get("Transfer-Encoding") or "").lower()
    length = head.get("Content-Length")
    try:
        async with asyncio.timeout(timeout):
            if te:
                if te != "chunked":
                    raise BadRequest(f"unsupported Transfer-Encoding {te!r}", 501)
                return await _read_chunked(reader, max_bytes)
            if length is None:
                return b""
            if not length.isdigit():
                raise BadRequest("malformed Content-Length")
            n = int(length)
            if n > max_bytes:
                raise BadRequest(f"request body larger than {max_bytes} bytes", 413)
            return await reader.readexactly(n)
    except TimeoutError:
        raise BadRequest("timed out reading the request body", 408) from None
    except asyncio.IncompleteReadError:
        raise BadRequest("request body ended early") from None
    except asyncio.LimitOverrunError:
        raise BadRequest("chunk header too large") from None


async def _read_chunked(reader: asyncio.StreamReader, max_bytes: int) -> bytes:
    body = bytearray()
    while True:
        size_line = (await reader.readuntil(b"\r\n"))[:-2].split(b";", 1)[0].strip()
        try:
            size = int(size_line, 16)
        except ValueError:
            raise BadRequest("malformed chunk size") from None
        if size == 0:
            # Trailers (ignored) up to the empty line.
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass
            return bytes(body)
        if len(body) + size > max_bytes:
            raise BadRequest(f"request body larger than {max_bytes} bytes", 413)
        body += await reader.readexactly(size)
        if await reader.readexactly(2) != b"\r\n":
            raise BadRequest("malformed chunk")


def simple_response(
    status: int,
    reason: str,
    body: str,
    *,
    headers: tuple[tuple[str, str], ...] = (),
    close: bool = True,
    content_type: str = "text/plain; charset=utf-8",
) -> bytes:
    """A complete small response."""
    data = body.encode()
    lines = [f"HTTP/1.1 {status} {reason}", f"Content-Type: {content_type}"]
    lines += [f"{k}: {v}" for k, v in headers]
    lines.append(f"Content-Length: {len(data)}")
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + data
