"""`sbx diff`: list a container's changes to its image (A/C/D), as podman diff."""

from __future__ import annotations

import json

import click

from sandbox.cli import handle_errors
from sandbox.errors import SbxError


@click.command()
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              help="table (A/C/D lines, the default) or json.")
@click.argument("container")
@handle_errors
def diff(fmt: str, container: str) -> None:
    """Show what CONTAINER added (A), changed (C) and deleted (D)."""
    import os

    from sandbox import paths
    from sandbox.containers.store import ContainerStore
    from sandbox.runtime import idmap, userns
    from sandbox.storage.diff import changes

    ctr = ContainerStore().lookup(container)
    layers = list(ctr.config.get("layers") or [])
    driver = ctr.config.get("storage_driver") or "overlay"
    if not layers:
        raise SbxError(f"container {ctr.short_id} runs on a folder (--rootfs): its changes "
                       "are in that folder, not in a layer of its own")
    if driver == "vfs":
        raise SbxError(f"container {ctr.short_id} uses the vfs driver, which keeps a full "
                       "copy and no layer of changes", hint="use the overlay or fuse driver")
    upper = os.path.join(paths.container_layer_dir(ctr.id), "upper")
    # Inside the user's namespace: the container may have made directories that only
    # their new (subordinate) owners can read.
    found = userns.call(lambda: changes(upper, layers), idmap.plan_for_current_user())
    if fmt == "json":
        grouped: dict[str, list[str]] = {"added": [], "changed": [], "deleted": []}
        for kind, path in found:
            grouped[{"A": "added", "C": "changed", "D": "deleted"}[kind]].append(path)
        click.echo(json.dumps(grouped, indent=2))
        return
    for kind, path in found:
        click.echo(f"{kind} {path}")
