"""`sbx image`: the image verbs grouped as podman groups them, and `inspect` and `prune`.

`sbx image ls|rm|tag|pull|push|save|load` are the same commands as `sbx
images|rmi|tag|pull|push|save|load`, imported lazily like the top-level verbs.
`inspect` prints podman's fields (Id, Digest, RepoTags, RepoDigests, Created,
Architecture, Os, Config, RootFS, Size, ...) as JSON, or through a --format
template; `prune` removes dangling images (no name), or with -a every image no
container uses, then the blobs and layers nothing references.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from sandbox.cli import LazyGroup, handle_errors
from sandbox.cli.images import (
    ImageContext,
    echo_json,
    find_image,
    image_created,
    images_options,
    list_images,
    render_template,
)
from sandbox.errors import SbxError
from sandbox.images.store import ImageRecord, Store

# subcommand -> "module:attribute", and its help line (shown without importing it)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "inspect": ("sandbox.cli.image:inspect", "Show an image's details as JSON."),
    "prune": ("sandbox.cli.image:prune", "Remove dangling (or, with -a, unused) images."),
    "ls": ("sandbox.cli.image:ls", "List images (same as sbx images)."),
    "list": ("sandbox.cli.image:ls", "List images (same as sbx images)."),
    "rm": ("sandbox.cli.rmi:rmi", "Remove images (same as sbx rmi)."),
    "tag": ("sandbox.cli.tag:tag", "Add names to an image."),
    "pull": ("sandbox.cli.pull:pull", "Pull an image from a registry."),
    "push": ("sandbox.cli.push:push", "Push an image to a registry."),
    "save": ("sandbox.cli.save:save", "Write an image to an archive."),
    "load": ("sandbox.cli.load:load", "Load images from an archive."),
}


class _ImageGroup(LazyGroup):
    table = SUBCOMMANDS
    unlisted = frozenset({"list"})


@click.group(cls=_ImageGroup, context_settings={"help_option_names": ["-h", "--help"]})
def image() -> None:
    """Manage images."""


@click.command("ls")
@images_options
@handle_errors
def ls(repository: str | None, all_: bool, quiet: bool, digests: bool, no_trunc: bool,
       noheading: bool, fmt: str | None) -> None:
    """List the images in the store."""
    del all_
    list_images(ImageContext(), repository, quiet=quiet, digests=digests, no_trunc=no_trunc,
                fmt=fmt, noheading=noheading)


def inspect_data(store: Store, record: ImageRecord) -> dict[str, Any]:
    """An image as `podman image inspect` shows it."""
    from sandbox.images.config import history_for_inspect, load_config
    from sandbox.images.pull import layer_dirs, repo_digests, repo_tags
    from sandbox.registry import media

    config = load_config(store, record)
    manifest_bytes = store.read_blob(record.manifest_digest)
    media_type = media.detect_media_type(manifest_bytes)
    manifest = media.parse_manifest(manifest_bytes, media_type)
    annotations = dict(manifest.annotations) if manifest.annotations else {}
    created = image_created(store, record, config)
    dirs = [str(p) for p in layer_dirs(store, record)]
    data: dict[str, Any] = {
        "Id": record.id.partition(":")[2],
        "Digest": record.manifest_digest,
        "RepoTags": repo_tags(record),
        "RepoDigests": repo_digests(record),
        "Parent": "",
        "Comment": str(config.raw.get("comment", "")),
        "Created": created.isoformat().replace("+00:00", "Z") if created else None,
        "Config": dict(config.run_config),
        "Version": str(config.raw.get("docker_version", "")),
        "Author": config.author or "",
        "Architecture": config.architecture,
        "Os": config.os,
        "Size": record.size,
        "VirtualSize": record.size,
        "GraphDriver": {
            "Name": "overlay",
            # overlayfs order: the top layer first, as podman prints LowerDir.
            "Data": {"LowerDir": ":".join(reversed(dirs[:-1])), "UpperDir": dirs[-1]}
            if dirs else {},
        },
        "RootFS": {"Type": "layers", "Layers": list(config.diff_ids)},
        "Labels": dict(config.labels) or None,
        "Annotations": annotations,
        "ManifestType": media_type,
        "User": config.user,
        "History": history_for_inspect(config.history),
        "NamesHistory": list(record.names),
    }
    if config.variant:
        data["Variant"] = config.variant
    return data


@click.command()
@click.option("-f", "--format", "fmt", metavar="json|TEMPLATE",
              help="json (default), or a Go template such as '{{.Id}} {{.Config.Cmd}}'.")
@click.argument("images", nargs=-1, required=True)
@handle_errors
def inspect(fmt: str | None, images: tuple[str, ...]) -> None:
    """Show IMAGE(s) in detail."""
    store = ImageContext().store
    found: list[dict[str, Any]] = []
    errors: list[SbxError] = []
    for text in images:
        try:
            found.append(inspect_data(store, find_image(store, text)))
        except SbxError as err:
            errors.append(err)
    if fmt in (None, "", "json"):
        echo_json(found)
    else:
        for data in found:
            click.echo(render_template(fmt, data))
    for err in errors[:-1]:
        click.echo(f"sbx: {err.message}", err=True)
    if errors:
        raise errors[-1]


@click.command()
@click.option("-a", "--all", "all_", is_flag=True,
              help="Remove every image no container uses, not only dangling ones.")
@click.option("-f", "--force", is_flag=True, help="Don't ask for confirmation.")
@handle_errors
def prune(all_: bool, force: bool) -> None:
    """Remove dangling images (those without a name), then unreferenced layers."""
    from sandbox.images.usage import image_in_use

    if not force and sys.stdin.isatty():
        what = "all images not used by containers" if all_ else "all dangling images"
        click.confirm(f"WARNING! This command removes {what}.\nAre you sure you want "
                      "to continue?", abort=True)
    ctx = ImageContext()
    store = ctx.store
    for record in store.list_images():
        if (all_ or not record.names) and not image_in_use(record.id):
            store.remove_image(record.id)
            click.echo(record.id.partition(":")[2])
    store.prune()
    ctx.prune_shifted()
