"""`sbx unshare`: a shell (or command) as root of your user namespace, as `podman unshare`.

Files that containers create belong to your subordinate ids on the host; inside this
namespace they belong to the ids the container saw, so you can inspect, chown or
remove them.
"""

from __future__ import annotations

import os
import sys

import click

from sandbox.cli import handle_errors, warn


@click.command(context_settings={"allow_interspersed_args": False})
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@handle_errors
def unshare(command: tuple[str, ...]) -> None:
    """Run COMMAND (default: $SHELL) as root of your user namespace."""
    from sandbox.runtime import idmap, userns

    maps = idmap.plan_for_current_user()
    if maps.warning:
        warn(maps.warning)
    args = list(command) or [os.environ.get("SHELL", "/bin/sh")]
    sys.exit(userns.run_command(args, maps))
