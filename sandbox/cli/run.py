"""`sbx run`: run a command in a new container.

For now the container comes from a root filesystem folder (`--rootfs DIR`); images
and profiles arrive with their issues and plug in before `specgen.generate`.
"""

from __future__ import annotations

import os
import sys

import click

from sandbox.cli import handle_errors, warn
from sandbox.errors import SbxError, UsageError


def _read_env_file(path: str) -> tuple[str, str]:
    try:
        with open(path, encoding="utf-8") as f:
            return path, f.read()
    except OSError as exc:
        raise UsageError(f"can't read env file {path}: {exc.strerror}",
                         hint="--env-file takes a file of KEY=VALUE lines") from None


@click.command(context_settings={"allow_interspersed_args": False,
                                 "help_option_names": ["-h", "--help"]})
@click.option("--rootfs", "rootfs", metavar="DIR", required=True,
              help="Root filesystem folder to run in.")
@click.option("-e", "--env", multiple=True, metavar="KEY[=VALUE]",
              help="Set an environment variable (KEY alone passes the host's value).")
@click.option("--env-file", multiple=True, metavar="FILE", help="Read KEY=VALUE lines.")
@click.option("-w", "--workdir", metavar="DIR", help="Working directory inside.")
@click.option("-u", "--user", metavar="USER[:GROUP]",
              help="User to run as: name or uid, optionally :group or :gid.")
@click.option("--hostname", metavar="NAME", help="Container host name.")
@click.option("--read-only", is_flag=True, help="Mount the rootfs read-only.")
@click.option("-v", "--volume", multiple=True, metavar="HOST:CTR[:ro]",
              help="Bind-mount a host path.")
@click.option("--tmpfs", multiple=True, metavar="PATH[:OPTS]", help="Mount a tmpfs.")
@click.option("--cap-add", multiple=True, metavar="CAP", help="Add a capability (or ALL).")
@click.option("--cap-drop", multiple=True, metavar="CAP", help="Drop a capability (or ALL).")
@click.option("-i", "--interactive", is_flag=True, help="Keep stdin open.")
@click.option("-t", "--tty", is_flag=True, help="Allocate a pseudo-terminal.")
@click.option("--init", "init", is_flag=True, help="Run a reaping init as pid 1.")
@click.option("--userns", default="", metavar="MODE",
              help="'' (root inside is you) or keep-id (your uid inside too).")
@click.option("--network", "--net", default="host", metavar="MODE",
              help="host (default) or none.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED, required=True)
@handle_errors
def run(rootfs: str, env: tuple[str, ...], env_file: tuple[str, ...], workdir: str | None,
        user: str | None, hostname: str | None, read_only: bool, volume: tuple[str, ...],
        tmpfs: tuple[str, ...], cap_add: tuple[str, ...], cap_drop: tuple[str, ...],
        interactive: bool, tty: bool, init: bool, userns: str, network: str,
        command: tuple[str, ...]) -> None:
    """Run COMMAND in a new rootless container made from --rootfs DIR."""
    from sandbox import paths
    from sandbox.runtime import etcfiles, idmap, process, specgen, users

    if not os.path.isdir(rootfs):
        raise UsageError(f"rootfs {rootfs} is not a directory",
                         hint="--rootfs takes a folder holding a root filesystem")
    if userns not in ("", "keep-id"):
        raise UsageError(f"unsupported --userns {userns!r}", hint="use --userns=keep-id")
    if network not in ("host", "none"):
        raise UsageError(f"unsupported --network {network!r}",
                         hint="use --network host or --network none")
    opts = specgen.RunOptions(
        rootfs=rootfs, args=list(command), env=list(env),
        env_file_text=[_read_env_file(p) for p in env_file], workdir=workdir, user=user,
        hostname=hostname, read_only=read_only, volumes=list(volume), tmpfs=list(tmpfs),
        cap_add=list(cap_add), cap_drop=list(cap_drop), interactive=interactive, tty=tty,
        init=init, userns=userns, network=network,
    )
    uid, gid, username, home = idmap.current_user()
    if uid == 0:
        warn("running sbx as root: the container's root is the host's root")
    keep_id = userns == "keep-id"
    maps = idmap.plan(uid, gid, username, keep_id)
    if maps.warning:
        warn(maps.warning)

    user_spec = user if user is not None else (f"{uid}:{gid}" if keep_id else "")
    exec_user = users.lookup(rootfs, user_spec)
    if keep_id and user is None:
        exec_user.name, exec_user.home = username, home

    container_id = os.urandom(32).hex()  # 64 hex digits, as docker's ids
    state_dir = paths.container_run_dir(container_id)
    try:
        etc = etcfiles.write(
            state_dir, rootfs, hostname or container_id[:12], network,
            keep_id_user=(username, uid, gid, home) if keep_id else None,
        )
        spec = specgen.generate(opts, exec_user, maps.uid_maps, maps.gid_maps,
                                dict(os.environ), container_id, os.getcwd(), etc)
        code = process.run(spec, maps, interactive=interactive)
    finally:
        etcfiles.remove(state_dir)
    # Skip interpreter teardown (about 8 ms with the modules loaded): nothing is left
    # to clean up, and the container's status is all that remains to report.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


__all__ = ["SbxError", "run"]
