"""`sbx push`: publish an image from the store to a registry.

`sbx push IMAGE` pushes to the name IMAGE has; `sbx push IMAGE DEST` to another
name (docker://DEST as podman writes it works too). The manifest goes up byte for
byte, so the pushed image has the digest it had when pulled (see images/push.py).
"""

from __future__ import annotations

import sys

import click

from sandbox.cli import handle_errors
from sandbox.cli.images import ImageContext, strip_transport, tls_verify_option
from sandbox.errors import UsageError


@click.command()
@tls_verify_option
@click.option("-q", "--quiet", is_flag=True, help="Print no progress.")
@click.option("--digestfile", metavar="FILE", help="Write the pushed manifest's digest here.")
@click.argument("image")
@click.argument("destination", required=False)
@handle_errors
def push(tls_verify: bool, quiet: bool, digestfile: str | None, image: str,
         destination: str | None) -> None:
    """Push IMAGE to its registry, or to DESTINATION."""
    from sandbox.images import progress as prog
    from sandbox.images.pull import connect, find_local_name, manifest_for
    from sandbox.images.push import push as do_push
    from sandbox.registry.reference import parse_reference

    ctx = ImageContext()
    store = ctx.store
    record, matched = find_local_name(store, strip_transport(image))
    if destination is None:
        if matched is None:
            raise UsageError(f"{image} is an image id; say where to push it",
                             hint=f"sbx push {image} REGISTRY/REPOSITORY:TAG")
        destination = matched
    dest = parse_reference(strip_transport(destination))
    progress = prog.for_stream(sys.stderr, quiet=quiet)
    progress.note(f"Pushing {dest}...")
    with connect(dest.registry, dest.repository, tls_verify=tls_verify) as client:
        try:
            result = do_push(store, record, dest, client, progress=progress,
                             manifest_digest=manifest_for(store, record, matched))
        finally:
            progress.close()
    if digestfile:
        with open(digestfile, "w") as f:
            f.write(result.manifest_digest)
