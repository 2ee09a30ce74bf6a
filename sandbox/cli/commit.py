"""`sbx commit CONTAINER [IMAGE]`: a new image from a container's changes, as podman commit.

The container's writable layer becomes one new layer on top of its image's
(storage/layertar.py writes it, inside the user's namespace, where the files of
subordinate owners can be read; images/commit.py records the image). A running
container is committed as it is at that moment: sbx has no freezer on this
cgroup-v1 host to pause it as podman's `--pause` does, so a file being written
while the layer is read may be caught half-written.
"""

from __future__ import annotations

import os
from typing import Any

import click

from sandbox.cli import handle_errors
from sandbox.errors import SbxError


def commit_container(ctr: Any, *, names: list[str], changes: list[str] | None = None,
                     message: str = "", author: str = "",
                     labels: dict[str, str] | None = None, keep_cmd: bool = True) -> Any:
    """Commit the container record `ctr`; returns the new ImageRecord. Shared with
    the profile runner, which commits setup steps this way."""
    import functools

    from sandbox import paths
    from sandbox.cli.images import ImageContext
    from sandbox.images.commit import commit_image
    from sandbox.storage.layertar import write_layer_tar

    layers = list(ctr.config.get("layers") or [])
    driver = ctr.config.get("storage_driver") or "overlay"
    if not layers or not ctr.config.get("image_id"):
        raise SbxError(f"container {ctr.short_id} runs on a folder (--rootfs), not an "
                       "image: there is no image to commit on top of",
                       hint="tar the folder instead, or run the image with sbx run IMAGE")
    if driver == "vfs":
        raise SbxError(f"container {ctr.short_id} uses the vfs driver, which keeps a full "
                       "copy and no layer of changes to commit",
                       hint="use the overlay or fuse storage driver")
    upper = os.path.join(paths.container_layer_dir(ctr.id), "upper")
    if not os.path.isdir(upper):
        raise SbxError(f"container {ctr.short_id} has no writable layer (was it removed?)")
    ctx = ImageContext()
    store = ctx.store
    base = store.get_image(ctr.config["image_id"])

    def write(fd: int) -> tuple[str, int]:
        with os.fdopen(fd, "wb", closefd=False) as out:
            result = write_layer_tar(upper, out, layers)
            out.flush()
        return result

    with store.staged_file("commit-") as (fd, tmp):
        diff_id, size = ctx.in_userns(functools.partial(write, fd))
        store.adopt(tmp, diff_id)
    command = [*(ctr.config.get("entrypoint") or []), *(ctr.config.get("command") or [])]
    return commit_image(
        store, base, diff_id, size, ctx.unpacker, names=names,
        cmd=ctr.config.get("command") if keep_cmd else None,
        entrypoint=ctr.config.get("entrypoint") if keep_cmd else None,
        created_by=" ".join(command), message=message, author=author,
        changes=changes or [], labels=labels)


@click.command()
@click.option("-a", "--author", default="", metavar="TEXT", help="The image's author.")
@click.option("-m", "--message", default="", metavar="TEXT",
              help="A comment for the new layer's history.")
@click.option("-c", "--change", "changes", multiple=True, metavar="INSTRUCTION",
              help="Apply a Dockerfile instruction: CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, "
                   "STOPSIGNAL, USER, VOLUME, WORKDIR.")
@click.option("-q", "--quiet", is_flag=True,
              help="Print only the new image's id (what sbx prints anyway).")
@click.argument("container")
@click.argument("image", required=False)
@handle_errors
def commit(author: str, message: str, changes: tuple[str, ...], quiet: bool,
           container: str, image: str | None) -> None:
    """Make an image from CONTAINER's changes, named IMAGE (localhost/IMAGE:latest
    when it has no registry)."""
    from sandbox.containers.store import ContainerStore
    from sandbox.images.commit import apply_change, commit_name

    names = [commit_name(image)] if image else []
    for change in changes:
        apply_change({}, change)  # refuse a bad instruction before any work
    ctr = ContainerStore().lookup(container)
    record = commit_container(ctr, names=names, changes=list(changes), message=message,
                              author=author)
    click.echo(record.id.partition(":")[2])
