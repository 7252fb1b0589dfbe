"""The cheap paths of log redaction mask exactly what the full ones do.

* :func:`~aibridge.logredact.may_hold_shape` (the substring pre-check that spares most
  lines the shape regex) never says False for a text the regex would change: checked on
  generated texts built from the pattern's own keywords, separators and key shapes, in
  mixed case and with non-ASCII look-alikes.
* The access line's flat-field path (``telemetry.FLAT_FIELDS``: each value masked on its
  own, no pass over the whole line) writes, for lines with secrets in every client-sent
  field, the same line as the whole-line path, in JSON and in text.
"""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Iterator

import orjson
import pytest

from aibridge.governance.prices import PICO_PER_USD, usd_from_pico
from aibridge.logredact import _SHAPES, _mask_shape, may_hold_shape, redact, remember_secret
from aibridge.server import accesslog
from aibridge.server.accesslog import AccessEntry
from aibridge.telemetry import FLAT_FIELDS, JSONFormatter, TextFormatter

PIECES = [
    "Authorization", "authorization", "AUTHORIZATION", "api-key", "API_KEY", "x-api-key",
    "token", "Token", "session_token", "secret", "Secret_Access_Key", "password", "PassWord",
    "Bearer ", "bearer ", "BEARER ", "aib-", "AIB-", "sk-", "SK-", "=", ":", ": ", '"', "'",
    " ", ",", ";", "&", "}", "\\", "abc", "abcdefgh12345678", "sk-proj-abcdefghijklmnop",
    "aib-0a1b2c3d-AAAAbbbbCCCC", "_tokens", "max_tokens", '"input_tokens":11', "x", "-",
    "/v1/chat/completions", "gpt-4.1", "tOkEn", "pa\u017f\u017fword", "\u212aey", "é", "\n",
]  # fmt: skip


def full(text: str) -> str:
    """What redaction did before the pre-check: the shape regex on every text."""
    return _SHAPES.sub(_mask_shape, text)


def test_the_pre_check_never_skips_a_text_the_pattern_changes() -> None:
    rng = random.Random(9)
    skipped = 0
    for _ in range(30_000):
        text = "".join(rng.choice(PIECES) for _ in range(rng.randint(1, 8)))
        if not may_hold_shape(text):
            skipped += 1
            assert full(text) == text, text
        assert redact(text) == full(text), text
    # And it does spare the regex: many of these texts hold no trigger at all.
    assert skipped > 1_000


@pytest.mark.parametrize(
    "text",
    [
        "POST /oa/v1/chat/completions 200",
        "gpt-4.1-mini",
        '{"max_tokens": 100, "input_tokens": 11}',
        "pa\u017f\u017fword=hunter2hunter2",
    ],
)
def test_the_pre_check_and_the_pattern_agree_on_plain_and_lookalike_text(text: str) -> None:
    assert redact(text) == full(text)


# ---------------------------------------------------------------------------------------
# The access line's flat fields
# ---------------------------------------------------------------------------------------

KNOWN = "opaque-provider-credential-4242"
CLIENT_KEY = "sk-client-own-key-abcdefgh9876"
GATEWAY_KEY = "aib-0a1b2c3d4e5f-AAAAbbbbCCCCddddEEEEffff0000"


class _Resource:
    canonical = "/{name}/{tail}"


class _Route:
    resource = _Resource()


class _MatchInfo:
    route = _Route()


class _Request(dict[object, object]):
    """What the access line reads of a request."""

    def __init__(self, method: str, path: str) -> None:
        super().__init__()
        self.method = method
        self.path = path
        self.match_info = _MatchInfo()


@pytest.fixture
def access_records() -> Iterator[list[logging.LogRecord]]:
    """The records the access logger hands its handlers."""
    logger = logging.getLogger(accesslog.ACCESS_LOGGER)
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    saved = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


def slow_copy(record: logging.LogRecord) -> logging.LogRecord:
    """The same record without its flat-field marker (the whole-line path)."""
    copy = logging.makeLogRecord(dict(record.__dict__))
    del copy.__dict__[FLAT_FIELDS]
    return copy


@pytest.mark.parametrize("formatter", [JSONFormatter(), TextFormatter()], ids=["json", "text"])
def test_the_flat_access_line_masks_what_the_whole_line_path_masks(
    access_records: list[logging.LogRecord], formatter: logging.Formatter
) -> None:
    remember_secret(KNOWN)
    secrets = (KNOWN, CLIENT_KEY, GATEWAY_KEY)
    cases = [
        ("POST", "/oa/v1/chat/completions", "gpt-4.1", "dev"),
        ("POST", f"/oa/{CLIENT_KEY}/v1/chat/completions", f"model {KNOWN}", GATEWAY_KEY),
        ("GET", f"/oa/v1/models/Bearer {KNOWN}", f"token={CLIENT_KEY}", f"password: {KNOWN}"),
        ("POST", "/oa/v1/messages/count_tokens", "claude-sonnet-4", "x-api-key"),
    ]
    for method, path, model, username in cases:
        entry = AccessEntry(request_id=uuid.uuid4().hex, provider="oa", model=model)
        entry.actor = accesslog.Actor(uuid.uuid4(), username, "member", "k1")
        accesslog._write(_Request(method, path), entry, 200, 0.0123)  # type: ignore[arg-type]
    assert len(access_records) == len(cases)
    for (_method, path, _model, _user), record in zip(cases, access_records, strict=True):
        assert FLAT_FIELDS in record.__dict__
        fast, slow = formatter.format(record), formatter.format(slow_copy(record))
        for secret in secrets:
            assert secret not in fast, (secret, fast)
            assert orjson.dumps(secret).decode()[1:-1] not in fast
        if not any(secret in path for secret in secrets) and not any(
            secret in str(record.__dict__[f]) for f in ("model", "user") for secret in secrets
        ):
            # Nothing to mask: the same line both ways (the time is to the second on both).
            assert fast == slow
        else:
            # Masked, with the hint the rest of the gateway shows. (The whole-line path
            # may mask a hint again, e.g. "token=sk-…9876" → "token=…****".)
            assert "…" in fast


def test_a_flat_field_that_is_not_a_plain_value_takes_the_whole_line_path() -> None:
    record = logging.makeLogRecord({"name": "x", "msg": "m", "levelno": 20, "levelname": "INFO"})
    fields = {"detail": {"nested": "sk-abcdefgh12345678"}}
    record.__dict__.update(fields)
    record.__dict__[FLAT_FIELDS] = (fields, frozenset())
    assert "abcdefgh12345678" not in JSONFormatter().format(record)
    assert "abcdefgh12345678" not in TextFormatter().format(record)


def test_the_access_line_cost_is_the_float_of_the_exact_decimal() -> None:
    rng = random.Random(3)
    for _ in range(20_000):
        pusd = rng.randrange(0, 10 ** rng.randrange(1, 20))
        assert pusd / PICO_PER_USD == float(usd_from_pico(pusd))
