"""`sbx run`: run a command in a new container, from an image or a rootfs folder.

An image is pulled if needed (`--pull`) and run on its layers under an overlay
(sandbox/storage/overlay.py) with its config's Entrypoint, Cmd, Env, WorkingDir and
User; `--rootfs DIR` runs in a folder as it is. Profiles plug in before
`specgen.generate` when they arrive.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from sandbox.cli import handle_errors, warn
from sandbox.cli.options import tls_verify_option
from sandbox.errors import UsageError


def _read_env_file(path: str) -> tuple[str, str]:
    try:
        with open(path, encoding="utf-8") as f:
            return path, f.read()
    except OSError as exc:
        raise UsageError(f"can't read env file {path}: {exc.strerror}",
                         hint="--env-file takes a file of KEY=VALUE lines") from None


@click.command(context_settings={"allow_interspersed_args": False,
                                 "help_option_names": ["-h", "--help"]})
@click.option("--rootfs", "rootfs", metavar="DIR",
              help="Run in this root filesystem folder instead of an image.")
@click.option("--pull", "pull_policy", type=click.Choice(["missing", "always", "never"]),
              default="missing", show_default=True, help="When to pull the image.")
@tls_verify_option
@click.option("--entrypoint", metavar="CMD", help="Override the image's entrypoint.")
@click.option("-e", "--env", multiple=True, metavar="KEY[=VALUE]",
              help="Set an environment variable (KEY alone passes the host's value).")
@click.option("--env-file", multiple=True, metavar="FILE", help="Read KEY=VALUE lines.")
@click.option("-w", "--workdir", metavar="DIR", help="Working directory inside.")
@click.option("-u", "--user", metavar="USER[:GROUP]",
              help="User to run as: name or uid, optionally :group or :gid.")
@click.option("--hostname", metavar="NAME", help="Container host name.")
@click.option("--read-only", is_flag=True, help="Mount the root filesystem read-only.")
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
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@handle_errors
def run(rootfs: str | None, pull_policy: str, tls_verify: bool, entrypoint: str | None,
        env: tuple[str, ...], env_file: tuple[str, ...], workdir: str | None,
        user: str | None, hostname: str | None, read_only: bool, volume: tuple[str, ...],
        tmpfs: tuple[str, ...], cap_add: tuple[str, ...], cap_drop: tuple[str, ...],
        interactive: bool, tty: bool, init: bool, userns: str, network: str,
        command: tuple[str, ...]) -> None:
    """Run a command in a new rootless container.

    \b
    sbx run [OPTIONS] IMAGE [COMMAND [ARG...]]
    sbx run --rootfs DIR [OPTIONS] [--] COMMAND [ARG...]
    """
    from sandbox import paths
    from sandbox.runtime import etcfiles, idmap, process, specgen, users

    if userns not in ("", "keep-id"):
        raise UsageError(f"unsupported --userns {userns!r}", hint="use --userns=keep-id")
    if network not in ("host", "none"):
        raise UsageError(f"unsupported --network {network!r}",
                         hint="use --network host or --network none")
    uid, gid, username, home = idmap.current_user()
    if uid == 0:
        warn("running sbx as root: the container's root is the host's root")
    keep_id = userns == "keep-id"
    maps = idmap.plan(uid, gid, username, keep_id)
    if maps.warning:
        warn(maps.warning)

    container_id = os.urandom(32).hex()  # 64 hex digits, as docker's ids
    image: _Image | None = None
    if rootfs is not None:
        if not os.path.isdir(rootfs):
            raise UsageError(f"rootfs {rootfs} is not a directory",
                             hint="--rootfs takes a folder holding a root filesystem")
        if not command:
            raise UsageError("no command given",
                             hint="sbx run --rootfs DIR [--] COMMAND [ARG...]")
        args = list(command)
        read = users.dir_reader(rootfs)
    else:
        if not command:
            raise UsageError("no image given", hint="sbx run [OPTIONS] IMAGE [COMMAND...]")
        image = _Image.prepare(command[0], pull_policy, tls_verify, container_id, maps,
                               read_only)
        args = image.args(entrypoint, list(command[1:]))
        rootfs = image.root.path
        read = image.read
    opts = specgen.RunOptions(
        rootfs=rootfs, args=args, env=list(env),
        env_file_text=[_read_env_file(p) for p in env_file],
        workdir=workdir or (image.config.working_dir if image else None) or None,
        user=user, hostname=hostname, read_only=read_only, volumes=list(volume),
        tmpfs=list(tmpfs), cap_add=list(cap_add), cap_drop=list(cap_drop),
        interactive=interactive, tty=tty, init=init, userns=userns, network=network,
        image_env=list(image.config.env) if image else None,
    )
    user_spec = user if user is not None else (
        f"{uid}:{gid}" if keep_id else (image.config.user if image else ""))
    exec_user = users.lookup_with(read, user_spec)
    if keep_id and user is None:
        exec_user.name, exec_user.home = username, home

    state_dir = paths.container_run_dir(container_id)
    try:
        etc = etcfiles.write(
            state_dir, read, hostname or container_id[:12], network,
            keep_id_user=(username, uid, gid, home) if keep_id else None,
        )
        spec = specgen.generate(opts, exec_user, maps.uid_maps, maps.gid_maps,
                                dict(os.environ), container_id, os.getcwd(), etc)
        if image is not None:
            spec.root = image.root
        code = process.run(spec, maps, interactive=interactive)
    finally:
        etcfiles.remove(state_dir)
        if image is not None:
            image.cleanup()
    # Skip interpreter teardown (about 8 ms with the modules loaded): nothing is left
    # to clean up, and the container's status is all that remains to report.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


class _Image:
    """An image made ready to run: pulled if needed, its layers under an overlay
    root with this container's own writable layer (removed when the run ends,
    since containers with a life of their own arrive with `sbx create`)."""

    def __init__(self, config: Any, root: Any, read: Any, layer: Any, ctx: Any) -> None:
        self.config = config
        self.root = root
        self.read = read
        self.layer = layer
        self.ctx = ctx

    @classmethod
    def prepare(cls, name: str, policy: str, tls_verify: bool, container_id: str,
                maps: Any, read_only: bool) -> _Image:
        from sandbox import paths
        from sandbox.cli.images import ImageContext
        from sandbox.images import progress as prog
        from sandbox.images.config import load_config
        from sandbox.images.pull import ensure_image, layer_dirs
        from sandbox.storage import overlay

        ctx = ImageContext()
        store = ctx.store
        progress = prog.for_stream(sys.stderr, quiet=False)
        try:
            record = ensure_image(name, store, policy, unpacker=ctx.unpacker,  # type: ignore[arg-type]
                                  tls_verify=tls_verify, progress=progress, warn=warn)
        finally:
            progress.close()
        config = load_config(store, record)
        dirs = [str(d) for d in layer_dirs(store, record)]
        layer = overlay.ContainerLayer(paths.container_dir(container_id))
        layer.create()
        root = overlay.root_for(dirs, layer, read_only)
        return cls(config, root, overlay.layers_reader(dirs), layer, ctx)

    def args(self, entrypoint: str | None, command: list[str]) -> list[str]:
        """docker's rule: ENTRYPOINT + (the command given, else the image's CMD);
        --entrypoint replaces the image's entrypoint and drops its CMD."""
        if entrypoint is not None:
            ep = [entrypoint] if entrypoint else []
            cmd = command
        else:
            ep = list(self.config.entrypoint or [])
            cmd = command or list(self.config.cmd or [])
        args = ep + cmd
        if not args:
            raise UsageError("no command given and the image has no Cmd or Entrypoint",
                             hint="sbx run IMAGE COMMAND [ARG...]")
        return args

    def cleanup(self) -> None:
        # The writable layer may hold files the container chowned to other ids.
        from pathlib import Path

        self.ctx.remove_tree(Path(self.layer.dir))
