"""The invoke body transforms, per model family (reference §2.8 tables)."""

from __future__ import annotations

import orjson
import pytest

from aibridge.providers.bedrock.settings import BedrockSettings, parse_bedrock
from aibridge.providers.bedrock.transform import TransformError, invoke_body, invoke_path


def _run(body: dict[str, object], model: str, betas: str = "") -> dict[str, object]:
    out: dict[str, object] = orjson.loads(invoke_body(orjson.dumps(body), model, [betas]))
    return out


def test_adaptive_with_a_low_budget_becomes_disabled() -> None:
    out = _run(
        {"max_tokens": 2000, "thinking": {"type": "adaptive"}, "output_config": {"effort": "low"}},
        "anthropic.claude-sonnet-4-5",
    )
    assert out["thinking"] == {"type": "disabled"}
    assert "output_config" not in out  # no effort beta survived


def test_native_adaptive_models_keep_adaptive() -> None:
    out = _run({"max_tokens": 2000, "thinking": {"type": "adaptive"}}, "anthropic.claude-opus-4-6")
    assert out["thinking"] == {"type": "adaptive"}


def test_adaptive_only_models_turn_enabled_into_adaptive_with_an_effort() -> None:
    out = _run(
        {
            "max_tokens": 32000,
            "thinking": {"type": "enabled", "budget_tokens": 16000},
            "output_config": {"format": {"type": "json"}},
        },
        "anthropic.claude-opus-4-7",
    )
    assert out["thinking"] == {"type": "adaptive"}
    assert out["output_config"] == {"effort": "medium"}


def test_absent_effort_means_high() -> None:
    body = {"max_tokens": 10000, "thinking": {"type": "adaptive"}}
    out = _run(body, "anthropic.claude-haiku-4-5")
    assert out["thinking"] == {"type": "enabled", "budget_tokens": 8000}


def test_a_body_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(TransformError):
        invoke_body(b"[1]", "m", [])


def test_the_model_is_percent_encoded_in_the_path() -> None:
    arn = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.x"
    assert invoke_path(arn, True) == (
        "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Ainference-profile%2Fus.anthropic.x"
        "/invoke-with-response-stream"
    )


def test_model_mapping_order() -> None:
    settings = BedrockSettings(model="big", small_fast_model="small", models={"claude-x": "mapped"})
    assert settings.map_model("claude-x") == "mapped"
    assert settings.map_model("claude-3-5-haiku-latest") == "small"
    assert settings.map_model("claude-sonnet-4-5") == "big"


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ({"model": "m", "access_key_id": "AKIA1"}, "must be set together"),
        ({"model": "m", "role_arn": "nope", "region": "us-east-1"}, "is not a valid ARN"),
        (
            {"model": "m", "role_arn": "arn:aws:s3:::bucket", "region": "us-east-1"},
            'must be an IAM ARN, but resolved to service "s3"',
        ),
        (
            {"model": "m", "role_arn": "arn:aws:iam::123456789012:user/x", "region": "us-east-1"},
            'must reference an IAM role, but resolved to resource "user/x"',
        ),
        ({"region": "us-east-1"}, "model is required"),
        ({"model": "m", "protocol": "grpc"}, 'protocol must be "invoke" or "mantle"'),
        ({"model": "m", "region": "mars"}, "is not an AWS region"),
        ({"model": "m", "colour": "red"}, "unknown setting"),
    ],
)
def test_validation_messages(block: dict[str, object], message: str) -> None:
    errors = parse_bedrock(block)
    assert isinstance(errors, list)
    assert any(message in e.detail for e in errors), errors
