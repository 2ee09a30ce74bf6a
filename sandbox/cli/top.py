"""`sbx top`: a running container's processes (sandbox/containers/top.py).

`sbx top C` shows podman top's default columns; `sbx top C pid user args` the
descriptors named. Anything that is not a descriptor (`sbx top C -ef`) is handed
to the container's own ps(1), as podman top does.
"""

from __future__ import annotations

import os
import sys

import click

from sandbox.cli import handle_errors


@click.command(context_settings={"allow_interspersed_args": False,
                                 "ignore_unknown_options": True,
                                 "help_option_names": ["-h", "--help"]})
@click.argument("container")
@click.argument("descriptors", nargs=-1, type=click.UNPROCESSED)
@handle_errors
def top(container: str, descriptors: tuple[str, ...]) -> None:
    """Show the processes of a running container.

    \b
    sbx top CONTAINER [DESCRIPTOR...]     user pid ppid pcpu etime tty time args
    sbx top CONTAINER [ps OPTIONS]        the container's own ps, e.g. -ef
    """
    from sandbox.containers import top as topmod
    from sandbox.containers.store import ContainerStore

    found = ContainerStore().lookup(container)
    try:
        names = topmod.parse_descriptors(descriptors)
    except topmod.UnknownDescriptor as unknown:
        _container_ps(found, descriptors, unknown)
        return
    header, rows = topmod.processes(found, names)
    click.echo(topmod.table(header, rows), nl=False)


def _container_ps(found: object, args: tuple[str, ...], unknown: Exception) -> None:
    """podman's fallback: run `ps ARGS` in the container; without a ps there, the
    unknown descriptor is the error."""
    import errno

    from sandbox.containers import exec as execmod
    from sandbox.errors import ExecError

    try:
        code = execmod.run(found, execmod.ExecOptions(["ps", *args]),  # type: ignore[arg-type]
                           os.environ)
    except ExecError as exc:
        if exc.errno == errno.ENOENT:
            raise unknown from None
        raise
    sys.stdout.flush()
    os._exit(code or 0)
