"""Blind tunnels for hosts the proxy does not decrypt, with egress protection.

A destination is refused when any address it resolves to lies in a private or reserved
range (unless an allow-listed CIDR holds it). The check runs on the resolved address
right before connecting to that same address, so DNS cannot change the answer between
the check and the connection.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

BLOCKED_NETWORKS: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "240.0.0.0/4",
        "::/128",
        "::1/128",
        "64:ff9b::/96",
        "64:ff9b:1::/48",
        "2002::/16",
        "fc00::/7",
        "fe80::/10",
    )
)
"""Private, loopback, link-local, shared and reserved ranges a tunnel may not reach."""

PIPE_CHUNK = 64 * 1024


class BlockedDestination(Exception):
    """The destination resolves to a private or reserved address."""


class DialError(Exception):
    """The destination could not be resolved or connected to."""


def parse_cidrs(values: Sequence[str]) -> tuple[IPNetwork, ...]:
    """Parse allow-listed CIDRs; ValueError names the bad one."""
    out: list[IPNetwork] = []
    for value in values:
        try:
            out.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError as exc:
            raise ValueError(f'invalid allowed private CIDR "{value}": {exc}') from None
    return tuple(out)


def is_blocked(address: IPAddress, allowed: Sequence[IPNetwork] = ()) -> bool:
    """Whether a tunnel to ``address`` must be refused."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if any(address in net for net in allowed):
        return False
    return any(address in net for net in BLOCKED_NETWORKS)


async def dial(
    host: str,
    port: int,
    *,
    allowed: Sequence[IPNetwork] = (),
    timeout: float = 10.0,  # noqa: ASYNC109
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Resolve ``host`` and connect to the first address that accepts; raises
    :class:`BlockedDestination` when any resolved address is private/reserved (and not
    allowed), :class:`DialError` when nothing can be reached."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, TimeoutError) as exc:
        raise DialError(f"cannot resolve {host}: {exc}") from None
    addresses: list[str] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        ip = str(sockaddr[0]).split("%", 1)[0]
        if ip not in addresses:
            addresses.append(ip)
    # Refuse the whole destination when any answer is private: a name that mixes public
    # and private answers is how a rebinding attack would look.
    for ip in addresses:
        if is_blocked(ipaddress.ip_address(ip), allowed):
            raise BlockedDestination(f"{host} resolves to {ip}")
    last: Exception | None = None
    for ip in addresses:
        try:
            async with asyncio.timeout(timeout):
                # Connect to the very address just checked (never re-resolve the name).
                return await asyncio.open_connection(ip, port)
        except (OSError, TimeoutError) as exc:
            last = exc
    raise DialError(f"cannot connect to {host}:{port}: {last}")


@dataclass(frozen=True, slots=True)
class UpstreamProxy:
    """An HTTP proxy tunnels go through (never decrypted requests: those go to the
    gateway directly)."""

    host: str
    port: int
    authorization: str | None = None

    @classmethod
    def parse(cls, url: str) -> UpstreamProxy:
        """``http://[user:pass@]host:port``; ValueError saying what is wrong."""
        try:
            parts = urlsplit(url)
            port = parts.port or 80
        except ValueError as exc:
            raise ValueError(f'invalid upstream proxy URL "{url}": {exc}') from None
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(
                f'invalid upstream proxy URL "{url}": use http://[user:password@]host:port'
            )
        auth = None
        if parts.username is not None or parts.password is not None:
            user, password = unquote(parts.username or ""), unquote(parts.password or "")
            if not user and not password:
                raise ValueError(
                    f'upstream proxy URL "{url}" has invalid credentials: '
                    "both username and password are empty"
                )
            auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        return cls(parts.hostname, port, auth)


async def dial_via(
    proxy: UpstreamProxy,
    host: str,
    port: int,
    *,
    allowed: Sequence[IPNetwork] = (),
    timeout: float = 10.0,  # noqa: ASYNC109
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A tunnel to ``host:port`` through ``proxy``. The upstream proxy resolves the name
    itself, so the egress check resolves it here first and refuses when any answer is
    private (:class:`BlockedDestination`); other failures are :class:`DialError`."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, TimeoutError) as exc:
        raise DialError(f"cannot resolve {host}: {exc}") from None
    for *_, sockaddr in infos:
        ip = str(sockaddr[0]).split("%", 1)[0]
        if is_blocked(ipaddress.ip_address(ip), allowed):
            raise BlockedDestination(f"{host} resolves to {ip}")
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
    if proxy.authorization:
        lines.append(f"Proxy-Authorization: {proxy.authorization}")
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
            head = await reader.readuntil(b"\r\n\r\n")
    except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        raise DialError(f"upstream proxy {proxy.host}:{proxy.port}: {exc!r}") from None
    status = head.split(b" ", 2)[1:2]
    if status != [b"200"]:
        writer.close()
        raise DialError(f"upstream proxy refused CONNECT {authority}: {head.splitlines()[0]!r}")
    return reader, writer


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(PIPE_CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass


async def pipe(
    a_reader: asyncio.StreamReader,
    a_writer: asyncio.StreamWriter,
    b_reader: asyncio.StreamReader,
    b_writer: asyncio.StreamWriter,
) -> None:
    """Copy bytes both ways until both directions end, then close both sides."""
    try:
        await asyncio.gather(_copy(a_reader, b_writer), _copy(b_reader, a_writer))
    finally:
        for w in (a_writer, b_writer):
            w.close()
        for w in (a_writer, b_writer):
            with contextlib.suppress(Exception):
                await w.wait_closed()
