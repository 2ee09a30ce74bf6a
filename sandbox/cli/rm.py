"""`sbx rm`: remove containers: their record, writable layer, log and runtime files.

With native overlay the rootfs is mounted only inside the container's own mount
namespace, so nothing is mounted on the host to unmount and no FUSE process runs
(the fuse driver, when it lands, must stop its process here). Files the container
wrote as other users are removed in the user namespace (lifecycle.remove_tree).

Exit codes are podman's: 1 when a container did not exist (and nothing else
failed), 2 when one is running and -f was not given, 125 for anything else. `-v`
removes the containers' anonymous volumes too (named volumes stay, as in podman).
"""

from __future__ import annotations

import contextlib
from typing import Any

import click

from sandbox.cli import handle_errors
from sandbox.errors import SbxError, UsageError


def _exit_code(errors: list[SbxError]) -> int:
    from sandbox.containers.lifecycle import ContainerRunning
    from sandbox.containers.store import NoSuchContainer

    if all(isinstance(e, NoSuchContainer) for e in errors):
        return 1
    if all(isinstance(e, (NoSuchContainer, ContainerRunning)) for e in errors):
        return 2
    return 125


@click.command()
@click.option("-f", "--force", is_flag=True, help="Kill running containers first.")
@click.option("-v", "--volumes", is_flag=True, help="Remove anonymous volumes too.")
@click.option("-a", "--all", "all_", is_flag=True, help="Remove every container.")
@click.option("-i", "--ignore", is_flag=True, help="No error for missing containers.")
@click.argument("containers", nargs=-1)
@handle_errors
def rm(force: bool, volumes: bool, all_: bool, ignore: bool,
       containers: tuple[str, ...]) -> None:
    """Remove one or more containers."""
    from sandbox.cli.container import each
    from sandbox.containers import lifecycle
    from sandbox.containers.store import ContainerStore, NoSuchContainer

    store = ContainerStore()
    if all_:
        containers = tuple(c.id for c in store.list())
    elif not containers:
        raise UsageError("which container?", hint="sbx rm CONTAINER..., or sbx rm --all")

    def one(found: Any, name: str) -> None:
        # NoSuchContainer here: removed meanwhile (its own --rm, another sbx rm): done
        with contextlib.suppress(NoSuchContainer):
            lifecycle.remove(store, found, force=force, volumes=volumes)
        click.echo(name)

    # What a killed `sbx run`/`rm` left (half-made or half-removed records, names
    # of gone containers) is invisible to ps; every rm sweeps it (one listdir).
    with contextlib.suppress(OSError, SbxError):
        store.clean_leftovers(lifecycle.remove_tree)
    if ignore:
        names = []
        for name in containers:
            try:
                store.lookup(name)
                names.append(name)
            except NoSuchContainer:
                continue
        containers = tuple(names)
    each(containers, one, code_for=_exit_code)
