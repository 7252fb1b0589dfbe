"""A scripted fake LLM upstream (Anthropic Messages, OpenAI Chat Completions, OpenAI Responses).

Used by the test suite, to test the gateway's relay against realistic wire formats, and by
the README demo (``aibridge fake-upstream``)::

    async with FakeLLM().serve() as fake:
        fake.enqueue(Scenario.tool_call())
        ...  # point a client or the gateway at fake.url (fake.openai_url for OpenAI)
        assert fake.requests[0].headers["x-api-key"] == "sk-ant-test"
"""

from aibridge.fakellm.scenario import (
    KEYWORDS,
    Kind,
    Scenario,
    ToolCall,
    Usage,
    scenario_from_keyword,
)
from aibridge.fakellm.server import FakeLLM, RecordedRequest

__all__ = [
    "KEYWORDS",
    "FakeLLM",
    "Kind",
    "RecordedRequest",
    "Scenario",
    "ToolCall",
    "Usage",
    "scenario_from_keyword",
]
