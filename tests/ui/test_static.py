"""The dashboard's files: served from the package at /ui/ with the security headers,
index.html for deep links, and no HTML parsing of data anywhere in the JavaScript."""

from __future__ import annotations

import asyncio
import re
from importlib import resources
from pathlib import Path

from aibridge.testing.gateway import gateway
from aibridge.ui.routes import CONTENT_SECURITY_POLICY

TIMEOUT = 60.0
STATIC = Path(str(resources.files("aibridge.ui").joinpath("static")))


def _assert_security_headers(headers: object) -> None:
    get = headers.get  # type: ignore[attr-defined]
    assert get("Content-Security-Policy") == CONTENT_SECURITY_POLICY
    assert get("X-Frame-Options") == "DENY"
    assert get("X-Content-Type-Options") == "nosniff"
    assert get("Referrer-Policy") == "no-referrer"


async def test_index_and_deep_links_serve_the_app_with_strict_headers(
    sqlite_url: str, tmp_path: Path
) -> None:
    index = (STATIC / "index.html").read_bytes()
    async with gateway(sqlite_url, tmp_path) as (client, _services), asyncio.timeout(TIMEOUT):
        for path in ("/ui/", "/ui/usage", "/ui/sessions/abc", "/ui/interceptions/x?user=a"):
            resp = await client.get(path)
            assert resp.status == 200, path
            assert await resp.read() == index
            assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
            assert resp.headers["Cache-Control"] == "no-store"
            _assert_security_headers(resp.headers)
        resp = await client.get("/ui", allow_redirects=False)
        assert resp.status == 302
        assert resp.headers["Location"] == "/ui/"
        _assert_security_headers(resp.headers)


async def test_assets_have_exact_types_etags_and_404s(sqlite_url: str, tmp_path: Path) -> None:
    async with gateway(sqlite_url, tmp_path) as (client, _services), asyncio.timeout(TIMEOUT):
        resp = await client.get("/ui/static/app.js")
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/javascript; charset=utf-8"
        _assert_security_headers(resp.headers)
        etag = resp.headers["ETag"]
        resp = await client.get("/ui/static/app.js", headers={"If-None-Match": etag})
        assert resp.status == 304
        resp = await client.get("/ui/static/lib/dom.js")
        assert resp.status == 200
        resp = await client.get("/ui/static/app.css")
        assert resp.headers["Content-Type"] == "text/css; charset=utf-8"
        for missing in ("/ui/static/nope.js", "/ui/static/%2e%2e/routes.py", "/ui/static/"):
            resp = await client.get(missing)
            assert b"def add_ui_routes" not in await resp.read()
            if missing.endswith("nope.js"):
                assert resp.status == 404, missing
            _assert_security_headers(resp.headers)
        # Not a page: anything but GET under /ui/ is no route.
        resp = await client.post("/ui/usage")
        assert resp.status == 404


def test_no_script_parses_html_or_runs_strings() -> None:
    """Data is always text: no innerHTML-like sink, eval or inline handler in any file."""
    sinks = re.compile(
        r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function|"
        r"setTimeout\(\s*['\"`]|createContextualFragment|DOMParser"
    )
    scripts = sorted(STATIC.rglob("*.js"))
    assert len(scripts) >= 6
    for script in scripts:
        found = sinks.findall(script.read_text())
        assert not found, f"{script.name}: {found}"
    html = (STATIC / "index.html").read_text()
    # No inline script or style: the CSP would block them anyway.
    assert re.search(r"<script(?![^>]*\bsrc=)", html) is None
    assert "<style" not in html and " style=" not in html
    assert re.search(r"\son[a-z]+=", html) is None
