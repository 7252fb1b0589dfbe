"""Routes that serve the dashboard's files from memory, with strict security headers.

The files are read once when the routes are registered (a few dozen kilobytes): no disk
access per request, and a deployment cannot be made to serve anything outside the
package's ``static`` folder, because only the names read at start-up exist.
"""

from __future__ import annotations

import hashlib
import mimetypes
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

from aiohttp import web

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
"""No inline script or style, nothing from another origin: prompts and model output the
pages show are attacker-controlled text, and this keeps a slip from becoming a script."""

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
"""Headers on every ``/ui/`` response."""

# Types the browser must get exactly (module scripts are refused under nosniff otherwise).
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
}


@dataclass(frozen=True, slots=True)
class Asset:
    """One static file: its bytes, content type and strong ETag."""

    body: bytes
    content_type: str
    etag: str


def _content_type(name: str) -> str:
    suffix = name[name.rfind(".") :] if "." in name else ""
    return _TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"


def _walk(folder: Traversable, prefix: str = "") -> dict[str, Asset]:
    found: dict[str, Asset] = {}
    for entry in folder.iterdir():
        name = prefix + entry.name
        if entry.is_dir():
            if entry.name != "__pycache__":
                found.update(_walk(entry, name + "/"))
        elif not entry.name.startswith("."):
            body = entry.read_bytes()
            etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
            found[name] = Asset(body, _content_type(name), etag)
    return found


def load_assets() -> dict[str, Asset]:
    """Every file below the package's ``static`` folder, by its path relative to it."""
    return _walk(resources.files("aibridge.ui").joinpath("static"))


def _answer(request: web.Request, asset: Asset, cache_control: str) -> web.Response:
    headers = {**SECURITY_HEADERS, "Cache-Control": cache_control, "ETag": asset.etag}
    if request.headers.get("If-None-Match") == asset.etag:
        return web.Response(status=304, headers=headers)
    return web.Response(body=asset.body, headers={**headers, "Content-Type": asset.content_type})


def _not_found() -> web.Response:
    return web.Response(
        status=404,
        text="not found",
        content_type="text/plain",
        headers={**SECURITY_HEADERS, "Cache-Control": "no-store"},
    )


def add_ui_routes(app: web.Application) -> None:
    """Register ``/ui`` (redirect), ``/ui/static/<file>`` and ``/ui/<anything>`` (the app)."""
    assets = load_assets()
    index = assets["index.html"]

    async def redirect(_request: web.Request) -> web.Response:
        raise web.HTTPFound("/ui/", headers=SECURITY_HEADERS)

    async def static(request: web.Request) -> web.Response:
        asset = assets.get(request.match_info["path"])
        if asset is None:
            return _not_found()
        # Revalidated each time (cheap: a 304 by ETag) so an upgrade shows at once;
        # file names carry no content hash because there is no build step.
        return _answer(request, asset, "no-cache")

    async def page(request: web.Request) -> web.Response:
        # The shell holds no data; no-store so a shared machine keeps nothing around.
        return _answer(request, index, "no-store")

    app.router.add_get("/ui", redirect)
    app.router.add_get("/ui/static/{path:.+}", static)
    app.router.add_get("/ui/{tail:.*}", page)
