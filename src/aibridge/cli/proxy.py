"""``aibridge proxy``: the HTTPS proxy on its own, and ``aibridge proxy init-ca``."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import click

from aibridge.cli import main
from aibridge.cli.common import database_option, fail, load_settings, run
from aibridge.config import Settings
from aibridge.proxy.ca import CAError, CertificateAuthority
from aibridge.server.proxy import ProxyConfigError, standalone_proxy
from aibridge.telemetry import setup_logging


@main.group(invoke_without_command=True)
@click.option(
    "--listen", "listen", envvar="AIBRIDGE_PROXY_LISTEN", default="", help="HOST:PORT to listen on."
)
@click.option(
    "--gateway-url",
    envvar="AIBRIDGE_PROXY_GATEWAY_URL",
    default="",
    help="The gateway's data plane, e.g. http://127.0.0.1:8080.",
)
@click.option("--ca-cert", envvar="AIBRIDGE_PROXY_CA_CERT", default="", help="CA certificate PEM.")
@click.option("--ca-key", envvar="AIBRIDGE_PROXY_CA_KEY", default="", help="CA key PEM.")
@click.option(
    "--allowed-ports",
    envvar="AIBRIDGE_PROXY_ALLOWED_PORTS",
    default="",
    help="Ports CONNECT may reach, comma-separated (default 80,443).",
)
@click.option(
    "--allowed-private-cidrs",
    envvar="AIBRIDGE_PROXY_ALLOWED_PRIVATE_CIDRS",
    default="",
    help="Private ranges tunnels may reach anyway, comma-separated (default none).",
)
@click.option(
    "--upstream-proxy",
    envvar="AIBRIDGE_PROXY_UPSTREAM_PROXY",
    default="",
    help="http://[user:password@]host:port that tunnels go through (default: direct).",
)
@click.option("--tls-cert", envvar="AIBRIDGE_PROXY_TLS_CERT", default="", help="Listener TLS cert.")
@click.option("--tls-key", envvar="AIBRIDGE_PROXY_TLS_KEY", default="", help="Listener TLS key.")
@database_option
@click.option("--data-dir", envvar="AIBRIDGE_DATA_DIR", default="", help="Data directory.")
@click.pass_context
def proxy(
    ctx: click.Context,
    listen: str,
    gateway_url: str,
    ca_cert: str,
    ca_key: str,
    allowed_ports: str,
    allowed_private_cidrs: str,
    upstream_proxy: str,
    tls_cert: str,
    tls_key: str,
    database_url: str,
    data_dir: str,
) -> None:
    """HTTPS proxy for clients that only honour HTTPS_PROXY.

    CONNECTs to provider hosts are decrypted (clients must trust the proxy CA) and sent to
    the gateway as /{provider}/...; other hosts are tunnelled. Clients authenticate with
    HTTPS_PROXY=http://user:<gateway key>@HOST:PORT.
    """
    ctx.obj = dict(
        proxy_listen=listen,
        proxy_gateway_url=gateway_url,
        proxy_ca_cert=ca_cert,
        proxy_ca_key=ca_key,
        proxy_allowed_ports=allowed_ports,
        proxy_allowed_private_cidrs=allowed_private_cidrs,
        proxy_upstream_proxy=upstream_proxy,
        proxy_tls_cert=tls_cert,
        proxy_tls_key=tls_key,
        database_url=database_url,
        data_dir=data_dir,
    )
    if ctx.invoked_subcommand is not None:
        return
    settings = load_settings(**ctx.obj)
    if not settings.proxy_listen:
        fail("set --listen HOST:PORT (AIBRIDGE_PROXY_LISTEN)", 2)
    setup_logging(
        settings.log_level,
        settings.log_format,
        levels=settings.logger_levels(),
        secrets=settings.log_secrets(),
    )
    try:
        run(_serve(settings))
    except ProxyConfigError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot listen on {settings.proxy_listen}: {exc.strerror}; choose another --listen")


async def _serve(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with standalone_proxy(settings):
        await stop.wait()


@proxy.command("init-ca")
@click.pass_context
def init_ca(ctx: click.Context) -> None:
    """Create the proxy CA in the data dir (proxy-ca.pem, proxy-ca-key.pem with mode 0600)."""
    settings = load_settings(**ctx.obj)
    try:
        cert_path, key_path = CertificateAuthority.generate().save(Path(settings.data_dir))
    except CAError as exc:
        fail(str(exc))
        return
    click.echo(f"CA certificate: {cert_path}\nCA key (keep private): {key_path}")
    click.echo(
        "Clients must trust the certificate: NODE_EXTRA_CA_CERTS (Node: Claude Code, Codex), "
        "SSL_CERT_FILE / REQUESTS_CA_BUNDLE (Python SDKs)."
    )
