"""Blind tunnels for hosts the proxy does not decrypt, with egress protection.

A destination is refused when any address it resolves to lies in a private or reserved
range (unless an allow-listed CIDR holds it). The check runs on the resolved address
right before connecting to that same address, so DNS cannot change the answer between
the check and the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import Sequence

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
