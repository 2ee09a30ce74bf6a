"""`sbx pull`: fetch an image from a registry into the store.

Prints what podman prints: progress on stderr (bars on a terminal, one line per blob
otherwise), then the image id (all 64 hex digits) on stdout; with -q only the id.
"""

from __future__ import annotations

import sys

import click

from sandbox.cli import handle_errors, warn
from sandbox.cli.images import ImageContext, strip_transport, tls_verify_option


@click.command()
@click.option("--platform", metavar="OS/ARCH[/VARIANT]",
              help="Pull the image for this platform (default: this host's).")
@tls_verify_option
@click.option("-q", "--quiet", is_flag=True, help="Print only the image id.")
@click.argument("image")
@handle_errors
def pull(platform: str | None, tls_verify: bool, quiet: bool, image: str) -> None:
    """Pull IMAGE from its registry (short names are on docker.io)."""
    from sandbox.images import progress as prog
    from sandbox.images.pull import connect
    from sandbox.images.pull import pull as do_pull
    from sandbox.registry.media import parse_platform
    from sandbox.registry.reference import parse_reference

    ref = parse_reference(strip_transport(image))
    want = parse_platform(platform) if platform else None
    ctx = ImageContext()
    store, unpacker = ctx.store, ctx.unpacker
    progress = prog.for_stream(sys.stderr, quiet=quiet)
    progress.note(f"Trying to pull {ref}...")
    with connect(ref.registry, ref.repository, tls_verify=tls_verify) as client:
        try:
            result = do_pull(ref, store, client, unpacker, platform=want, progress=progress)
        finally:
            progress.close()
    for message in result.warnings:
        warn(message)
    click.echo(result.image.id.partition(":")[2])
