"""`sbx rmi`: remove images' names, and the images with no name left.

podman's rules: `rmi NAME` removes that name ("Untagged: NAME"), and the image too
("Deleted: ID") when it has no other tag; `rmi ID` removes the image with all its
names, but refuses an image with several tags unless --force (podman: "unable to
delete image by ID with more than one tag"). An image a container uses is refused
unless --force (Store.remove_image asks images.usage.image_in_use). Afterwards the
blobs and layers no image references are pruned; the layer trees are removed from
inside the user namespace (ImageContext.remove_tree).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import click

from sandbox.cli import handle_errors
from sandbox.cli.images import ImageContext
from sandbox.errors import SbxError, UsageError
from sandbox.images.store import Store


@dataclass
class Removal:
    untagged: list[str] = field(default_factory=list)
    deleted: str | None = None


def remove(store: Store, text: str, *, force: bool = False, by_id_ok: bool = False
           ) -> Removal:
    """Apply `sbx rmi TEXT` to the store's index (the prune comes after).
    `by_id_ok`: removing a many-tagged image by id needs no --force (rmi --all)."""
    from sandbox.images.pull import find_local_name, repo_tags, split_name

    record, matched = find_local_name(store, text)
    out = Removal()
    if matched is not None:
        tags_left = [n for n in repo_tags(record) if n != matched]
        if tags_left:
            store.untag(matched)
            out.untagged.append(matched)
            return out
    elif len(repo_tags(record)) > 1 and not (force or by_id_ok):
        raise SbxError(
            f"unable to delete image {record.short_id} by ID with more than one tag "
            f"({', '.join(repo_tags(record))})",
            hint="remove it by name, one tag at a time, or use --force",
        )
    removed = store.remove_image(record.id, force=force)
    out.untagged.extend(n for n in removed.names if split_name(n)[1] is not None)
    out.deleted = removed.id
    return out


@click.command()
@click.option("-f", "--force", is_flag=True,
              help="Remove images containers use, and images with several tags by id.")
@click.option("-a", "--all", "all_", is_flag=True, help="Remove every image.")
@click.argument("images", nargs=-1)
@handle_errors
def rmi(force: bool, all_: bool, images: tuple[str, ...]) -> None:
    """Remove IMAGE(s) by name or id."""
    if not images and not all_:
        raise UsageError("which image?", hint="sbx rmi IMAGE..., or sbx rmi --all")
    ctx = ImageContext()
    store = ctx.store
    targets = [r.id for r in store.list_images()] if all_ else list(images)
    errors: list[SbxError] = []
    for text in targets:
        try:
            result = remove(store, text, force=force, by_id_ok=all_)
        except SbxError as err:
            errors.append(err)
            continue
        for name in result.untagged:
            click.echo(f"Untagged: {name}")
        if result.deleted:
            click.echo(f"Deleted: {result.deleted.partition(':')[2]}")
    store.prune()
    ctx.prune_shifted()
    for err in errors[:-1]:
        click.echo(f"sbx: {err.message}", err=True)
    if errors:
        raise errors[-1]
