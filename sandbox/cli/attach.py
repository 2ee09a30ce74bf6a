"""`sbx attach`: the terminal to a running, detached container (containers/attach.py).

Its output from now on comes here; with -i (as created) our stdin goes to it, until
the detach keys (ctrl-p,ctrl-q) leave it running. The exit status is the
container's when it ends while attached (docker's; podman 4.3.1 exits 0), 0 after a
detach.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import click

from sandbox.cli import handle_errors

DETACH_KEYS_HELP = "Keys that detach and leave the container running ('' for none)."


def attach_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The options `sbx attach` and `sbx start -a` share."""
    fn = click.option("--detach-keys", default="ctrl-p,ctrl-q", show_default=True,
                      metavar="KEYS", help=DETACH_KEYS_HELP)(fn)
    fn = click.option("--sig-proxy/--no-sig-proxy", default=True, show_default=True,
                      help="Send our signals to the container (without a terminal).")(fn)
    return fn


@click.command()
@click.option("--no-stdin", is_flag=True, help="Do not pass our stdin to it.")
@attach_options
@click.argument("container")
@handle_errors
def attach(no_stdin: bool, detach_keys: str, sig_proxy: bool, container: str) -> None:
    """Attach to a running container's input and output."""
    from sandbox.containers.store import ContainerStore

    store = ContainerStore()
    exit_with(attach_to(store, store.lookup(container), stdin=not no_stdin,
                        detach_keys=detach_keys, sig_proxy=sig_proxy))


def attach_to(store: Any, found: Any, *, stdin: bool, detach_keys: str,
              sig_proxy: bool) -> int:
    """Attach; the container's exit status once it ended, 0 after a detach."""
    from sandbox.containers import attach as attachmod
    from sandbox.containers import lifecycle

    def proxy(sig: int) -> None:
        current = store.load(found.id)
        if current is not None and current.running:
            lifecycle.send_signal(current, sig)

    ended = attachmod.attach(found, stdin=stdin, detach_keys=detach_keys,
                             sig_proxy=sig_proxy, send_signal=proxy)
    if not ended:
        return 0
    try:
        return lifecycle.wait(store, found, timeout=30)
    except TimeoutError:
        return 0  # the monitor closed our socket but has not recorded an exit yet


def exit_with(code: int) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
