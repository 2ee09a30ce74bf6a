"""`sbx create`: make a container without starting it; prints its id.

Takes every option `sbx run` takes but -d (sandbox/cli/run.py builds the record for
both). The generated /etc files are written again by `sbx start`, so none are kept.
"""

from __future__ import annotations

from typing import Any

import click

from sandbox.cli import handle_errors
from sandbox.cli.run import create_container, create_options


@click.command(context_settings={"allow_interspersed_args": False,
                                 "help_option_names": ["-h", "--help"]})
@create_options
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@handle_errors
def create(command: tuple[str, ...], **opts: Any) -> None:
    """Create a container from an image (or --rootfs DIR) without starting it.

    \b
    sbx create [OPTIONS] IMAGE [COMMAND [ARG...]]
    sbx create --rootfs DIR [OPTIONS] [--] COMMAND [ARG...]
    """
    from sandbox.containers.monitor import remove_runtime_files

    created = create_container(opts, command)
    remove_runtime_files(created.container.id)
    click.echo(created.container.id)
