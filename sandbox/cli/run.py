"""`sbx run` and `sbx create`: make a container, from an image or a rootfs folder.

An image is pulled if needed (`--pull`) and run on its layers under an overlay
(sandbox/storage/overlay.py) with its config's Entrypoint, Cmd, Env, WorkingDir, User
and StopSignal; `--rootfs DIR` runs in a folder as it is. Profiles plug in before
`specgen.generate` when they arrive.

Every run makes a container record (sandbox/containers/store.py), as podman does:
`sbx run` without --rm leaves an exited container that `ps -a`, `logs`, `start` and
`rm` know; `--rm` removes it after the exit. A foreground run is its own container
monitor (sandbox/containers/monitor.py): the container stays this process's child,
its output goes to the terminal and to its log, and signals reach it as before.
`-d` hands the container to a detached monitor and prints its id.

This module is on the `sbx run` hot path (bench/startup, bench/lifecycle): it
imports the image store only to resolve an image, and nothing else heavy.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable
from typing import Any

import click

from sandbox.cli import handle_errors, warn
from sandbox.cli.options import parse_labels, read_env_file, tls_verify_option
from sandbox.errors import SbxError, UsageError

CREATE_OPTIONS: list[Callable[..., Any]] = [
    click.option("--rootfs", "rootfs", metavar="DIR",
                 help="Run in this root filesystem folder instead of an image."),
    click.option("--pull", "pull_policy", type=click.Choice(["missing", "always", "never"]),
                 default="missing", show_default=True, help="When to pull the image."),
    tls_verify_option,
    click.option("--storage-driver", metavar="DRIVER",
                 help="overlay, fuse or vfs (default: auto; see `sbx info`)."),
    click.option("--name", metavar="NAME", help="Name the container (default: generated)."),
    click.option("-l", "--label", "labels", multiple=True, metavar="KEY=VALUE",
                 help="Set a label on the container."),
    click.option("--rm", "auto_remove", is_flag=True,
                 help="Remove the container when it exits."),
    click.option("--stop-signal", metavar="SIGNAL",
                 help="Signal that stops the container (default: the image's, or SIGTERM)."),
    click.option("--stop-timeout", type=click.IntRange(min=0), metavar="SECONDS",
                 help="Seconds `sbx stop` waits before SIGKILL (default 10)."),
    click.option("--entrypoint", metavar="CMD", help="Override the image's entrypoint."),
    click.option("-e", "--env", multiple=True, metavar="KEY[=VALUE]",
                 help="Set an environment variable (KEY alone passes the host's value)."),
    click.option("--env-file", multiple=True, metavar="FILE", help="Read KEY=VALUE lines."),
    click.option("-w", "--workdir", metavar="DIR", help="Working directory inside."),
    click.option("-u", "--user", metavar="USER[:GROUP]",
                 help="User to run as: name or uid, optionally :group or :gid."),
    click.option("--hostname", metavar="NAME", help="Container host name."),
    click.option("--read-only", is_flag=True, help="Mount the root filesystem read-only."),
    click.option("-v", "--volume", multiple=True, metavar="SRC:CTR[:OPTS]",
                 help="Bind-mount a host path, or mount a named volume (NAME:CTR) or an "
                 "anonymous one (CTR)."),
    click.option("--tmpfs", multiple=True, metavar="PATH[:OPTS]", help="Mount a tmpfs."),
    click.option("--device", "devices", multiple=True, metavar="HOST[:CTR]",
                 help="Give the container a host device (bound; a folder of them too)."),
    click.option("--cap-add", multiple=True, metavar="CAP", help="Add a capability (or ALL)."),
    click.option("--cap-drop", multiple=True, metavar="CAP",
                 help="Drop a capability (or ALL)."),
    click.option("-i", "--interactive", is_flag=True, help="Keep stdin open."),
    click.option("-t", "--tty", is_flag=True, help="Allocate a pseudo-terminal."),
    click.option("--init", "init", is_flag=True, help="Run a reaping init as pid 1."),
    click.option("--userns", default="", metavar="MODE",
                 help="'' (root inside is you) or keep-id (your uid inside too)."),
    click.option("--network", "--net", default="host", metavar="MODE",
                 help="host (default) or none."),
    click.option("-m", "--memory", metavar="SIZE",
                 help="Memory limit (b, k, m, g; cgroup v2 delegation needed)."),
    click.option("--cpus", type=click.FloatRange(min=0.01), metavar="N",
                 help="CPU limit, fractions allowed (cgroup v2 delegation needed)."),
    click.option("--pids-limit", type=click.IntRange(min=1), metavar="N",
                 help="Most processes at once (cgroup v2 delegation needed)."),
]


def _limits(opts: dict[str, Any]) -> dict[str, Any] | None:
    """The limits to record, or None: without cgroup v2 delegation they are dropped
    with a warning, as rootless podman does on a cgroup v1 host ("Resource limits
    are not supported and ignored on cgroups V1 rootless systems")."""
    memory = opts.get("memory")
    if memory is None and opts.get("cpus") is None and opts.get("pids_limit") is None:
        return None
    from sandbox.runtime import cgroups

    if isinstance(memory, str):
        from sandbox.profiles.schema import parse_size

        try:
            memory = parse_size(memory)
        except (ValueError, TypeError):
            raise UsageError(f"invalid --memory {memory!r}",
                             hint="a size such as 512m or 2g") from None
    limits = cgroups.Limits(memory, opts.get("cpus"), opts.get("pids_limit"))
    try:
        cgroups.plan(limits)
    except cgroups.CgroupUnavailable as err:
        warn(f"{err.message}; running without them")
        if err.hint:
            warn(f"to apply limits: {err.hint}")
        return None
    return limits.to_json()


def create_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The options `sbx run` and `sbx create` share."""
    for decorator in reversed(CREATE_OPTIONS):
        fn = decorator(fn)
    return fn


class Created:
    """A container just made: its record, and what starting it needs now."""

    def __init__(self, store: Any, container: Any, spec: Any, maps: Any,
                 interactive: bool) -> None:
        self.store = store
        self.container = container
        self.spec = spec
        self.maps = maps
        self.interactive = interactive


def create_container(opts: dict[str, Any], command: tuple[str, ...]) -> Created:
    """Resolve the image, build the spec and write the record (status created).
    The generated /etc files are left in the runtime directory for a start."""
    from sandbox import paths
    from sandbox.containers import specjson
    from sandbox.containers.store import ContainerStore, Lock, format_time, new_id, now_ns
    from sandbox.runtime import etcfiles, idmap, specgen, users

    userns, network = opts["userns"], opts["network"]
    if userns not in ("", "keep-id"):
        raise UsageError(f"unsupported --userns {userns!r}", hint="use --userns=keep-id")
    if network not in ("host", "none"):
        raise UsageError(f"unsupported --network {network!r}",
                         hint="use --network host or --network none")
    labels = parse_labels(opts["labels"])
    if opts["stop_signal"]:
        from sandbox.containers.lifecycle import parse_signal

        parse_signal(opts["stop_signal"])  # refuse a bad one now, not at `stop`
    store = ContainerStore()
    name = opts["name"]
    if name is not None and (owner := store.name_owner(name)) is not None:
        from sandbox.containers.store import NameInUse

        raise NameInUse(name, owner)  # before a pull; create() checks again, atomically
    uid, gid, username, home = idmap.current_user()
    if uid == 0:
        warn("running sbx as root: the container's root is the host's root")
    keep_id = userns == "keep-id"
    maps = idmap.plan(uid, gid, username, keep_id)
    if maps.warning:
        warn(maps.warning)

    container_id = new_id()
    image: _Image | None = None
    rootfs = opts["rootfs"]
    layer_dirs: list[str] = []
    if rootfs is not None:
        if not os.path.isdir(rootfs):
            raise UsageError(f"rootfs {rootfs} is not a directory",
                             hint="--rootfs takes a folder holding a root filesystem")
        if not command:
            raise UsageError("no command given",
                             hint="sbx run --rootfs DIR [--] COMMAND [ARG...]")
        rootfs = os.path.abspath(rootfs)
        args = list(command)
        cmd, entrypoint = list(command), []
        read = users.dir_reader(rootfs)
    else:
        if not command:
            raise UsageError("no image given", hint="sbx run [OPTIONS] IMAGE [COMMAND...]")
        image = _Image.prepare(command[0], opts["pull_policy"], opts["tls_verify"],
                               container_id, opts["read_only"])
        image.choose_storage(opts["storage_driver"], keep_id, maps)
        entrypoint, cmd = image.split_args(opts["entrypoint"], list(command[1:]))
        args = entrypoint + cmd
        rootfs = image.root.path
        read = image.read
        layer_dirs = image.dirs
        labels = {**image.labels, **labels}
    user = opts["user"]
    hostname = opts["hostname"]
    tmpfs = list(opts["tmpfs"])
    if opts.get("home_tmpfs") and keep_id and home.startswith("/") and home != "/":
        from sandbox.storage.overlay import find_in_layers

        if not (image and find_in_layers(image.dirs, home)):
            # A profile's keep-id home (profile_run.py): empty, yours, mode 0700 as
            # useradd(8) makes a home.
            tmpfs.append(f"{home}:exec,mode=0700,uid={uid},gid={gid}")
    # Volumes: -v as given, then an anonymous volume for each of the image's Volumes
    # not mounted otherwise; made (resolved) below, once nothing else can fail first.
    wanted = [specgen.parse_volume(v, os.getcwd()) for v in opts["volume"]]
    volumes_made: list[str] = []
    if image is not None and image.config.volumes:
        from sandbox.volumes.attach import anonymous_for_image

        wanted += anonymous_for_image(wanted, image.config.volumes, tmpfs)
    if wanted:
        from sandbox.volumes.attach import check_destinations

        check_destinations(wanted + [specgen.parse_tmpfs(t) for t in tmpfs])
    run_opts = specgen.RunOptions(
        rootfs=rootfs, args=args, env=list(opts["env"]),
        env_file_text=[read_env_file(p) for p in opts["env_file"]],
        workdir=opts["workdir"] or (image.config.working_dir if image else None) or None,
        user=user, hostname=hostname, read_only=opts["read_only"],
        volumes=[], tmpfs=tmpfs, cap_add=list(opts["cap_add"]),
        cap_drop=list(opts["cap_drop"]), interactive=opts["interactive"], tty=opts["tty"],
        init=opts["init"], userns=userns, network=network,
        image_env=list(image.config.env) if image else None,
        devices=list(opts.get("devices") or ()),
    )
    user_spec = user if user is not None else (
        f"{uid}:{gid}" if keep_id else (image.config.user if image else ""))
    exec_user = users.lookup_with(read, user_spec)
    if keep_id and user is None:
        exec_user.name, exec_user.home = username, home

    keep_id_user = [username, uid, gid, home] if keep_id else None
    state_dir = paths.container_run_dir(container_id)
    # Held until the record exists: `sbx rm` sweeps runtime dirs of containers that
    # do not exist, unless their creator is still at work (store.clean_leftovers).
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    creating = Lock(paths.container_creating_lock(container_id)).acquire()
    ok = False
    try:
        etc = etcfiles.write(state_dir, read, hostname or container_id[:12], network,
                             keep_id_user=(username, uid, gid, home) if keep_id else None)
        named_volumes: list[dict[str, Any]] = []
        if any(m.type == "volume" for m in wanted):
            from sandbox.volumes.attach import resolve

            resolved = resolve(wanted)
            volumes_made = resolved.created
            run_opts.mounts = resolved.mounts
            named_volumes = resolved.records
        else:
            run_opts.mounts = wanted
        spec = specgen.generate(run_opts, exec_user, maps.uid_maps, maps.gid_maps,
                                dict(os.environ), container_id, os.getcwd(), etc)
        if image is not None:
            spec.root = image.root
        stop_signal = opts["stop_signal"] or (image.config.stop_signal if image else None)
        config = {
            "created": format_time(now_ns()),
            "image": image.name if image else "",
            "image_id": image.record_id if image else "",
            "rootfs": rootfs if opts["rootfs"] is not None else "",
            "layers": layer_dirs,
            "command": cmd,
            "entrypoint": entrypoint,
            "user": user_spec,
            "labels": labels,
            "stop_signal": stop_signal or "SIGTERM",
            "stop_timeout": opts["stop_timeout"] if opts["stop_timeout"] is not None else 10,
            "auto_remove": bool(opts["auto_remove"]),
            "interactive": bool(opts["interactive"]),
            "tty": bool(opts["tty"]),
            "init": bool(opts["init"]),
            "userns": userns,
            "network": network,
            "hostname": spec.hostname,
            "keep_id_user": keep_id_user,
            "read_only": bool(opts["read_only"]),
            "limits": _limits(opts),
            "storage_driver": image.driver if image else "",
            "volumes": list(opts["volume"]) + [f"tmpfs:{t}" for t in tmpfs],
            "named_volumes": named_volumes,
            "create_command": ["sbx", *sys.argv[1:]],
            "spec": specjson.to_json(spec),
        }
        # An --rm container will not outlive the run: its record skips the fsyncs.
        container = store.create(container_id, config, name,
                                 durable=not opts["auto_remove"])
        if image is not None:
            image.create_layer()
        ok = True
    finally:
        with contextlib.suppress(OSError):
            os.unlink(paths.container_creating_lock(container_id))
        creating.release()
        if not ok:
            etcfiles.remove(state_dir)
            if volumes_made:
                from sandbox.volumes.attach import undo

                undo(volumes_made)
    return Created(store, container, spec, maps, bool(opts["interactive"]))


def _discard(created: Created) -> None:
    """Remove a container that never ran (--rm after a failed start)."""
    from sandbox.containers import lifecycle
    from sandbox.containers.store import NoSuchContainer

    with contextlib.suppress(NoSuchContainer):
        # podman's --rm takes the container's anonymous volumes with it
        lifecycle.remove(created.store, created.container, force=True, volumes=True)


@click.command(context_settings={"allow_interspersed_args": False,
                                 "help_option_names": ["-h", "--help"]})
@create_options
@click.option("-d", "--detach", is_flag=True,
              help="Run in the background and print the container's id.")
@click.option("--locked", is_flag=True,
              help="PROFILE: fail unless sbx.lock agrees with the profile (for CI).")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@handle_errors
def run(detach: bool, locked: bool, command: tuple[str, ...], **opts: Any) -> None:
    """Run a command in a new rootless container, or enter a profile.

    \b
    sbx run [OPTIONS] IMAGE [COMMAND [ARG...]]
    sbx run [OPTIONS] PROFILE [-- COMMAND [ARG...]]   (docs/profiles.md)
    sbx run --rootfs DIR [OPTIONS] [--] COMMAND [ARG...]
    """
    found = _profile(command[0]) if command and opts["rootfs"] is None else None
    if found is not None:
        from sandbox.cli.profile_run import run_profile

        run_profile(command[0], command[1:], opts, detach=detach, locked=locked,
                    profile=found)
        return
    if locked:
        raise UsageError("--locked is for profiles", hint="sbx run --locked PROFILE")
    try:
        start_created(opts, command, detach)
    except SbxError as err:
        # A bare name that is no profile was taken for an image; if the image
        # can't be found either, a mistyped profile name is the likelier story.
        if command and _bare(command[0]) and type(err).__module__.startswith(
                ("sandbox.registry", "sandbox.images")):
            hint = _profile_hint(command[0])
            if hint:
                err.hint = f"{err.hint}; {hint}" if err.hint else hint
        raise


def _bare(text: str) -> bool:
    return not text.endswith(".toml") and not any(c in text for c in ":/@")


def _profile_hint(name: str) -> str | None:
    """"no profile NAME here either (did you mean X?)" when profiles look alike."""
    import difflib

    from sandbox.profiles.load import Search

    try:
        names = sorted({entry.name for entry in Search().all() if entry.found})
    except SbxError:
        return None
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    if not close:
        return None
    return (f"{name!r} is not a profile here either; did you mean "
            + " or ".join(repr(c) for c in close) + "?")


def _profile(text: str) -> Any:
    """The loaded Profile when `text` names a profile (docs/profiles.md, "Profile or
    image?"), else None. Only a bare name or a .toml path loads the profile code: an
    image reference with a registry, a tag or a digest never does (the run fast
    path). A profile loaded before, whose files are unchanged, comes from the
    profile cache (profiles/cache.py) without reading any TOML."""
    if not _bare(text) and not text.endswith(".toml"):
        return None
    from sandbox.profiles import cache

    cwd = os.getcwd()
    hit = cache.get(text, cwd)
    if hit is not None:
        return hit
    from sandbox.profiles.load import profile_search

    search = profile_search(text, cwd)
    if search is None:
        return None
    profile = search.load(text)
    cache.put(text, cwd, profile)
    return profile


def start_created(opts: dict[str, Any], command: tuple[str, ...] | list[str],
                  detach: bool) -> None:
    """Create the container and run it: in the foreground (this process is its
    monitor; exits with its status) or detached (prints its id)."""
    from sandbox.containers import monitor

    created = create_container(opts, tuple(command))
    store, container = created.store, created.container
    try:
        with store.lock(container.id) as lock:
            if detach:
                from sandbox.containers.lifecycle import auto_remove_hook

                monitor.start_detached(store, container, created.spec, created.maps, lock,
                                       after_exit=auto_remove_hook(container))
            else:
                code = monitor.run_attached(store, container, created.spec, created.maps,
                                            lock, interactive=created.interactive)
    except BaseException:
        if opts["auto_remove"]:
            _discard(created)
        raise
    if detach:
        click.echo(container.id)
        return
    if opts["auto_remove"]:
        _discard(created)
    # Skip interpreter teardown (about 8 ms with the modules loaded): nothing is left
    # to clean up, and the container's status is all that remains to report.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


class _RunConfig:
    """What `sbx run` takes from an image's config (sandbox.images.config.ImageConfig
    has it all; this plain record is what the run cache keeps)."""

    FIELDS = ("entrypoint", "cmd", "env", "working_dir", "user", "stop_signal", "labels",
              "volumes")

    def __init__(self, entrypoint: list[str] | None, cmd: list[str] | None, env: list[str],
                 working_dir: str, user: str, stop_signal: str | None,
                 labels: dict[str, str], volumes: list[str]) -> None:
        self.entrypoint = entrypoint
        self.cmd = cmd
        self.env = env
        self.working_dir = working_dir
        self.user = user
        self.stop_signal = stop_signal
        self.labels = labels
        self.volumes = volumes

    @classmethod
    def of(cls, config: Any) -> _RunConfig:
        return cls(None if config.entrypoint is None else list(config.entrypoint),
                   None if config.cmd is None else list(config.cmd), list(config.env),
                   config.working_dir or "", config.user or "", config.stop_signal,
                   dict(config.labels or {}), list(config.volumes or ()))

    def to_json(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.FIELDS}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> _RunConfig:
        return cls(d["entrypoint"], d["cmd"], list(d["env"]), str(d["working_dir"]),
                   str(d["user"]), d["stop_signal"], dict(d["labels"]), list(d["volumes"]))


class _RunCache:
    """How `sbx run IMAGE` skips the image store when nothing changed since the last
    run of the same IMAGE text: the image store's modules cost ~35 ms to import
    (dataclasses, tarfile, the registry's parsers), three times the container's own
    start. The cache (in the runtime directory) maps the text as typed to the
    image's id, name, run config and layer directories.

    An entry is only good while the image store's root directory is unchanged: the
    store replaces its index by rename(2) into that directory on every change of
    names or images (images/store.py, "images.json is replaced by rename"), which
    updates the directory's mtime and ctime. The entry keeps (inode, mtime, ctime) as
    taken *before* the lookup, and is only written if they are the same after it and
    at least a second old, so a change in the same timestamp tick cannot hide (git's
    "racy git" rule). --pull=always never uses it. The layer directories are checked
    to exist. TODO(images): a `Store.generation()` would make this independent of the
    store's layout; the image store's owners should provide it.
    """

    MAX_ENTRIES = 32
    FILE = "run_image_cache_file"  # the sandbox.paths function that names the file

    @staticmethod
    def stamp() -> list[int] | None:
        from sandbox import paths

        try:
            st = os.stat(paths.storage_dir())
        except OSError:
            return None
        return [st.st_ino, st.st_mtime_ns, st.st_ctime_ns]

    @classmethod
    def _load(cls) -> dict[str, Any]:
        import json

        from sandbox import paths

        try:
            with open(getattr(paths, cls.FILE)(), "rb") as f:
                data = json.loads(f.read())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    @classmethod
    def get(cls, text: str) -> dict[str, Any] | None:
        entry = cls._load().get(text)
        if not isinstance(entry, dict) or entry.get("stamp") != cls.stamp():
            return None
        if "config" in entry and "volumes" not in entry["config"]:
            return None  # written by an sbx that did not keep the image's Volumes
        if not all(os.path.isdir(d) for d in entry.get("dirs", [])):
            return None
        return entry

    @classmethod
    def put(cls, text: str, before: list[int] | None, entry: dict[str, Any]) -> None:
        import json
        import time

        from sandbox import paths

        after = cls.stamp()
        if before is None or after != before or time.time_ns() - before[1] < 1_000_000_000:
            return
        data = cls._load()
        data.pop(text, None)
        while len(data) >= cls.MAX_ENTRIES:
            data.pop(next(iter(data)))
        data[text] = {**entry, "stamp": before}
        path = getattr(paths, cls.FILE)()
        tmp = f"{path}.tmp-{os.getpid()}"
        try:
            with open(tmp, "w") as f:
                json.dump(data, f)
            os.rename(tmp, path)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


class _Image:
    """An image made ready to run: pulled if needed, its layers under an overlay
    root with this container's own writable layer (made by `layer.create()` once the
    container's record exists, and removed with the record)."""

    def __init__(self, name: str, record_id: str, config: _RunConfig, dirs: list[str],
                 container_id: str, read_only: bool) -> None:
        from sandbox import paths
        from sandbox.storage import overlay

        self.name = name
        self.record_id = record_id
        self.config = config
        self.dirs = dirs
        self.layer = overlay.ContainerLayer(paths.container_layer_dir(container_id))
        self.read_only = read_only
        self.driver = "overlay"
        self.maps: Any = None
        self.root = overlay.root_for(dirs, self.layer, read_only)
        self.read = overlay.layers_reader(dirs)

    def choose_storage(self, requested: str | None, keep_id: bool, maps: Any) -> None:
        """Pick the storage driver (sandbox/storage/drivers.py) and build the root."""
        from sandbox.runtime import idmap
        from sandbox.runtime.spec import Root
        from sandbox.storage import drivers, fuse

        self.maps = maps
        self.driver = drivers.choose(drivers.requested(requested), keep_id)
        if self.driver == "fuse":
            uid_shift: list[Any] = []
            gid_shift: list[Any] = []
            if keep_id:
                # The layers were unpacked under the default map; show them as built.
                default = idmap.plan_for_current_user(keep_id=False)
                uid_shift = idmap.shift(default.uid_maps, maps.uid_maps)
                gid_shift = idmap.shift(default.gid_maps, maps.gid_maps)
            self.root = fuse.root_for(drivers.sbx_fs() or "sbx-fs", self.dirs, self.layer,
                                      self.read_only, uid_shift, gid_shift)
            return
        if self.driver == "vfs":
            self.root = Root(self.layer.merged, self.read_only)
            if keep_id:
                warn("the vfs storage driver cannot shift the image's owners for "
                     "--userns=keep-id: files the image's root owns appear as yours; "
                     "use --storage-driver=overlay or fuse")
        elif keep_id:
            # Kernel overlay over copies of the layers with owners shifted for this
            # map, made once per image (storage/shifted.py; podman does the same).
            from sandbox.runtime import userns
            from sandbox.storage import overlay, shifted

            default = idmap.plan_for_current_user(keep_id=False)
            dirs = shifted.shifted_dirs(
                self.dirs, idmap.shift(maps.uid_maps, default.uid_maps),
                idmap.shift(maps.gid_maps, default.gid_maps),
                lambda fn: userns.call(fn, default))
            self.root = overlay.root_for(dirs, self.layer, self.read_only)

    def create_layer(self) -> None:
        """The container's own directories; for vfs, its full copy of the image."""
        self.layer.create()
        if self.driver == "vfs":
            from sandbox.runtime import idmap, userns
            from sandbox.storage import vfs

            # Copied under the map the layers were unpacked with, owners as stored.
            dirs, merged = self.dirs, self.layer.merged
            userns.call(lambda: vfs.populate(dirs, merged),
                        idmap.plan_for_current_user(keep_id=False))

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.config.labels)

    @classmethod
    def prepare(cls, name: str, policy: str, tls_verify: bool, container_id: str,
                read_only: bool) -> _Image:
        if policy != "always":
            hit = _RunCache.get(name)
            if hit is not None:
                return cls(hit["name"], hit["id"], _RunConfig.from_json(hit["config"]),
                           list(hit["dirs"]), container_id, read_only)
        from sandbox.cli.images import ImageContext
        from sandbox.images import progress as prog
        from sandbox.images.config import load_config
        from sandbox.images.pull import ensure_image, layer_dirs

        before = _RunCache.stamp()
        ctx = ImageContext()
        store = ctx.store
        progress = prog.for_stream(sys.stderr, quiet=False)
        try:
            record = ensure_image(name, store, policy, unpacker=ctx.unpacker,  # type: ignore[arg-type]
                                  tls_verify=tls_verify, progress=progress, warn=warn)
        finally:
            progress.close()
        config = _RunConfig.of(load_config(store, record))
        dirs = [str(d) for d in layer_dirs(store, record)]
        image_name = _image_name(name, record)
        _RunCache.put(name, before, {"name": image_name, "id": record.id,
                                     "config": config.to_json(), "dirs": dirs})
        return cls(image_name, record.id, config, dirs, container_id, read_only)

    def split_args(self, entrypoint: str | None, command: list[str]
                   ) -> tuple[list[str], list[str]]:
        """docker's rule: ENTRYPOINT + (the command given, else the image's CMD);
        --entrypoint replaces the image's entrypoint and drops its CMD. Returns
        (entrypoint, cmd), podman's Config.Entrypoint and Config.Cmd."""
        if entrypoint is not None:
            ep = [entrypoint] if entrypoint else []
            cmd = command
        else:
            ep = list(self.config.entrypoint or [])
            cmd = command or list(self.config.cmd or [])
        if not ep + cmd:
            raise UsageError("no command given and the image has no Cmd or Entrypoint",
                             hint="sbx run IMAGE COMMAND [ARG...]")
        return ep, cmd


def _image_name(text: str, record: Any) -> str:
    """The image's name as podman's ImageName shows it: the stored name `text`
    resolves to (busybox -> docker.io/library/busybox:latest), else as typed."""
    from sandbox.images.pull import store_name
    from sandbox.registry.reference import parse_reference

    try:
        full = store_name(parse_reference(text))
    except Exception:  # an id, or a name the store matched by suffix
        full = ""
    if full in record.names:
        return full
    if record.id.partition(":")[2].startswith(text) and record.names:
        return str(record.names[0])
    return text
