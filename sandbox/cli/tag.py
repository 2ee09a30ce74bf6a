"""`sbx tag SOURCE TARGET...`: give a stored image more names.

As in docker and podman, a name belongs to one image: tagging moves it from any
image that had it. Short names normalize as docker does (myapp ->
docker.io/library/myapp:latest).
"""

from __future__ import annotations

import click

from sandbox.cli import handle_errors
from sandbox.cli.images import ImageContext, find_image
from sandbox.errors import UsageError


@click.command()
@click.argument("source")
@click.argument("targets", nargs=-1, required=True)
@handle_errors
def tag(source: str, targets: tuple[str, ...]) -> None:
    """Name the image SOURCE also TARGET (each of them)."""
    from sandbox.images.pull import name_holders, release_untagged, store_name
    from sandbox.registry.reference import parse_reference

    store = ImageContext().store
    record = find_image(store, source)
    names = []
    for target in targets:
        ref = parse_reference(target)
        if ref.digest:
            raise UsageError(f"can't tag with a digest: {target}",
                             hint="a digest names content; give a tag, e.g. NAME:TAG")
        names.append(store_name(ref))
    holders = name_holders(store, names) - {record.id}
    for name in names:
        store.tag(record.id, name)
    release_untagged(store, holders)
