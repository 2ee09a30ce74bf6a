"""`sbx kill`: send a signal (default SIGKILL) to running containers' pid 1.

As podman: only running containers can be signalled; the name is printed as given.
Pid 1 of a pid namespace only gets the signals it handles (pid_namespaces(7)), so
`kill -s TERM` of a `sleep` without --init does nothing; SIGKILL always works.
"""

from __future__ import annotations

from typing import Any

import click

from sandbox.cli import handle_errors
from sandbox.errors import UsageError


@click.command()
@click.option("-s", "--signal", "sig", default="SIGKILL", show_default=True,
              metavar="SIGNAL", help="Signal to send: a name (TERM, SIGTERM) or a number.")
@click.option("-a", "--all", "all_", is_flag=True, help="Signal every running container.")
@click.argument("containers", nargs=-1)
@handle_errors
def kill(sig: str, all_: bool, containers: tuple[str, ...]) -> None:
    """Send a signal to one or more running containers."""
    from sandbox.cli.container import each
    from sandbox.containers import lifecycle
    from sandbox.containers.store import ContainerStore

    number = lifecycle.parse_signal(sig)
    store = ContainerStore()
    if all_:
        containers = tuple(c.id for c in store.list() if c.running)
    elif not containers:
        raise UsageError("which container?", hint="sbx kill CONTAINER..., or sbx kill --all")

    def one(found: Any, name: str) -> None:
        lifecycle.kill(store, found, number)
        click.echo(name)

    each(containers, one)
