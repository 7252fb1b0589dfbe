"""The event-stream decoder: fed in any split, CRC-checked, capped before buffering; it and
the fake's encoder agree with botocore's own implementation."""

from __future__ import annotations

import itertools
import struct
import zlib

import pytest
from botocore.eventstream import EventStreamBuffer
from hypothesis import given
from hypothesis import strategies as st

from aibridge.providers.bedrock.eventstream import EventStreamDecoder, EventStreamError
from aibridge.testing.fake_bedrock import chunk_frame, encode_frame, exception_frame

EVENTS = [{"type": "content_block_delta", "index": 0, "delta": {"text": f"w{i}"}} for i in range(5)]
STREAM = b"".join(chunk_frame(e) for e in EVENTS) + exception_frame("throttlingException", "slow")


def _decode_all(chunks: list[bytes]) -> list[tuple[dict[str, object], bytes]]:
    decoder = EventStreamDecoder()
    out = []
    for chunk in chunks:
        out += [(f.headers, f.payload) for f in decoder.feed(chunk)]
    assert decoder.pending == 0
    return out


def test_botocore_reads_the_fakes_frames_as_the_decoder_does() -> None:
    buffer = EventStreamBuffer()
    buffer.add_data(STREAM)
    theirs = [(dict(m.headers), m.payload) for m in buffer]
    assert _decode_all([STREAM]) == theirs
    assert theirs[-1][0][":message-type"] == "exception"


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=30))
def test_any_split_gives_the_same_frames(cuts: list[int]) -> None:
    points = sorted({0, len(STREAM), *cuts})
    chunks = [STREAM[a:b] for a, b in itertools.pairwise(points)]
    assert _decode_all(chunks) == _decode_all([STREAM])


def test_each_frame_is_returned_as_soon_as_its_last_byte_arrives() -> None:
    frame = chunk_frame(EVENTS[0])
    decoder = EventStreamDecoder()
    assert decoder.feed(frame[:-1]) == []
    assert len(decoder.feed(frame[-1:])) == 1


@pytest.mark.parametrize("where", ["prelude", "message"])
def test_a_crc_mismatch_is_refused(where: str) -> None:
    frame = bytearray(chunk_frame(EVENTS[0]))
    frame[9 if where == "prelude" else 20] ^= 0x01
    with pytest.raises(EventStreamError, match=f"{where} CRC mismatch"):
        EventStreamDecoder().feed(bytes(frame))


def test_an_oversized_frame_is_refused_from_its_prelude_alone() -> None:
    prelude = struct.pack(">II", 1 << 30, 0)
    prelude += struct.pack(">I", zlib.crc32(prelude))
    with pytest.raises(EventStreamError, match="exceeds the 1024-byte limit"):
        EventStreamDecoder(max_frame_bytes=1024).feed(prelude)


def test_good_frames_before_a_bad_one_are_handed_out_first() -> None:
    bad = bytearray(chunk_frame(EVENTS[1]))
    bad[-1] ^= 0x01
    decoder = EventStreamDecoder()
    frames = decoder.feed(chunk_frame(EVENTS[0]) + bytes(bad))
    assert len(frames) == 1
    assert decoder.error is not None
    with pytest.raises(EventStreamError):
        decoder.feed(b"")


def test_impossible_lengths_are_refused() -> None:
    prelude = struct.pack(">II", 20, 10)
    prelude += struct.pack(">I", zlib.crc32(prelude))
    with pytest.raises(EventStreamError, match="invalid event stream lengths"):
        EventStreamDecoder().feed(prelude + b"\0" * 8)


def test_header_values_of_every_kind() -> None:
    frame = encode_frame({":event-type": "chunk", "x": "é"}, b"{}")
    (decoded,) = EventStreamDecoder().feed(frame)
    assert decoded.header(":event-type") == "chunk" and decoded.header("x") == "é"
    assert decoded.payload == b"{}"
