"""`sbx wait`: block until containers are not running; print each exit code.

As podman's default condition ("stopped"), a created container that never ran
counts as not running. A detached --rm container's code is read, once it is
removed, from the exit file its monitor leaves in the runtime directory (conmon's
--exit-dir), also when `wait` is given its full id after the removal.
"""

from __future__ import annotations

import click

from sandbox.cli import handle_errors
from sandbox.errors import SbxError


@click.command()
@click.argument("containers", nargs=-1, required=True)
@handle_errors
def wait(containers: tuple[str, ...]) -> None:
    """Wait for containers to exit and print their exit codes."""
    from sandbox.containers import lifecycle
    from sandbox.containers.names import is_full_id
    from sandbox.containers.store import ContainerStore, NoSuchContainer

    store = ContainerStore()
    errors: list[SbxError] = []
    for name in containers:
        try:
            try:
                found = store.lookup(name)
            except NoSuchContainer:
                code = lifecycle.read_exit_file(name) if is_full_id(name) else None
                if code is None:
                    raise
                click.echo(str(code))
                continue
            click.echo(str(lifecycle.wait(store, found)))
        except SbxError as exc:
            errors.append(exc)
    for err in errors[:-1]:
        click.echo(f"sbx: {err.message}", err=True)
    if errors:
        raise errors[-1]
