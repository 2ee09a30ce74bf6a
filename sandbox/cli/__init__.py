"""The sbx command line: the only code that prints to the user or exits.

Commands load lazily (click's LazyGroup pattern): `sbx --help` and `sbx run` import
only the module of the verb they run, so start-up stays fast. Every verb lives in
its own module under `sandbox.cli`, as crun keeps one file per verb.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import click

from sandbox.errors import EXIT_SBX, SbxError

# verb -> "module:attribute" under sandbox.cli, and a one-line help shown by --help
# without importing the module.
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("sandbox.cli.run:run", "Run a command in a new container."),
    "system": ("sandbox.cli.system:system", "Check and describe the host."),
    "info": ("sandbox.cli.system:info", "Show how sbx sees this host (--check to check it)."),
    "unshare": ("sandbox.cli.unshare:unshare", "Run a command as root of your user namespace."),
    "pull": ("sandbox.cli.pull:pull", "Pull an image from a registry."),
    "push": ("sandbox.cli.push:push", "Push an image to a registry."),
    "login": ("sandbox.cli.login:login", "Log in to a registry."),
    "logout": ("sandbox.cli.login:logout", "Log out of a registry."),
    "images": ("sandbox.cli.images:images", "List images."),
    "image": ("sandbox.cli.image:image", "Manage images (inspect, prune, ls, rm, ...)."),
    "rmi": ("sandbox.cli.rmi:rmi", "Remove images."),
    "tag": ("sandbox.cli.tag:tag", "Add names to an image."),
    "save": ("sandbox.cli.save:save", "Write an image to an archive."),
    "load": ("sandbox.cli.load:load", "Load images from an archive."),
    "create": ("sandbox.cli.create:create", "Create a container without starting it."),
    "start": ("sandbox.cli.start:start", "Start containers (-a: in the foreground)."),
    "stop": ("sandbox.cli.stop:stop", "Stop running containers."),
    "kill": ("sandbox.cli.kill:kill", "Send a signal to running containers."),
    "restart": ("sandbox.cli.restart:restart", "Stop and start containers again."),
    "rm": ("sandbox.cli.rm:rm", "Remove containers."),
    "ps": ("sandbox.cli.ps:ps", "List containers."),
    "wait": ("sandbox.cli.wait:wait", "Wait for containers to exit; print their codes."),
    "inspect": ("sandbox.cli.inspect:inspect", "Show containers' (or images') details."),
    "logs": ("sandbox.cli.logs:logs", "Show a container's output."),
    "rename": ("sandbox.cli.rename:rename", "Rename a container."),
    "commit": ("sandbox.cli.commit:commit", "Make an image from a container's changes."),
    "diff": ("sandbox.cli.diff:diff", "Show a container's changes to its image (A/C/D)."),
    "cp": ("sandbox.cli.cp:cp", "Copy files between a container and the host."),
    "export": ("sandbox.cli.export:export", "Export a container's filesystem as a tar."),
    "exec": ("sandbox.cli.exec:exec_", "Run a command in a running container."),
    "top": ("sandbox.cli.top:top", "Show a running container's processes."),
    "attach": ("sandbox.cli.attach:attach", "Attach to a running container's input and output."),
    "container": ("sandbox.cli.container:container",
                  "Manage containers (ls, inspect, prune, rm, ...)."),
    "profile": ("sandbox.cli.profile:profile",
                "Profiles: list, show, validate, init (docs/profiles.md)."),
    "shell": ("sandbox.cli.shell:shell", "Enter a profile with a login shell."),
    "lock": ("sandbox.cli.lock:lock", "Pin profiles' images by digest in sbx.lock."),
    "volume": ("sandbox.cli.volume:volume", "Manage volumes (create, ls, inspect, rm, prune)."),
    "generate": ("sandbox.cli.generate:generate",
                 "Generate files from profiles (kube: a Kubernetes Pod)."),
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use.

    `table` maps each verb to ("module:attribute", one-line help); `unlisted` verbs
    (aliases such as `container ps`) work but are not listed. Groups of their own
    (`sbx image`, `sbx container`) subclass it with their own table.
    """

    table: dict[str, tuple[str, str]] = COMMANDS
    unlisted: frozenset[str] = frozenset()

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(k for k in self.table if k not in self.unlisted)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = self.table.get(cmd_name)
        if entry is None:
            return None
        module_name, _, attr = entry[0].partition(":")
        return getattr(importlib.import_module(module_name), attr)  # type: ignore[no-any-return]

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, self.table[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def fail(err: SbxError) -> NoReturn:
    """Print an error once, with its hint, and exit with its code."""
    click.echo(f"sbx: {err.message}", err=True)
    if err.hint:
        click.echo(f"hint: {err.hint}", err=True)
    sys.exit(err.exit_code)


def warn(message: str) -> None:
    click.echo(f"sbx: warning: {message}", err=True)


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator for commands: turn SbxError into a message and an exit code."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SbxError as err:
            fail(err)

    return wrapper


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from sandbox import __version__

    click.echo(f"sbx version {__version__}")
    ctx.exit()


# A plain eager option rather than click.version_option, which imports locale and
# importlib.metadata machinery (~0.7 ms) on every start, `sbx run` included.
@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True,
              callback=_print_version, help="Show the version and exit.")
def cli() -> None:
    """sbx: rootless, daemonless containers for developers."""


def main() -> None:
    try:
        # In non-standalone mode click returns ctx.exit(N)'s code instead of exiting.
        rv = cli.main(prog_name="sbx", standalone_mode=False)
        if isinstance(rv, int):
            sys.exit(rv)
    except click.exceptions.Abort:
        click.echo("Aborted!", err=True)
        sys.exit(EXIT_SBX)
    except click.ClickException as exc:
        # podman exits 125 on bad usage, where click would exit 2.
        exc.show()
        sys.exit(EXIT_SBX)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except SbxError as err:
        fail(err)
