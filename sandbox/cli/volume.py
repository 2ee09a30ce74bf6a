"""`sbx volume`: create, ls, inspect, rm, prune and exists, as `podman volume`.

Exit codes are podman's: `rm` of a volume a container uses is refused with 2 (`-f`
removes those containers first, as podman's does), of a missing one 1; `exists`
answers with 0 or 1. The store is sandbox/volumes/store.py.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any

import click

from sandbox.cli import handle_errors
from sandbox.cli.options import parse_labels
from sandbox.errors import SbxError, UsageError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def volume() -> None:
    """Manage volumes: directories that outlive containers (-v NAME:/PATH)."""


def _users() -> dict[str, list[str]]:
    """Volume name -> ids of the containers that use it."""
    from sandbox.containers.store import ContainerStore
    from sandbox.volumes.store import users_of

    return users_of(ContainerStore().list())


@volume.command()
@click.option("-l", "--label", "labels", multiple=True, metavar="KEY=VALUE",
              help="Set a label on the volume.")
@click.option("-d", "--driver", default="local", show_default=True,
              help="Volume driver (only local).")
@click.option("--ignore", is_flag=True, help="No error if the volume exists already.")
@click.argument("name", required=False)
@handle_errors
def create(labels: tuple[str, ...], driver: str, ignore: bool, name: str | None) -> None:
    """Create a volume (a random name when NAME is not given); prints its name."""
    from sandbox.volumes.store import VolumeStore

    if driver != "local":
        raise UsageError(f"unsupported volume driver {driver!r}", hint="use --driver local")
    vol, _made = VolumeStore().create(name, parse_labels(labels), exist_ok=ignore)
    click.echo(vol.name)


@volume.command(name="ls")
@click.option("-q", "--quiet", is_flag=True, help="Print the names only.")
@click.option("-f", "--filter", "filters", multiple=True, metavar="KEY=VALUE",
              help="name=REGEX, label=KEY[=VALUE], driver=local, dangling=true|false.")
@click.option("--format", "fmt", metavar="json|TEMPLATE",
              help="json, or a Go-template-like line such as '{{.Name}}'.")
@handle_errors
def ls(quiet: bool, filters: tuple[str, ...], fmt: str | None) -> None:
    """List volumes."""
    from sandbox.volumes import filters as vf
    from sandbox.volumes.store import VolumeStore

    wanted = vf.parse(filters)
    in_use = _users() if "dangling" in wanted else {}
    found = [v for v in VolumeStore().list() if vf.matches(v, wanted, in_use)]
    if quiet:
        for v in found:
            click.echo(v.name)
        return
    if fmt == "json":
        from sandbox.cli.images import echo_json

        echo_json([v.inspect() for v in found])
        return
    if fmt:
        from sandbox.cli.images import render_template

        for v in found:
            click.echo(render_template(fmt, v.inspect()))
        return
    click.echo(f"{'DRIVER':<12}VOLUME NAME")
    for v in found:
        click.echo(f"{v.meta.get('driver', 'local'):<12}{v.name}")


volume.add_command(ls, name="list")


@volume.command()
@click.option("-a", "--all", "all_", is_flag=True, help="Inspect every volume.")
@click.option("-f", "--format", "fmt", metavar="json|TEMPLATE", help="json or a template.")
@click.argument("names", nargs=-1)
@handle_errors
def inspect(all_: bool, fmt: str | None, names: tuple[str, ...]) -> None:
    """Show volumes' details as JSON."""
    from sandbox.cli.images import echo_json, render_template
    from sandbox.volumes.store import VolumeStore

    store = VolumeStore()
    if all_:
        names = tuple(store.names())
    elif not names:
        raise UsageError("which volume?", hint="sbx volume inspect NAME..., or --all")
    datas: list[dict[str, Any]] = []
    errors: list[SbxError] = []
    for name in names:
        try:
            datas.append(store.get(name).inspect())
        except SbxError as exc:
            errors.append(exc)
    if fmt and fmt != "json":
        for d in datas:
            click.echo(render_template(fmt, d))
    else:
        echo_json(datas)
    _raise_last(errors, 125)


def _raise_last(errors: list[SbxError], code: int | None = None) -> None:
    for err in errors[:-1]:
        click.echo(f"sbx: {err.message}", err=True)
    if errors:
        last = errors[-1]
        if code is not None:
            last.exit_code = code
        raise last


@volume.command()
@click.option("-f", "--force", is_flag=True,
              help="Remove the containers that use the volume first.")
@click.option("-a", "--all", "all_", is_flag=True, help="Remove every volume.")
@click.argument("names", nargs=-1)
@handle_errors
def rm(force: bool, all_: bool, names: tuple[str, ...]) -> None:
    """Remove volumes (refused while a container uses one, unless -f)."""
    from sandbox.containers import lifecycle
    from sandbox.containers.store import ContainerStore, NoSuchContainer
    from sandbox.volumes.store import NoSuchVolume, VolumeInUse, VolumeStore

    store = VolumeStore()
    if all_:
        names = tuple(store.names())
    elif not names:
        raise UsageError("which volume?", hint="sbx volume rm NAME..., or --all")
    users = _users()
    errors: list[SbxError] = []
    for name in names:
        try:
            store.get(name)
            using = users.get(name, [])
            if using and not force:
                raise VolumeInUse(name, using)
            if using:
                containers = ContainerStore()
                for cid in using:
                    found = containers.load(cid)
                    if found is not None:
                        with contextlib.suppress(NoSuchContainer):
                            lifecycle.remove(containers, found, force=True)
            store.remove(name, lifecycle.remove_tree)
            click.echo(name)
        except SbxError as exc:
            errors.append(exc)
    if errors:
        # podman: 1 when every failure was a missing volume, 2 when a volume in use
        # was among them, 125 otherwise.
        if all(isinstance(e, NoSuchVolume) for e in errors):
            code = 1
        elif all(isinstance(e, (NoSuchVolume, VolumeInUse)) for e in errors):
            code = 2
        else:
            code = 125
        _raise_last(errors, code)


volume.add_command(rm, name="remove")


@volume.command()
@click.option("-f", "--force", is_flag=True, help="Do not ask for confirmation.")
@click.option("--filter", "filters", multiple=True, metavar="KEY=VALUE",
              help="Only volumes that match (name=, label=, driver=).")
@handle_errors
def prune(force: bool, filters: tuple[str, ...]) -> None:
    """Remove every volume no container uses (named and anonymous)."""
    import os
    import time

    from sandbox.containers import lifecycle
    from sandbox.volumes import filters as vf
    from sandbox.volumes.store import NoSuchVolume, VolumeStore

    wanted = vf.parse(filters)
    if not force:
        click.echo("WARNING! This will remove all volumes not used by at least one "
                   "container.", err=True)
        answer = click.prompt("Are you sure you want to continue? [y/N]", default="N",
                              show_default=False, err=True)
        if answer.strip().lower() not in ("y", "yes"):
            return
    store = VolumeStore()
    users = _users()
    errors: list[SbxError] = []
    for vol in store.list():
        if vol.name in users or not vf.matches(vol, wanted, users):
            continue
        try:
            store.remove(vol.name, lifecycle.remove_tree)
            click.echo(vol.name)
        except NoSuchVolume:
            continue
        except SbxError as exc:
            errors.append(exc)
    # What killed creates (.tmp-, given a minute to finish) and removals left.
    for path in store.leftovers():
        try:
            if os.path.basename(path).startswith(".tmp-") and \
                    time.time() - os.lstat(path).st_mtime < 60:
                continue
            lifecycle.remove_tree(path)
        except (OSError, SbxError):
            continue
    _raise_last(errors)


@volume.command()
@click.argument("name")
@handle_errors
def exists(name: str) -> None:
    """Exit 0 when volume NAME exists, 1 when it does not."""
    from sandbox.volumes.store import VolumeStore

    try:
        found = VolumeStore().load(name)
    except SbxError:
        found = None
    sys.exit(0 if found is not None else 1)
