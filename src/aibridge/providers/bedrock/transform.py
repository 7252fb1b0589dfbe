"""The request transforms a Messages body goes through on its way to Bedrock ``invoke``.

Bedrock's Anthropic models take the Messages body with differences (reference §2.8),
applied here as data tables rather than code paths:

* ``model`` and ``stream`` leave the body for the path ``/model/{id}/invoke`` or
  ``/model/{id}/invoke-with-response-stream``; the body gets
  ``anthropic_version: bedrock-2023-05-31``;
* the ``anthropic-beta`` header is filtered to the flags Bedrock accepts (some only for
  some models) and moved into the body as ``anthropic_beta``;
* fields Bedrock refuses are stripped: always ``metadata``, ``service_tier``,
  ``container``, ``inference_geo``; ``output_config`` and ``context_management`` unless
  their beta flag survived;
* adaptive thinking is converted per model family: models without it get a budget
  derived from ``max_tokens`` and the effort, adaptive-only models get ``enabled``
  turned into ``adaptive`` with an effort derived from the budget.
"""

from __future__ import annotations

import math
import urllib.parse
from collections.abc import Iterable
from typing import Any

import orjson

__all__ = [
    "ALLOWED_BETAS",
    "BEDROCK_VERSION",
    "TransformError",
    "invoke_body",
    "invoke_path",
]

BEDROCK_VERSION = "bedrock-2023-05-31"
ALWAYS_STRIPPED = ("metadata", "service_tier", "container", "inference_geo")

EFFORT_BETA = "effort-2025-11-24"
CONTEXT_MANAGEMENT_BETA = "context-management-2025-06-27"
ALLOWED_BETAS = frozenset(
    {
        "computer-use-2025-01-24",
        "token-efficient-tools-2025-02-19",
        "interleaved-thinking-2025-05-14",
        "output-128k-2025-02-19",
        "dev-full-thinking-2025-05-14",
        "context-1m-2025-08-07",
        CONTEXT_MANAGEMENT_BETA,
        EFFORT_BETA,
        "tool-search-tool-2025-10-19",
        "tool-examples-2025-10-29",
    }
)
# Flags Bedrock accepts only for some models: flag -> model id fragments.
BETA_MODELS: dict[str, tuple[str, ...]] = {
    EFFORT_BETA: ("opus-4-5",),
    CONTEXT_MANAGEMENT_BETA: ("sonnet-4-5", "haiku-4-5"),
}
# Body fields that need a beta flag on Bedrock: field -> flag.
BETA_FIELDS = {"output_config": EFFORT_BETA, "context_management": CONTEXT_MANAGEMENT_BETA}
# Model families with native adaptive thinking, and those with nothing else.
NATIVE_ADAPTIVE = ("anthropic.claude-opus-4-6", "anthropic.claude-sonnet-4-6")
ADAPTIVE_ONLY = ("opus-4-7", "opus-4-8", "sonnet-5")
# Share of max_tokens given to thinking, by effort (absent: high).
EFFORT_RATIO = {"low": 0.2, "medium": 0.5, "high": 0.8, "max": 0.95}
MIN_THINKING_BUDGET = 1024


class TransformError(ValueError):
    """The body cannot be sent to Bedrock (a 400 with this message)."""


def _has(model: str, fragments: Iterable[str]) -> bool:
    return any(f in model for f in fragments)


def beta_flags(header_values: Iterable[str], model: str) -> list[str]:
    """The client's ``anthropic-beta`` flags Bedrock accepts for ``model``, in order, once."""
    out: list[str] = []
    for value in header_values:
        for flag in value.split(","):
            flag = flag.strip()
            if not flag or flag in out or flag not in ALLOWED_BETAS:
                continue
            only_for = BETA_MODELS.get(flag)
            if only_for is not None and not _has(model, only_for):
                continue
            out.append(flag)
    return out


def _effort_from_ratio(ratio: float) -> str:
    """The effort whose share of ``max_tokens`` is nearest to ``ratio`` (16000/32000 → medium)."""
    return min(EFFORT_RATIO, key=lambda e: abs(EFFORT_RATIO[e] - ratio))


def _convert_thinking(body: dict[str, Any], model: str) -> None:
    thinking = body.get("thinking")
    if not isinstance(thinking, dict):
        return
    kind = thinking.get("type")
    if _has(model, ADAPTIVE_ONLY):
        if kind == "enabled":
            budget, max_tokens = thinking.get("budget_tokens"), body.get("max_tokens")
            body["thinking"] = {"type": "adaptive"}
            if isinstance(budget, int) and isinstance(max_tokens, int) and max_tokens > 0:
                config = body.get("output_config")
                config = dict(config) if isinstance(config, dict) else {}
                config.setdefault("effort", _effort_from_ratio(budget / max_tokens))
                body["output_config"] = config
        return
    if kind != "adaptive" or _has(model, NATIVE_ADAPTIVE):
        return
    config = body.get("output_config")
    effort = config.get("effort") if isinstance(config, dict) else None
    ratio = EFFORT_RATIO.get(effort if isinstance(effort, str) else "high", EFFORT_RATIO["high"])
    max_tokens = body.get("max_tokens")
    budget = math.floor(max_tokens * ratio) if isinstance(max_tokens, int) else 0
    body["thinking"] = (
        {"type": "enabled", "budget_tokens": budget}
        if budget >= MIN_THINKING_BUDGET
        else {"type": "disabled"}
    )


def invoke_body(body: bytes, model: str, betas_header: Iterable[str]) -> bytes:
    """The Bedrock ``invoke`` body for a client's Messages ``body`` sent to ``model``."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise TransformError(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise TransformError("request body must be a JSON object")
    obj.pop("model", None)
    obj.pop("stream", None)
    for name in ALWAYS_STRIPPED:
        obj.pop(name, None)
    betas = beta_flags(betas_header, model)
    existing = obj.get("anthropic_beta")
    if isinstance(existing, list):
        betas = beta_flags([",".join(b for b in existing if isinstance(b, str)), *betas], model)
    _convert_thinking(obj, model)
    adaptive_only = _has(model, ADAPTIVE_ONLY)
    for name, flag in BETA_FIELDS.items():
        if name not in obj:
            continue
        if name == "output_config" and adaptive_only:
            # Kept for the effort, which these models read; the format they refuse.
            config = obj[name]
            if isinstance(config, dict) and "format" in config:
                obj[name] = {k: v for k, v in config.items() if k != "format"}
            continue
        if flag not in betas:
            del obj[name]
    if betas:
        obj["anthropic_beta"] = betas
    else:
        obj.pop("anthropic_beta", None)
    obj.setdefault("anthropic_version", BEDROCK_VERSION)
    return orjson.dumps(obj)


def invoke_path(model: str, stream: bool) -> str:
    """The (percent-encoded) Bedrock runtime path for ``model``."""
    quoted = urllib.parse.quote(model, safe="")
    return f"/model/{quoted}/{'invoke-with-response-stream' if stream else 'invoke'}"
