"""`sbx save`: write an image to an archive, docker-archive (podman's default) or
oci-archive. To a file with -o (written beside it and renamed into place, so a
failed save leaves no partial archive), else to stdout if it isn't a terminal."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile

import click

from sandbox.cli import handle_errors
from sandbox.cli.images import ImageContext
from sandbox.errors import SbxError, UsageError
from sandbox.images.archive import FORMATS


@click.command()
@click.option("-o", "--output", metavar="FILE", help="Write to FILE instead of stdout.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="docker-archive",
              show_default=True, help="Archive format.")
@click.option("-q", "--quiet", is_flag=True, help="Print no progress.")
@click.argument("image")
@handle_errors
def save(output: str | None, fmt: str, quiet: bool, image: str) -> None:
    """Save IMAGE to an archive that `sbx load`, `podman load` or `docker load` read."""
    from sandbox.images import archive
    from sandbox.images import progress as prog
    from sandbox.images.pull import find_local_name, manifest_for

    store = ImageContext().store
    record, matched = find_local_name(store, image)
    # Saved by one of its names, the archive carries that name (as podman's does);
    # saved by id, all of them.
    names = [matched] if matched else None
    manifest = manifest_for(store, record, matched)
    progress = prog.for_stream(sys.stderr, quiet=quiet or output is None)
    if output is None or output == "-":
        if sys.stdout.isatty():
            raise UsageError("refusing to write an image archive to a terminal",
                             hint="use -o FILE, or redirect stdout")
        archive.save(store, record, sys.stdout.buffer, fmt, progress,  # type: ignore[arg-type]
                     names=names, manifest_digest=manifest)
        sys.stdout.flush()
        return
    target = os.path.abspath(output)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.",
                                   dir=os.path.dirname(target))
    except OSError as exc:
        raise SbxError(f"can't write {output}: {exc.strerror}",
                       hint="choose a folder you can write to") from None
    try:
        with os.fdopen(fd, "wb") as f:
            archive.save(store, record, f, fmt, progress, names=names, manifest_digest=manifest)  # type: ignore[arg-type]
        os.chmod(tmp, 0o644 & ~_umask())
        os.replace(tmp, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise SbxError(f"can't write {output}: {exc.strerror}") from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    finally:
        progress.close()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
