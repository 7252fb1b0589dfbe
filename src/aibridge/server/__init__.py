"""The gateway server: assembles and runs one gateway process.

* :mod:`~aibridge.server.startup`: :func:`running_services` starts every component
  (:mod:`~aibridge.server.components`) and yields :class:`Services`
  (:mod:`~aibridge.server.services`).
* :mod:`~aibridge.server.app`: :func:`create_app`, the aiohttp application: health and
  metrics endpoints (:mod:`~aibridge.server.health`), the admin API, and the data plane
  (:mod:`~aibridge.server.dataplane`).
* :mod:`~aibridge.server.runner`: :func:`serve_forever`, the connection runner with its
  read deadlines (:mod:`~aibridge.server.connection_guard`); :mod:`~aibridge.server.workers`
  supervises ``--workers N`` processes.
"""

from aibridge.server.app import create_app
from aibridge.server.runner import StartupError, create_runner, serve_forever
from aibridge.server.services import SERVICES, Services
from aibridge.server.startup import running_services

__all__ = [
    "SERVICES",
    "Services",
    "StartupError",
    "create_app",
    "create_runner",
    "running_services",
    "serve_forever",
]
