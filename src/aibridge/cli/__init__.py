"""The ``aibridge`` command line. Each sub-module adds one group of commands."""

from __future__ import annotations

import click

from aibridge import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="aibridge")
def main() -> None:
    """aibridge: a self-hosted AI gateway for coding agents.

    Settings come from flags, then AIBRIDGE_* environment variables, then defaults.
    """


def _register() -> None:
    # Imported for their side effect of attaching commands to ``main``.
    from aibridge.cli import (  # noqa: F401
        fake,
        mcp_servers,
        prices,
        providers,
        proxy,
        records,
        serve,
        usage,
        user_limits,
        users,
    )


_register()
