"""The incremental SSE parser: framing, chunk boundaries, raw-byte fidelity, the encoder."""

from __future__ import annotations

import random

import orjson
import pytest

from aibridge.intercept.sse import SSEEvent, SSEParser, encode_event

ANTHROPIC_STREAM = (
    b"event: message_start\n"
    b'data: {"type":"message_start","message":{"id":"msg_1","usage":{"input_tokens":3}}}\n'
    b"\n"
    b"event: ping\n"
    b'data: {"type": "ping"}\n'
    b"\n"
    b"event: content_block_delta\n"
    b'data: {"type":"content_block_delta","index":0,'
    b'"delta":{"type":"text_delta","text":"h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80"}}\n'
    b"\n"
    b"event: message_stop\n"
    b'data: {"type":"message_stop"}\n'
    b"\n"
)


def parse_chunks(chunks: list[bytes], flush: bool = True) -> list[SSEEvent]:
    """Feed ``chunks`` one by one into a fresh parser and collect every event."""
    parser = SSEParser()
    events: list[SSEEvent] = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    if flush:
        events.extend(parser.flush())
    return events


def one_byte_at_a_time(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def summary(events: list[SSEEvent]) -> list[tuple[str | None, bytes, bool]]:
    return [(e.event, e.data, e.has_data) for e in events]


def test_parses_events_with_names_and_data() -> None:
    events = parse_chunks([ANTHROPIC_STREAM])
    assert [e.event for e in events] == [
        "message_start",
        "ping",
        "content_block_delta",
        "message_stop",
    ]
    assert orjson.loads(events[0].data)["message"]["id"] == "msg_1"
    assert orjson.loads(events[2].data)["delta"]["text"] == "héllo € 😀"
    assert all(e.terminated and e.has_data for e in events)
    # Each raw is exactly the event's own bytes, blank line included.
    assert events[1].raw == b'event: ping\ndata: {"type": "ping"}\n\n'
    assert b"".join(e.raw for e in events) == ANTHROPIC_STREAM


def test_one_byte_at_a_time_gives_same_events_and_exact_bytes() -> None:
    whole = parse_chunks([ANTHROPIC_STREAM])
    bytewise = parse_chunks(one_byte_at_a_time(ANTHROPIC_STREAM))
    assert bytewise == whole
    assert b"".join(e.raw for e in bytewise) == ANTHROPIC_STREAM


@pytest.mark.parametrize("eol", [b"\n", b"\r\n", b"\r"], ids=["lf", "crlf", "cr"])
def test_line_endings_are_equivalent_and_raw_is_preserved(eol: bytes) -> None:
    stream = ANTHROPIC_STREAM.replace(b"\n", eol)
    reference = summary(parse_chunks([ANTHROPIC_STREAM]))
    for chunks in ([stream], one_byte_at_a_time(stream)):
        events = parse_chunks(chunks)
        assert summary(events) == reference
        assert all(e.terminated for e in events)
        assert b"".join(e.raw for e in events) == stream
        assert events[-1].raw.endswith(eol + eol)


def test_crlf_split_between_cr_and_lf_stays_in_one_event() -> None:
    # Split right after each CR: the LF must still belong to the same event's raw bytes.
    chunks = [b"data: a\r", b"\n\r", b"\ndata: b\r", b"\n\r", b"\n"]
    assert b"".join(chunks) == b"data: a\r\n\r\ndata: b\r\n\r\n"
    events = parse_chunks(chunks, flush=False)
    assert [e.raw for e in events] == [b"data: a\r\n\r\n", b"data: b\r\n\r\n"]
    assert [e.data for e in events] == [b"a", b"b"]


def test_mixed_line_endings_in_one_stream_parse_and_keep_their_bytes() -> None:
    stream = b"event: x\rdata: 1\r\n\ndata: 2\n\r"
    events = parse_chunks(one_byte_at_a_time(stream))
    assert summary(events) == [("x", b"1", True), (None, b"2", True)]
    assert b"".join(e.raw for e in events) == stream


def test_random_chunkings_match_whole_parse() -> None:
    stream = (ANTHROPIC_STREAM * 3).replace(b"event: ping\n", b": keep-alive\nevent: ping\n")
    reference = parse_chunks([stream])
    rng = random.Random(1234)
    for _ in range(200):
        cuts = sorted(rng.sample(range(1, len(stream)), rng.randint(1, 40)))
        chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
        events = parse_chunks(chunks)
        assert events == reference
        assert b"".join(e.raw for e in events) == stream


def test_multi_line_data_is_joined_with_newlines() -> None:
    events = parse_chunks([b"data: first\ndata:second\ndata:  third\ndata\n\n"])
    # One optional space is stripped; a bare "data" field adds an empty line.
    assert events[0].data == b"first\nsecond\n third\n"


def test_utf8_char_split_across_chunks_is_reassembled() -> None:
    payload = '{"text":"日本語 😀"}'.encode()
    stream = b"data: " + payload + b"\n\n"
    split = stream.index(b"\xf0\x9f") + 1  # inside the 4-byte emoji
    events = parse_chunks([stream[:split], stream[split:]])
    assert len(events) == 1
    assert orjson.loads(events[0].data) == {"text": "日本語 😀"}


def test_comments_and_blank_lines_are_kept_as_dataless_events() -> None:
    stream = b": keep-alive\n\n\n: comment inside\nevent: e\ndata: d\n\n"
    events = parse_chunks([stream])
    assert summary(events) == [(None, b"", False), (None, b"", False), ("e", b"d", True)]
    assert [e.raw for e in events] == [
        b": keep-alive\n\n",
        b"\n",
        b": comment inside\nevent: e\ndata: d\n\n",
    ]


def test_event_with_name_but_no_data_is_not_dispatchable() -> None:
    events = parse_chunks([b"event: ping\n\n"])
    assert events[0].event == "ping"
    assert events[0].has_data is False


def test_id_and_retry_are_read_and_invalid_ones_ignored() -> None:
    stream = b"id: 42\nretry: 1500\ndata: x\n\nid: bad\x00id\nretry: soon\ndata: y\n\n"
    events = parse_chunks([stream])
    assert (events[0].id, events[0].retry) == ("42", 1500)
    # An id containing NUL and a non-numeric retry are ignored, as the spec says.
    assert (events[1].id, events[1].retry) == (None, None)


def test_unknown_fields_are_ignored() -> None:
    events = parse_chunks([b"foo: bar\ndata: x\n\n"])
    assert summary(events) == [(None, b"x", True)]


def test_bom_at_start_is_ignored_but_kept_in_raw() -> None:
    stream = b"\xef\xbb\xbfevent: a\ndata: 1\n\n"
    events = parse_chunks(one_byte_at_a_time(stream))
    assert summary(events) == [("a", b"1", True)]
    assert events[0].raw == stream


def test_feed_returns_events_as_soon_as_they_complete() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: 1\n") == []
    first = parser.feed(b"\ndata: 2")
    assert [e.data for e in first] == [b"1"]
    assert parser.feed(b"") == []
    assert [e.data for e in parser.feed(b"\n\n")] == [b"2"]
    assert parser.flush() == []


def test_flush_returns_unterminated_trailing_event() -> None:
    parser = SSEParser()
    events = parser.feed(b"data: 1\n\ndata: [DONE]\n")
    assert [e.data for e in events] == [b"1"]
    tail = parser.flush()
    assert len(tail) == 1
    assert tail[0].data == b"[DONE]"
    assert tail[0].terminated is False
    assert tail[0].raw == b"data: [DONE]\n"
    # The parser is reset: nothing more to flush.
    assert parser.flush() == []


def test_flush_without_final_newline_keeps_partial_line() -> None:
    events = parse_chunks([b'data: {"a":1}'])
    assert len(events) == 1
    assert (events[0].data, events[0].raw, events[0].terminated) == (
        b'{"a":1}',
        b'data: {"a":1}',
        False,
    )


def test_trailing_cr_is_held_until_next_byte_then_flush_ends_event() -> None:
    parser = SSEParser()
    # "\r" at the end could be the first half of "\r\n": the event is not emitted yet.
    assert parser.feed(b"data: a\r\r") == []
    tail = parser.flush()
    assert len(tail) == 1
    assert (tail[0].data, tail[0].raw, tail[0].terminated) == (b"a", b"data: a\r\r", True)


def test_a_large_event_across_many_chunks_is_one_event_with_its_exact_bytes() -> None:
    payload = b"x" * 300_000
    stream = b"event: big\ndata: " + payload + b"\n\n"
    chunks = [stream[i : i + 997] for i in range(0, len(stream), 997)]
    events = parse_chunks(chunks)
    assert len(events) == 1
    assert events[0].data == payload
    assert events[0].raw == stream


def test_encode_event_round_trips_through_parser() -> None:
    encoded = encode_event("line one\nline two\r\nline three", event="note")
    assert encoded == b"event: note\ndata: line one\ndata: line two\ndata: line three\n\n"
    events = parse_chunks([encoded])
    assert summary(events) == [("note", b"line one\nline two\nline three", True)]
    assert encode_event(b"{}") == b"data: {}\n\n"
    with pytest.raises(ValueError):
        encode_event("x", event="bad\nname")
