"""`sbx restart`: stop (if running) and start containers again, detached.

The record, the writable layer and the log stay: files the container wrote are
still there after a restart, as with podman.
"""

from __future__ import annotations

from typing import Any

import click

from sandbox.cli import handle_errors


@click.command()
@click.option("-t", "--time", "timeout", type=click.IntRange(min=0), metavar="SECONDS",
              help="Seconds to wait before SIGKILL (default: the container's, 10).")
@click.argument("containers", nargs=-1, required=True)
@handle_errors
def restart(timeout: int | None, containers: tuple[str, ...]) -> None:
    """Restart one or more containers."""
    from sandbox.cli.container import each, warn_kill
    from sandbox.containers import lifecycle
    from sandbox.containers.store import ContainerStore

    store = ContainerStore()

    def one(found: Any, name: str) -> None:
        lifecycle.stop(store, found, None if timeout is None else float(timeout),
                       on_kill=warn_kill(name))
        lifecycle.start(store, found)
        click.echo(name)

    each(containers, one)
