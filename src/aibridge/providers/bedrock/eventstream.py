"""An incremental decoder for the AWS binary event stream (``application/vnd.amazon.eventstream``).

Bedrock's ``invoke-with-response-stream`` answers in this framing. Each message is::

    total length (u32 BE) | headers length (u32 BE) | prelude CRC32 (u32 BE)
    headers | payload | message CRC32 (u32 BE, over every byte before it)

and a header is ``name length (u8) | name | value type (u8) | value``.

:class:`EventStreamDecoder` is fed bytes as they arrive, split anywhere, and hands back every
message completed so far, so the relay can forward each event as soon as its last byte is
in. Both CRCs are checked and a message longer than the frame-size cap is refused as soon
as its prelude is read (before its bytes are buffered): a corrupt or hostile stream can
neither be misread nor make the gateway buffer without bound. Errors are
:class:`EventStreamError`; after one the decoder must not be fed again.
"""

from __future__ import annotations

import struct
import uuid
import zlib
from dataclasses import dataclass

__all__ = [
    "DEFAULT_MAX_FRAME_BYTES",
    "EventStreamDecoder",
    "EventStreamError",
    "Frame",
    "HeaderValue",
]

DEFAULT_MAX_FRAME_BYTES = 16 * 1024 * 1024
"""Default frame-size cap: Bedrock's chunks are a few hundred bytes; 16 MiB is far beyond any
real event and still bounds what one frame can make the gateway hold."""

_PRELUDE = struct.Struct(">II")
_PRELUDE_LEN = 12  # two lengths + prelude CRC
_MIN_MESSAGE = 16  # prelude + message CRC, no headers, no payload
_U16 = struct.Struct(">H")
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")

HeaderValue = bool | int | bytes | str | uuid.UUID
"""A decoded header value (timestamps are milliseconds since the epoch, as ints)."""


# Decoded header blocks by their bytes: Bedrock sends the same few blocks (``chunk`` event
# headers) on every frame, so each is parsed once. Bounded, since the bytes come from
# upstream; the cached dicts are shared, hence Frame.headers is read-only by contract.
_HEADER_CACHE: dict[bytes, dict[str, HeaderValue]] = {}
_HEADER_CACHE_MAX = 64


class EventStreamError(Exception):
    """The stream is not a valid event stream (bad CRC, bad lengths, bad header, too large)."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded message: its headers by name (shared between frames with the same
    header block: never mutate) and its raw payload."""

    headers: dict[str, HeaderValue]
    payload: bytes

    def header(self, name: str) -> str | None:
        """A string header's value (None when absent or not a string)."""
        value = self.headers.get(name)
        return value if isinstance(value, str) else None


def _decode_headers(data: bytes) -> dict[str, HeaderValue]:
    """Decode a message's header block; raises :class:`EventStreamError` on any overrun."""
    headers: dict[str, HeaderValue] = {}
    pos, end = 0, len(data)
    try:
        while pos < end:
            name_len = data[pos]
            pos += 1
            name = data[pos : pos + name_len].decode("utf-8")
            pos += name_len
            kind = data[pos]
            pos += 1
            value: HeaderValue
            if kind == 0:
                value = True
            elif kind == 1:
                value = False
            elif kind == 2:
                value = struct.unpack_from(">b", data, pos)[0]
                pos += 1
            elif kind == 3:
                value = _I16.unpack_from(data, pos)[0]
                pos += 2
            elif kind == 4:
                value = _I32.unpack_from(data, pos)[0]
                pos += 4
            elif kind in (5, 8):
                value = _I64.unpack_from(data, pos)[0]
                pos += 8
            elif kind in (6, 7):
                (length,) = _U16.unpack_from(data, pos)
                pos += 2
                raw = data[pos : pos + length]
                if len(raw) != length:
                    raise EventStreamError("event stream header value overruns its block")
                pos += length
                value = raw.decode("utf-8") if kind == 7 else bytes(raw)
            elif kind == 9:
                raw = data[pos : pos + 16]
                if len(raw) != 16:
                    raise EventStreamError("event stream header value overruns its block")
                value = uuid.UUID(bytes=bytes(raw))
                pos += 16
            else:
                raise EventStreamError(f"unknown event stream header type {kind}")
            if pos > end:
                raise EventStreamError("event stream header overruns its block")
            headers[name] = value
    except (IndexError, struct.error, UnicodeDecodeError) as exc:
        raise EventStreamError(f"malformed event stream header: {exc}") from exc
    return headers


class EventStreamDecoder:
    """Feed it bytes with :meth:`feed`; it returns the messages each feed completed.

    ``max_frame_bytes`` caps one message's total length. Not thread-safe; one per stream.
    """

    __slots__ = ("_buf", "_error", "_max")

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self._buf = bytearray()
        self._max = max_frame_bytes
        self._error: EventStreamError | None = None

    @property
    def error(self) -> EventStreamError | None:
        """The error found after the last frames :meth:`feed` returned (those frames were
        good and should be relayed first); the next :meth:`feed` raises it."""
        return self._error

    @property
    def pending(self) -> int:
        """Bytes held for a message not complete yet (0 at a clean end of stream)."""
        return len(self._buf)

    def feed(self, chunk: bytes) -> list[Frame]:
        """Add ``chunk``; every message it completed, in order.

        Raises :class:`EventStreamError` for a CRC mismatch, impossible lengths or a message
        longer than the cap (detected from the prelude, before its body is buffered).
        """
        if self._error is not None:
            raise self._error
        buf = self._buf
        buf += chunk
        frames: list[Frame] = []
        try:
            self._decode(frames)
        except EventStreamError as exc:
            if not frames:
                raise
            # Hand out the good frames that came before the bad one; report it next.
            self._error = exc
        return frames

    def _decode(self, frames: list[Frame]) -> None:
        buf = self._buf
        pos = 0
        size = len(buf)
        while size - pos >= _PRELUDE_LEN:
            total, headers_len = _PRELUDE.unpack_from(buf, pos)
            (prelude_crc,) = struct.unpack_from(">I", buf, pos + 8)
            if zlib.crc32(buf[pos : pos + 8]) != prelude_crc:
                raise EventStreamError("event stream prelude CRC mismatch")
            if total > self._max:
                raise EventStreamError(
                    f"event stream frame of {total} bytes exceeds the {self._max}-byte limit"
                )
            if total < _MIN_MESSAGE or headers_len > total - _MIN_MESSAGE:
                raise EventStreamError(
                    f"invalid event stream lengths (total {total}, headers {headers_len})"
                )
            if size - pos < total:
                break
            view = memoryview(buf)
            try:
                (message_crc,) = struct.unpack_from(">I", buf, pos + total - 4)
                if zlib.crc32(view[pos : pos + total - 4]) != message_crc:
                    raise EventStreamError("event stream message CRC mismatch")
                start = pos + _PRELUDE_LEN
                block = bytes(view[start : start + headers_len])
                headers = _HEADER_CACHE.get(block)
                if headers is None:
                    headers = _decode_headers(block)
                    if len(_HEADER_CACHE) < _HEADER_CACHE_MAX:
                        _HEADER_CACHE[block] = headers
                payload = bytes(view[start + headers_len : pos + total - 4])
            finally:
                view.release()
            frames.append(Frame(headers, payload))
            pos += total
        if pos:
            del buf[:pos]
