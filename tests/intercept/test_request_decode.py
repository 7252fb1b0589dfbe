"""Partial request decoding (model, stream, prompt…) and the Chat ``include_usage`` edit."""

from __future__ import annotations

from typing import Any

import msgspec
import orjson
import pytest

from aibridge.intercept.api import api_for
from aibridge.intercept.chat.request import decode_chat_request, ensure_include_usage
from aibridge.intercept.messages.request import decode_messages_request
from aibridge.intercept.request import RequestDecodeError
from aibridge.intercept.responses.request import decode_responses_request
from aibridge.providers.base import APIName


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


# --- Anthropic Messages --------------------------------------------------------------------


def test_messages_decoding_reads_model_stream_user_id_and_a_string_prompt() -> None:
    body = dumps(
        {
            "model": "claude-sonnet-4-5",
            "max_tokens": 1024,
            "stream": True,
            "metadata": {"user_id": "user_abc_account_x_session_1234"},
            "system": [{"type": "text", "text": "You are Claude Code."}],
            "messages": [
                {"role": "user", "content": "first question"},
                {"role": "assistant", "content": "answer"},
                {"role": "user", "content": "second question"},
            ],
        }
    )
    info = decode_messages_request(body)
    assert info.api == "messages"
    assert info.model == "claude-sonnet-4-5"
    assert info.stream is True
    assert info.user_id == "user_abc_account_x_session_1234"
    assert info.prompt == "second question"
    assert info.correlating_tool_call_id is None


def test_messages_prompt_is_last_text_block_of_last_user_message() -> None:
    body = dumps(
        {
            "model": "m",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "<system-reminder>ctx</system-reminder>"},
                        {"type": "image", "source": {"type": "base64", "data": "AAAA"}},
                        {"type": "text", "text": "fix the bug", "cache_control": {"type": "x"}},
                        {"type": "document", "source": {"type": "text", "data": "doc"}},
                    ],
                }
            ],
        }
    )
    info = decode_messages_request(body)
    assert info.prompt == "fix the bug"
    assert info.stream is False
    assert info.user_id is None


def test_messages_tool_result_only_is_not_a_prompt_but_correlates() -> None:
    body = dumps(
        {
            "model": "m",
            "messages": [
                {"role": "user", "content": "do it"},
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "toolu_1", "name": "x", "input": {}}],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "toolu_0", "content": "a"},
                        {
                            "type": "tool_result",
                            "tool_use_id": "toolu_1",
                            "content": [{"type": "text", "text": "not a prompt"}],
                        },
                    ],
                },
            ],
        }
    )
    info = decode_messages_request(body)
    assert info.prompt is None
    assert info.correlating_tool_call_id == "toolu_1"


def test_messages_last_message_from_assistant_has_no_prompt() -> None:
    body = dumps(
        {
            "model": "m",
            "messages": [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "prefill"},
            ],
        }
    )
    assert decode_messages_request(body).prompt is None


def test_messages_unexpected_last_message_shape_gives_no_prompt_not_an_error() -> None:
    body = dumps({"model": "m", "messages": [{"role": "user", "content": 42}]})
    info = decode_messages_request(body)
    assert info.prompt is None
    assert info.model == "m"


def test_messages_only_the_last_message_is_decoded() -> None:
    # Earlier messages may hold anything; they are validated as JSON but never inspected.
    body = dumps(
        {
            "model": "m",
            "messages": [{"role": 5, "content": {"odd": True}}, {"role": "user", "content": "ok"}],
        }
    )
    assert decode_messages_request(body).prompt == "ok"


# --- OpenAI Chat ---------------------------------------------------------------------------


def test_chat_decoding_reads_model_stream_and_joins_text_parts_into_the_prompt() -> None:
    body = dumps(
        {
            "model": "gpt-4o",
            "stream": True,
            "stream_options": {"include_usage": False},
            "messages": [
                {"role": "system", "content": "sys"},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "look at this"},
                        {"type": "image_url", "image_url": {"url": "data:..."}},
                        {"type": "text", "text": "what is it?"},
                    ],
                },
            ],
        }
    )
    info = decode_chat_request(body)
    assert (info.api, info.model, info.stream) == ("chat", "gpt-4o", True)
    assert info.include_usage is False
    assert info.prompt == "what is it?"


def test_chat_string_prompt_and_missing_stream_options() -> None:
    body = dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
    info = decode_chat_request(body)
    assert info.prompt == "hi"
    assert info.include_usage is None
    assert info.stream is False


def test_chat_tool_message_last_correlates_and_is_not_a_prompt() -> None:
    body = dumps(
        {
            "model": "gpt-4o",
            "messages": [
                {"role": "user", "content": "run it"},
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "f", "arguments": "{}"},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "result"},
            ],
        }
    )
    info = decode_chat_request(body)
    assert info.prompt is None
    assert info.correlating_tool_call_id == "call_1"


# --- OpenAI Responses ----------------------------------------------------------------------


def test_a_responses_string_input_is_the_prompt() -> None:
    info = decode_responses_request(dumps({"model": "gpt-5", "input": "hello", "stream": True}))
    assert (info.api, info.model, info.stream, info.prompt) == ("responses", "gpt-5", True, "hello")
    assert info.background is False


def test_responses_last_user_item_input_text_parts_joined() -> None:
    body = dumps(
        {
            "model": "gpt-5",
            "background": True,
            "input": [
                {"type": "message", "role": "developer", "content": "rules"},
                {
                    "type": "message",
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "<env>cwd</env>"},
                        {"type": "input_image", "image_url": "data:..."},
                        {"type": "input_text", "text": "refactor this"},
                    ],
                },
            ],
        }
    )
    info = decode_responses_request(body)
    assert info.prompt == "<env>cwd</env>\nrefactor this"
    assert info.background is True


def test_responses_role_only_item_with_string_content() -> None:
    body = dumps({"model": "gpt-5", "input": [{"role": "user", "content": "short"}]})
    assert decode_responses_request(body).prompt == "short"


def test_responses_function_call_output_last_correlates() -> None:
    body = dumps(
        {
            "model": "gpt-5",
            "input": [
                {"role": "user", "content": "go"},
                {
                    "type": "function_call",
                    "call_id": "call_7",
                    "name": "shell",
                    "arguments": "{}",
                },
                {"type": "function_call_output", "call_id": "call_7", "output": "ok"},
            ],
        }
    )
    info = decode_responses_request(body)
    assert info.prompt is None
    assert info.correlating_tool_call_id == "call_7"


def test_each_api_decodes_with_its_own_decoder() -> None:
    body = dumps({"model": "x", "messages": [{"role": "user", "content": "p"}], "input": "i"})
    assert api_for("messages").decode(body).api == "messages"
    assert api_for("chat").decode(body).api == "chat"
    assert api_for("responses").decode(body).prompt == "i"


# --- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"model": 5, "messages": []}', "model must be a string"),
        (b'{"model": "m", "stream": "yes"}', "stream must be a boolean"),
        (b'{"model": "m", "messages": {"role": "user"}}', "messages must be an array"),
        (b'{"model": "m", "metadata": {"user_id": 1}}', "metadata.user_id must be a string"),
        (b"[1, 2]", "body must be an object, not array"),
    ],
)
def test_a_messages_field_of_the_wrong_type_is_a_decode_error_naming_it(
    body: bytes, message: str
) -> None:
    with pytest.raises(RequestDecodeError) as exc_info:
        decode_messages_request(body)
    assert str(exc_info.value) == message


def test_chat_and_responses_fields_of_the_wrong_type_are_decode_errors_naming_them() -> None:
    with pytest.raises(
        RequestDecodeError, match=r"^stream_options\.include_usage must be a boolean$"
    ):
        decode_chat_request(b'{"model": "m", "stream_options": {"include_usage": 1}}')
    with pytest.raises(RequestDecodeError, match=r"^input must be a string or an array$"):
        decode_responses_request(b'{"model": "m", "input": 3}')


@pytest.mark.parametrize("body", [b'{"model": "m", ', b"not json", b'{"model": "m"} trailing'])
def test_a_body_that_is_not_json_is_a_decode_error(body: bytes) -> None:
    with pytest.raises(RequestDecodeError, match=r"^body is not valid JSON: "):
        decode_chat_request(body)


def test_an_empty_body_is_a_decode_error() -> None:
    with pytest.raises(RequestDecodeError, match="body is empty"):
        decode_responses_request(b"  ")


# --- the include_usage edit --------------------------------------------------------------

# Deliberately odd formatting: spacing, key order, escapes and non-ASCII must survive as bytes.
ORIGINAL = (
    b'{"model" : "gpt-4o",\n  "messages": [ {"role":"user", "content":"caf\\u00e9 \xe2\x82\xac"} ],'
    b'\n  "temperature": 0.50, "stream": true,\n  "tools": [{"type": "function", "x": 1.0e3}] }'
)


def test_include_usage_edit_preserves_other_members_bytes_exactly() -> None:
    out = ensure_include_usage(ORIGINAL)
    members = msgspec.json.decode(out, type=dict[str, msgspec.Raw])
    assert list(members) == [
        "model",
        "messages",
        "temperature",
        "stream",
        "tools",
        "stream_options",
    ]
    assert bytes(members["messages"]) == b'[ {"role":"user", "content":"caf\\u00e9 \xe2\x82\xac"} ]'
    assert bytes(members["tools"]) == b'[{"type": "function", "x": 1.0e3}]'
    assert bytes(members["model"]) == b'"gpt-4o"'
    assert bytes(members["temperature"]) == b"0.50"
    assert bytes(members["stream_options"]) == b'{"include_usage":true}'
    # And every untouched member's raw bytes occur verbatim in the output.
    for raw in (b'[ {"role":"user", "content":"caf\\u00e9 \xe2\x82\xac"} ]', b"1.0e3"):
        assert raw in out


def test_ensure_include_usage_adds_or_merges_stream_options() -> None:
    out = ensure_include_usage(ORIGINAL)
    assert orjson.loads(out)["stream_options"] == {"include_usage": True}
    assert decode_chat_request(out).include_usage is True
    existing = (
        b'{"model":"m","stream_options":{"include_obfuscation": false,"include_usage":false}}'
    )
    merged = orjson.loads(ensure_include_usage(existing))["stream_options"]
    assert merged == {"include_obfuscation": False, "include_usage": True}
    nulled = orjson.loads(ensure_include_usage(b'{"model":"m","stream_options":null}'))
    assert nulled["stream_options"] == {"include_usage": True}


def test_include_usage_edit_rejects_non_objects() -> None:
    with pytest.raises(RequestDecodeError, match=r"^stream_options must be a JSON object"):
        ensure_include_usage(b'{"stream_options": [1]}')
    with pytest.raises(RequestDecodeError, match=r"^body must be a JSON object"):
        ensure_include_usage(b"[]")


# --- hostile nesting -----------------------------------------------------------------------

DEEP = b"[" * 20_000 + b"]" * 20_000


@pytest.mark.parametrize("api", ["messages", "chat", "responses"])
def test_deep_nesting_anywhere_is_a_decode_error_not_a_crash(api: APIName) -> None:
    for body in (
        b'{"model":"m","messages":' + DEEP + b',"input":"x"}',
        b'{"model":"m","x_unknown":' + DEEP + b"}",
        b'{"model":"m","messages":[' + DEEP + b'],"input":[' + DEEP + b"]}",
    ):
        with pytest.raises(RequestDecodeError, match="nests JSON too deeply"):
            api_for(api).decode(body)


def test_body_edits_refuse_deep_nesting() -> None:
    deep_member = b'{"model":"m","stream_options":null,"tools":' + DEEP + b"}"
    with pytest.raises(RequestDecodeError, match="nests JSON too deeply"):
        ensure_include_usage(deep_member)
