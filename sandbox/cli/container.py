"""`sbx container`: the container verbs grouped as podman groups them, and what the
container verbs share.

`sbx container ls|ps|list|create|run|start|stop|kill|restart|rm|wait|inspect|logs|
rename|prune` are the same commands as the top-level ones (`ls` is `ps`), imported
lazily like the top-level verbs; `prune` lives here. `each()` applies a verb to
several containers as podman does: every name is tried, each error is printed, and
the exit code is the last error's (or a verb's own rule, see rm).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import click

from sandbox.cli import LazyGroup, handle_errors
from sandbox.errors import SbxError

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "ls": ("sandbox.cli.ps:ps", "List containers (same as sbx ps)."),
    "list": ("sandbox.cli.ps:ps", "List containers (same as sbx ps)."),
    "ps": ("sandbox.cli.ps:ps", "List containers."),
    "create": ("sandbox.cli.create:create", "Create a container without starting it."),
    "run": ("sandbox.cli.run:run", "Run a command in a new container."),
    "start": ("sandbox.cli.start:start", "Start containers."),
    "stop": ("sandbox.cli.stop:stop", "Stop running containers."),
    "kill": ("sandbox.cli.kill:kill", "Send a signal to running containers."),
    "restart": ("sandbox.cli.restart:restart", "Stop and start containers again."),
    "rm": ("sandbox.cli.rm:rm", "Remove containers."),
    "wait": ("sandbox.cli.wait:wait", "Wait for containers to exit; print their codes."),
    "inspect": ("sandbox.cli.inspect:container_inspect", "Show containers' details."),
    "logs": ("sandbox.cli.logs:logs", "Show a container's output."),
    "rename": ("sandbox.cli.rename:rename", "Rename a container."),
    "exec": ("sandbox.cli.exec:exec_", "Run a command in a running container."),
    "top": ("sandbox.cli.top:top", "Show a running container's processes."),
    "attach": ("sandbox.cli.attach:attach", "Attach to a running container."),
    "prune": ("sandbox.cli.container:prune", "Remove every container that is not running."),
}


class _ContainerGroup(LazyGroup):
    table = SUBCOMMANDS
    unlisted = frozenset({"list", "ps"})


@click.group(cls=_ContainerGroup, context_settings={"help_option_names": ["-h", "--help"]})
def container() -> None:
    """Manage containers."""


def each(names: Sequence[str], fn: Callable[[Any, str], None],
         code_for: Callable[[list[SbxError]], int] | None = None) -> None:
    """Look up each name and call fn(container, name); print every error but the
    last, then raise the last (with `code_for`'s exit code when given)."""
    from sandbox.containers.store import ContainerStore

    store = ContainerStore()
    errors: list[SbxError] = []
    for name in names:
        try:
            fn(store.lookup(name), name)
        except SbxError as exc:
            errors.append(exc)
    for err in errors[:-1]:
        click.echo(f"sbx: {err.message}", err=True)
    if errors:
        last = errors[-1]
        if code_for is not None:
            last.exit_code = code_for(errors)
        raise last


def warn_kill(name: str) -> Callable[[str, float], None]:
    def on_kill(sig: str, timeout: float) -> None:
        from sandbox.cli import warn

        warn(f"StopSignal {sig} failed to stop container {name} in {timeout:g} seconds, "
             "resorting to SIGKILL")

    return on_kill


@click.command("prune")
@click.option("-f", "--force", is_flag=True, help="Do not ask for confirmation.")
@handle_errors
def prune(force: bool) -> None:
    """Remove every container that is not running."""
    from sandbox.containers import lifecycle
    from sandbox.containers.store import ContainerStore

    if not force and not click.confirm(
        "WARNING! This will remove all non running containers.\n"
        "Are you sure you want to continue?", default=False
    ):
        return
    removed, errors = lifecycle.prune(ContainerStore())
    for cid in removed:
        click.echo(cid)
    for err in errors:
        click.echo(f"sbx: {err}", err=True)
    if errors:
        raise SbxError(f"{len(errors)} container(s) could not be removed")


__all__ = ["container", "each", "prune", "warn_kill"]
