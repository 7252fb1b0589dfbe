"""The ``aibridge`` command line. Each sub-module adds one group of commands.

A command's module is imported only when that command runs (or when a help screen lists
it): ``aibridge records export`` must not pay for importing the whole server, and its
memory is what a 100,000-record export is measured against.
"""

from __future__ import annotations

import importlib

import click

from aibridge import __version__

COMMAND_MODULES: dict[str, tuple[str, ...]] = {
    "fake-upstream": ("fake",),
    "keys": ("users",),
    "mcp-servers": ("mcp_servers",),
    "migrate": ("serve",),
    "prices": ("prices",),
    "providers": ("providers",),
    "proxy": ("proxy",),
    "records": ("records",),
    "serve": ("serve",),
    "usage": ("usage",),
    # ``users limits`` lives in its own module and attaches itself to ``users``.
    "users": ("users", "user_limits"),
}
"""Each command's name, and the modules under ``aibridge.cli`` that define it."""


class LazyGroup(click.Group):
    """A group whose commands are imported on first use (see :data:`COMMAND_MODULES`)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Every command's name, without importing any of them."""
        return sorted(set(COMMAND_MODULES) | set(self.commands))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """The command ``cmd_name``, importing the modules that define it first."""
        if cmd_name not in self.commands:
            for module in COMMAND_MODULES.get(cmd_name, ()):
                # Imported for its side effect of attaching commands to ``main``.
                importlib.import_module(f"aibridge.cli.{module}")
        return super().get_command(ctx, cmd_name)


@click.group(
    cls=LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="aibridge")
def main() -> None:
    """aibridge: a self-hosted AI gateway for coding agents.

    Settings come from flags, then AIBRIDGE_* environment variables, then defaults.
    """
