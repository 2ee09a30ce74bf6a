"""`sbx load`: load images from an oci-archive or docker-archive (file or stdin).

Archives are read with random access; stdin that is a pipe is first copied to a
temporary file. Prints `Loaded image: NAME` for each name, as podman does (the id
for an image without names).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from typing import IO

import click

from sandbox.cli import handle_errors
from sandbox.cli.images import ImageContext
from sandbox.errors import UsageError


def _seekable(f: IO[bytes]) -> bool:
    try:
        return f.seekable()
    except (AttributeError, ValueError):
        return False


@click.command()
@click.option("-i", "--input", "input_", metavar="FILE", help="Read FILE instead of stdin.")
@click.option("-q", "--quiet", is_flag=True, help="Print no progress.")
@handle_errors
def load(input_: str | None, quiet: bool) -> None:
    """Load the images of an archive made by sbx, podman or docker save."""
    from sandbox.images import archive
    from sandbox.images import progress as prog

    ctx = ImageContext()
    progress = prog.for_stream(sys.stderr, quiet=quiet)
    if input_ and input_ != "-":
        try:
            source: IO[bytes] = open(input_, "rb")  # noqa: SIM115 (closed below)
        except OSError as exc:
            raise UsageError(f"can't read {input_}: {exc.strerror}") from None
    else:
        if sys.stdin.isatty():
            raise UsageError("no archive to load: stdin is a terminal",
                             hint="sbx load -i FILE, or sbx load < FILE")
        source = sys.stdin.buffer
        if not _seekable(source):
            spool = tempfile.TemporaryFile(prefix="sbx-load-")  # noqa: SIM115
            shutil.copyfileobj(source, spool, 1 << 20)
            spool.seek(0)
            source = spool
    try:
        loaded = archive.load(ctx.store, source, ctx.unpacker, progress)  # type: ignore[arg-type]
    finally:
        progress.close()
        source.close()
    for item in loaded:
        for name in item.names or [item.image.id]:
            click.echo(f"Loaded image: {name}")
