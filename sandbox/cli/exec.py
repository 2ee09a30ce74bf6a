"""`sbx exec`: run a command in a running container (sandbox/containers/exec.py).

Exit status as podman's: the command's own, 126 when it cannot be executed, 127 when
it is not found, 125 when sbx failed (the container is not running, an unknown -u
user). With -d nothing is printed and the command's output goes nowhere.
"""

from __future__ import annotations

import os
import sys

import click

from sandbox.cli import handle_errors
from sandbox.cli.options import read_env_file
from sandbox.errors import UsageError


@click.command(name="exec", context_settings={"allow_interspersed_args": False,
                                              "help_option_names": ["-h", "--help"]})
@click.option("-i", "--interactive", is_flag=True, help="Pass our stdin to the command.")
@click.option("-t", "--tty", is_flag=True, help="Give it a pseudo-terminal.")
@click.option("-d", "--detach", is_flag=True, help="Run it in the background.")
@click.option("-u", "--user", metavar="USER[:GROUP]",
              help="Run as this user of the container (name or uid, :group or :gid).")
@click.option("-e", "--env", multiple=True, metavar="KEY[=VALUE]",
              help="Set an environment variable (KEY alone passes ours).")
@click.option("--env-file", multiple=True, metavar="FILE", help="Read KEY=VALUE lines.")
@click.option("-w", "--workdir", metavar="DIR", help="Working directory inside.")
@click.argument("container")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@handle_errors
def exec_(interactive: bool, tty: bool, detach: bool, user: str | None,
          env: tuple[str, ...], env_file: tuple[str, ...], workdir: str | None,
          container: str, command: tuple[str, ...]) -> None:
    """Run a command in a running container.

    \b
    sbx exec [OPTIONS] CONTAINER COMMAND [ARG...]
    """
    from sandbox.containers import exec as execmod
    from sandbox.containers.store import ContainerStore

    if not command:
        raise UsageError("no command given", hint="sbx exec [OPTIONS] CONTAINER COMMAND [ARG...]")
    if detach and (interactive or tty):
        # -d attaches nothing, so -i and -t have nothing to attach to.
        interactive = tty = False
    opts = execmod.ExecOptions(command, interactive=interactive, tty=tty, detach=detach,
                               user=user, env=env,
                               env_files=[read_env_file(p) for p in env_file],
                               workdir=workdir)
    found = ContainerStore().lookup(container)
    code = execmod.run(found, opts, os.environ)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)
