"""Amazon Bedrock (``type: bedrock``): settings, credentials and SigV4, request transforms,
the event-stream decoder, and the per-provider runtime (:class:`BedrockRuntime`)."""

from __future__ import annotations

import re

from yarl import URL

from aibridge.providers.bedrock.credentials import CredentialSource, build_credentials
from aibridge.providers.bedrock.settings import BedrockSettings

__all__ = ["BedrockRuntime"]

_REGION_IN_HOST = re.compile(r"\.([a-z]{2}(?:-gov)?-[a-z]+-\d)\.")


class BedrockRuntime:
    """What a built ``bedrock`` provider needs per request: the settings, the credential
    source (cached across requests), the SigV4 service and region."""

    __slots__ = ("credentials", "protocol", "region", "service", "settings")

    def __init__(self, settings: BedrockSettings, base_url: URL) -> None:
        self.settings = settings
        self.protocol = settings.protocol
        self.service = "bedrock-mantle" if settings.protocol == "mantle" else "bedrock"
        region = settings.region
        if region is None:
            # A base URL without a region setting (a VPC or FIPS endpoint): its host names it.
            match = _REGION_IN_HOST.search(f".{base_url.host or ''}.")
            region = match.group(1) if match else "us-east-1"
        self.region = region
        self.credentials: CredentialSource = build_credentials(settings)

    def map_model(self, client_model: str) -> str:
        """The model a request goes to (invoke maps it; mantle sends the client's name)."""
        if self.protocol == "mantle":
            return self.settings.models.get(client_model, client_model)
        return self.settings.map_model(client_model)
