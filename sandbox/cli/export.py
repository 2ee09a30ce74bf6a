"""`sbx export`: a container's filesystem as a tar archive, as `podman export`.

The merged root (image layers and the container's changes) with owners as the
container sees them; mounts are left out (volumes, /proc, /dev: their directories
are listed, not their content, as tar --one-file-system), so a running container
exports the same files as a stopped one. To stdout unless it is a terminal, where
`-o FILE` is needed (docker and podman refuse to write an archive to a terminal).
"""

from __future__ import annotations

import contextlib
import os
import sys

import click

from sandbox.cli import handle_errors
from sandbox.errors import UsageError


@click.command()
@click.option("-o", "--output", metavar="FILE", help="Write to FILE instead of stdout.")
@click.argument("container")
@handle_errors
def export(output: str | None, container: str) -> None:
    """Export CONTAINER's filesystem as a tar archive."""
    from sandbox.containers import archive as ar
    from sandbox.containers import enter
    from sandbox.containers.store import ContainerStore

    store = ContainerStore()
    ctr = store.lookup(container)
    if output is None and sys.stdout.isatty():
        raise UsageError("refusing to write an archive to a terminal",
                         hint=f"use -o FILE, or redirect: sbx export {container} > out.tar")
    if output is not None and output != "-":
        try:
            fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise UsageError(f"can't write {output}: {exc.strerror}") from None
    else:
        sys.stdout.flush()
        fd = os.dup(sys.stdout.fileno())
    source = ar.Source("/", True, True)
    skip = enter.mount_points(ctr)  # a running container's /proc, /dev, volumes, ...

    def produce() -> None:
        with os.fdopen(fd, "wb", closefd=False) as f:
            ar.write_tree(f, source, one_fs=True, top_entry=False, skip=skip)

    try:
        enter.call(store, ctr, produce, volumes=False)
    except enter.Failure as err:
        if err.kind == "BrokenPipeError":
            # The reader went away (`sbx export C | head`): end as cat(1) does on
            # SIGPIPE, quietly, with 128+13.
            sys.exit(141)
        if output is not None and output != "-":
            with contextlib.suppress(OSError):
                os.unlink(output)
        raise
    except BaseException:
        if output is not None and output != "-":
            with contextlib.suppress(OSError):
                os.unlink(output)
        raise
    finally:
        os.close(fd)
