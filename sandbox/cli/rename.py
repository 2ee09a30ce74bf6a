"""`sbx rename`: give a container a new name (running or not), as podman rename."""

from __future__ import annotations

import click

from sandbox.cli import handle_errors


@click.command()
@click.argument("container")
@click.argument("new_name")
@handle_errors
def rename(container: str, new_name: str) -> None:
    """Rename CONTAINER to NEW_NAME."""
    from sandbox.containers.store import ContainerStore

    store = ContainerStore()
    store.rename(store.lookup(container), new_name)
