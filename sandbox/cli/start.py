"""`sbx start`: start created or exited containers; `-a` runs one in the foreground.

Without -a each container gets a detached monitor (sandbox/containers/monitor.py)
and its name is printed as given, as podman does. With -a this command is the
monitor: the container's output comes here and to its log, and its exit status
becomes this command's. Starting a running container does nothing; with -a it
attaches to it (`sbx attach`, through its monitor's attach socket).
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from sandbox.cli import handle_errors
from sandbox.cli.attach import attach_options
from sandbox.errors import UsageError


@click.command()
@click.option("-a", "--attach", is_flag=True,
              help="Run in the foreground: its output here, its exit code ours.")
@click.option("-i", "--interactive", is_flag=True, help="With -a: pass our stdin to it.")
@attach_options
@click.argument("containers", nargs=-1, required=True)
@handle_errors
def start(attach: bool, interactive: bool, detach_keys: str, sig_proxy: bool,
          containers: tuple[str, ...]) -> None:
    """Start one or more containers."""
    from sandbox.cli.container import each
    from sandbox.containers import lifecycle
    from sandbox.containers.store import ContainerStore

    if attach:
        if len(containers) != 1:
            raise UsageError("start -a takes one container",
                             hint="start the others without -a")
        store = ContainerStore()
        found = store.lookup(containers[0])
        if found.running:
            from sandbox.cli.attach import attach_to, exit_with

            exit_with(attach_to(store, found, stdin=interactive, detach_keys=detach_keys,
                                sig_proxy=sig_proxy))
        code = lifecycle.start(store, found, attach=True,
                               interactive=interactive or bool(found.config.get("interactive")))
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code or 0)

    def one(found: Any, name: str) -> None:
        lifecycle.start(ContainerStore(), found)
        click.echo(name)

    each(containers, one)
