"""The web dashboard: a no-build single-page app served at ``/ui/``.

The pages are static files (``static/``, package data) that talk only to the public admin
API, so this package serves files and nothing else: :func:`add_ui_routes` registers
``/ui/static/<file>`` for the assets and ``index.html`` for ``/ui/`` and every deep link
below it (the app's router picks the page from the path). Every answer carries the
dashboard's security headers (:data:`SECURITY_HEADERS`).
"""

from aibridge.ui.routes import SECURITY_HEADERS, add_ui_routes

__all__ = ["SECURITY_HEADERS", "add_ui_routes"]
