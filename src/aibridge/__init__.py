"""aibridge: a self-hosted AI gateway for coding agents.

The package is split by concern (see README "Architecture"): ``store`` holds the
database, ``admin`` the admin HTTP API, ``auth`` gateway keys and users, ``server``
assembles the aiohttp application and ``cli`` is the ``aibridge`` command.
"""

__version__ = "0.1.0"
