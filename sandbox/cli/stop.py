"""`sbx stop`: stop running containers: the stop signal, then SIGKILL after --time.

The stop signal is the container's (`--stop-signal`, else the image's StopSignal,
else SIGTERM) and the default time its `--stop-timeout` (10 s), as podman. Stopping a
container that is not running succeeds and does nothing. Prints each name as given.
"""

from __future__ import annotations

from typing import Any

import click

from sandbox.cli import handle_errors
from sandbox.errors import UsageError


@click.command()
@click.option("-t", "--time", "timeout", type=click.IntRange(min=0), metavar="SECONDS",
              help="Seconds to wait before SIGKILL (default: the container's, 10).")
@click.option("-a", "--all", "all_", is_flag=True, help="Stop every running container.")
@click.argument("containers", nargs=-1)
@handle_errors
def stop(timeout: int | None, all_: bool, containers: tuple[str, ...]) -> None:
    """Stop one or more running containers."""
    from sandbox.cli.container import each, warn_kill
    from sandbox.containers import lifecycle
    from sandbox.containers.store import ContainerStore

    store = ContainerStore()
    if all_:
        containers = tuple(c.id for c in store.list() if c.running)
    elif not containers:
        raise UsageError("which container?", hint="sbx stop CONTAINER..., or sbx stop --all")

    def one(found: Any, name: str) -> None:
        lifecycle.stop(store, found, None if timeout is None else float(timeout),
                       on_kill=warn_kill(name))
        click.echo(name)

    each(containers, one)
