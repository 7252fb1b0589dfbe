"""A scripted fake LLM upstream (Anthropic Messages, OpenAI Chat Completions, OpenAI Responses).

Used by the test suite, to test the gateway's relay against realistic wire formats, and by
the README demo (``aibridge fake-upstream``)::

    async with FakeLLM().serve() as fake:
        fake.enqueue(Scenario.tool_call())
        ...  # point a client or the gateway at fake.url (fake.openai_url for OpenAI)
        assert fake.requests[0].headers["x-api-key"] == "sk-ant-test"

Captured exchanges (``tests/fixtures/<api>/*.txt``, see :mod:`aibridge.fakellm.exchange`)
are replayed byte for byte with ``Scenario.fixture(path)`` or, with ``FakeLLM(fixtures=dir)``,
a ``scenario:fixture:<api>/<name>`` keyword.
"""

from aibridge.fakellm.exchange import Exchange, ExchangeFormatError, load_exchange, load_exchanges
from aibridge.fakellm.request_log import RecordedRequest
from aibridge.fakellm.scenario import (
    KEYWORDS,
    Kind,
    Scenario,
    ToolCall,
    Usage,
    scenario_from_keyword,
)
from aibridge.fakellm.server import FakeLLM

__all__ = [
    "KEYWORDS",
    "Exchange",
    "ExchangeFormatError",
    "FakeLLM",
    "Kind",
    "RecordedRequest",
    "Scenario",
    "ToolCall",
    "Usage",
    "load_exchange",
    "load_exchanges",
    "scenario_from_keyword",
]
