"""AWS credentials for a ``bedrock`` provider, and SigV4 signing with botocore.

Three sources, picked from the settings:

* static keys (``access_key_id`` + ``secret_access_key`` [+ ``session_token``]);
* the standard AWS credential chain (environment, shared profile, container and instance
  roles), resolved by botocore in a worker thread (it may read files or call the instance
  metadata service) and refreshed there when botocore says it is due;
* either of those as the base for STS ``AssumeRole`` (``role_arn`` [+ ``external_id``]),
  called over the gateway's own HTTP sessions, cached and refreshed
  :data:`REFRESH_MARGIN` before expiry (one refresh at a time).

Signing uses botocore's ``SigV4Auth`` over exactly the headers the gateway sends, so what
is signed is what goes on the wire. Nothing here is hand-written crypto.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any, Protocol
from xml.etree import ElementTree

import aiohttp
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, ReadOnlyCredentials
from yarl import URL

from aibridge.providers.bedrock.settings import BedrockSettings
from aibridge.secrets_mask import mask_secret

__all__ = [
    "CHAIN_HINT",
    "AssumedRoleCredentials",
    "ChainCredentials",
    "CredentialError",
    "CredentialSource",
    "StaticCredentials",
    "build_credentials",
    "chain_available",
    "sign_headers",
]

CHAIN_HINT = "<aws chain>"
"""The credential hint recorded when the AWS credential chain signs the requests."""
REFRESH_MARGIN = 300.0
"""Assumed-role credentials are renewed this many seconds before they expire."""
SESSION_NAME = "aibridge"
ASSUME_ROLE_SECONDS = 3600
STS_TIMEOUT = aiohttp.ClientTimeout(total=30)
_STS_NS = "{https://sts.amazonaws.com/doc/2011-06-15/}"

SessionFor = Callable[[URL], aiohttp.ClientSession]
"""The gateway's pooled HTTP session for a URL (``UpstreamClients.for_url``)."""


class CredentialError(Exception):
    """No usable AWS credentials (the message says where they were looked for)."""


class CredentialSource(Protocol):
    """Where a provider's AWS credentials come from."""

    hint: str
    """What the records show as the credential (masked access key id or ``<aws chain>``)."""

    async def get(self, session_for: SessionFor) -> ReadOnlyCredentials:
        """Current credentials; raises :class:`CredentialError` when there are none.

        ``session_for`` gives the pooled HTTP session for a URL (STS calls).
        """


class StaticCredentials:
    """A fixed key pair from the settings."""

    def __init__(self, access_key: str, secret_key: str, token: str | None) -> None:
        self._frozen = ReadOnlyCredentials(access_key, secret_key, token)
        self.hint = mask_secret(access_key)

    async def get(self, session_for: SessionFor) -> ReadOnlyCredentials:
        """The configured pair (never changes)."""
        return self._frozen


def _resolve_chain() -> Any:
    """botocore's default credential chain (blocking: files, IMDS): the credentials or None."""
    import botocore.session

    return botocore.session.Session().get_credentials()


def chain_available() -> bool:
    """Whether the AWS credential chain yields credentials here (blocking; run in a thread)."""
    try:
        return _resolve_chain() is not None
    except Exception:
        return False


class ChainCredentials:
    """The standard AWS credential chain, resolved once and refreshed by botocore.

    Every blocking step runs in a worker thread; the event loop only reads the cached
    frozen credentials, and goes to a thread again only when botocore's refreshable
    credentials say a refresh is due.
    """

    hint = CHAIN_HINT

    def __init__(self, resolve: Callable[[], Any] = _resolve_chain) -> None:
        self._resolve = resolve
        self._creds: Any = None
        self._frozen: ReadOnlyCredentials | None = None
        self._lock = asyncio.Lock()

    def _needs_refresh(self) -> bool:
        creds = self._creds
        if self._frozen is None or creds is None:
            return True
        needs = getattr(creds, "refresh_needed", None)
        return bool(needs()) if callable(needs) else False

    async def get(self, session_for: SessionFor) -> ReadOnlyCredentials:
        """The chain's current credentials (cached)."""
        if not self._needs_refresh():
            assert self._frozen is not None
            return self._frozen
        async with self._lock:
            if self._needs_refresh():
                self._frozen = await asyncio.to_thread(self._load)
        assert self._frozen is not None
        return self._frozen

    def _load(self) -> ReadOnlyCredentials:
        if self._creds is None:
            self._creds = self._resolve()
        if self._creds is None:
            raise CredentialError(
                "no AWS credentials: settings.bedrock has no access key or role, and the AWS "
                "credential chain (environment, shared profile, container or instance role) "
                "found none"
            )
        frozen: ReadOnlyCredentials = self._creds.get_frozen_credentials()
        return frozen


class AssumedRoleCredentials:
    """STS ``AssumeRole`` on top of a base source, cached until shortly before expiry."""

    def __init__(
        self,
        base: CredentialSource,
        *,
        role_arn: str,
        external_id: str | None,
        region: str | None,
        sts_endpoint: str | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.hint = base.hint
        self._base = base
        self._role_arn = role_arn
        self._external_id = external_id
        self._region = region or "us-east-1"
        self._endpoint = URL(sts_endpoint or f"https://sts.{self._region}.amazonaws.com/")
        self._clock = clock
        self._frozen: ReadOnlyCredentials | None = None
        self._expires = 0.0
        self._lock = asyncio.Lock()

    async def get(self, session_for: SessionFor) -> ReadOnlyCredentials:
        """Cached role credentials, renewed :data:`REFRESH_MARGIN` before they expire."""
        if self._frozen is not None and self._clock() < self._expires - REFRESH_MARGIN:
            return self._frozen
        async with self._lock:
            if self._frozen is None or self._clock() >= self._expires - REFRESH_MARGIN:
                self._frozen, self._expires = await self._assume(session_for)
        return self._frozen

    async def _assume(self, session_for: SessionFor) -> tuple[ReadOnlyCredentials, float]:
        params = {
            "Action": "AssumeRole",
            "Version": "2011-06-15",
            "RoleArn": self._role_arn,
            "RoleSessionName": SESSION_NAME,
            "DurationSeconds": str(ASSUME_ROLE_SECONDS),
        }
        if self._external_id:
            params["ExternalId"] = self._external_id
        body = urllib.parse.urlencode(params).encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
        base = await self._base.get(session_for)
        url = self._endpoint
        headers.update(sign_headers(base, "sts", self._region, "POST", str(url), headers, body))
        try:
            async with session_for(url).post(
                url, data=body, headers=headers, timeout=STS_TIMEOUT
            ) as resp:
                text = await resp.text()
                if resp.status != 200:
                    raise CredentialError(
                        f"STS AssumeRole for {self._role_arn} failed with HTTP {resp.status}: "
                        f"{_sts_error(text)}"
                    )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise CredentialError(f"STS unreachable: {type(exc).__name__}: {exc}") from exc
        return _parse_assume_role(text)


def _sts_error(text: str) -> str:
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError:
        return text[:200]
    message = root.find(f".//{_STS_NS}Message")
    if message is None:
        message = root.find(".//Message")
    return (message.text or "") if message is not None else text[:200]


def _parse_assume_role(text: str) -> tuple[ReadOnlyCredentials, float]:
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError as exc:
        raise CredentialError(f"STS answered with invalid XML: {exc}") from exc
    creds = root.find(f".//{_STS_NS}Credentials")
    if creds is None:
        raise CredentialError("STS answer has no Credentials")

    def field(name: str) -> str:
        node = creds.find(f"{_STS_NS}{name}")
        if node is None or not node.text:
            raise CredentialError(f"STS answer has no {name}")
        return node.text

    expiration = dt.datetime.fromisoformat(field("Expiration").replace("Z", "+00:00"))
    return (
        ReadOnlyCredentials(field("AccessKeyId"), field("SecretAccessKey"), field("SessionToken")),
        expiration.timestamp(),
    )


def build_credentials(settings: BedrockSettings) -> CredentialSource:
    """The credential source the settings describe (see the module docstring)."""
    base: CredentialSource
    if settings.access_key_id is not None and settings.secret_access_key is not None:
        base = StaticCredentials(
            settings.access_key_id, settings.secret_access_key, settings.session_token
        )
    else:
        base = ChainCredentials()
    if settings.role_arn is None:
        return base
    return AssumedRoleCredentials(
        base,
        role_arn=settings.role_arn,
        external_id=settings.external_id,
        region=settings.region,
        sts_endpoint=settings.sts_endpoint,
    )


def sign_headers(
    creds: ReadOnlyCredentials,
    service: str,
    region: str,
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
) -> dict[str, str]:
    """The SigV4 headers (``Authorization``, ``X-Amz-Date``, ``X-Amz-Security-Token``) for a
    request made of exactly ``headers`` (plus ``Host``, which the signer derives from
    ``url`` as the HTTP client will send it) and ``body``."""
    request = AWSRequest(method=method, url=url, headers=dict(headers), data=body)
    SigV4Auth(
        Credentials(creds.access_key, creds.secret_key, creds.token), service, region
    ).add_auth(request)
    out = {
        "Authorization": request.headers["Authorization"],
        "X-Amz-Date": request.headers["X-Amz-Date"],
    }
    token = request.headers.get("X-Amz-Security-Token")
    if token:
        out["X-Amz-Security-Token"] = token
    return out


NO_CREDENTIALS = (
    "bedrock provider has no credentials: set access_key_id and secret_access_key, or make AWS "
    "credentials available to the gateway (environment, shared profile, container or "
    "instance role); the AWS credential chain found none"
)


async def missing_credentials(settings: BedrockSettings) -> str | None:
    """Why a new provider could not sign requests (no static keys and an AWS credential
    chain that finds nothing here), or None. The chain may read files or call the instance
    metadata service, so it runs in a worker thread."""
    if settings.static_keys:
        return None
    if await asyncio.to_thread(chain_available):
        return None
    return NO_CREDENTIALS
