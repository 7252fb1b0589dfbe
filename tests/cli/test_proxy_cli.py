"""``aibridge proxy init-ca`` and the proxy's start-up errors."""

from __future__ import annotations

import stat
from pathlib import Path

from click.testing import CliRunner

from aibridge.cli import main
from aibridge.proxy.ca import CertificateAuthority


def test_init_ca_writes_a_loadable_ca_with_a_private_key_and_never_overwrites(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    result = CliRunner().invoke(main, ["proxy", "--data-dir", str(data), "init-ca"], env={})
    assert result.exit_code == 0, result.output
    assert str(data / "proxy-ca.pem") in result.output
    assert "NODE_EXTRA_CA_CERTS" in result.output
    assert stat.S_IMODE((data / "proxy-ca-key.pem").stat().st_mode) == 0o600
    ca = CertificateAuthority.load(data / "proxy-ca.pem", data / "proxy-ca-key.pem")
    assert b"PRIVATE KEY" not in ca.cert_pem()

    again = CliRunner().invoke(main, ["proxy", "--data-dir", str(data), "init-ca"], env={})
    assert again.exit_code == 1
    assert "already exists" in again.output
    reloaded = CertificateAuthority.load(data / "proxy-ca.pem", data / "proxy-ca-key.pem")
    assert reloaded.cert == ca.cert


def test_proxy_without_a_gateway_url_says_what_to_set(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["proxy", "--data-dir", str(tmp_path), "--listen", "127.0.0.1:0"], env={}
    )
    assert result.exit_code == 1
    assert "--gateway-url" in result.output


def test_proxy_with_a_bad_port_list_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        ["proxy", "--listen", "127.0.0.1:0", "--allowed-ports", "443,ssh"],
        env={"AIBRIDGE_DATA_DIR": str(tmp_path)},
    )
    assert result.exit_code == 2
    assert "proxy_allowed_ports" in result.output


def test_serve_refuses_proxy_listen_with_workers(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        ["serve", "--workers", "2", "--proxy-listen", "127.0.0.1:0", "--data-dir", str(tmp_path)],
        env={},
    )
    assert result.exit_code == 1
    assert "aibridge proxy" in result.output
