"""Turn `sbx run` options into a `Spec`: pure functions, no I/O.

Like runc's `ToRootless(spec)`, everything here is a transform of data, so every rule
(env precedence, volume syntax, default mounts, masked paths) is unit-tested without a
container. Reading files (env files, the rootfs's /etc/passwd) happens in the caller.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence

from sandbox.errors import UsageError
from sandbox.runtime import caps as capmod
from sandbox.runtime.record import Record
from sandbox.runtime.spec import (
    NAMESPACES,
    Capabilities,
    IdMapping,
    Linux,
    Mount,
    Process,
    Root,
    Spec,
    User,
)
from sandbox.runtime.users import ExecUser

# Where the init binary appears in a container run with --init, as podman's
# /run/podman-init. catatonit is podman's own init: static, so it runs in any rootfs.
INIT_PATH = "/run/sbx-init"
INIT_CANDIDATES = ("/usr/libexec/podman/catatonit", "/usr/bin/catatonit",
                   "/usr/libexec/catatonit/catatonit")

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# podman's defaults (containers/common pkg/config: DefaultMaskedPaths,
# DefaultReadOnlyPaths): kernel state a container has no business reading or changing.
MASKED_PATHS = (
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/sys/dev/block",
    "/sys/devices/virtual/powercap",
    "/sys/firmware",
    "/sys/fs/selinux",
)
READONLY_PATHS = (
    "/proc/asound",
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
)
# Rootless runtimes cannot mknod; they bind the host's device nodes (runc, crun).
DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty")


class RunOptions(Record):
    """What the user asked for on the command line (or, later, in a profile)."""

    __slots__ = (
        "image_env",
        "args",
        "cap_add",
        "cap_drop",
        "devices",
        "env",
        "env_file_text",
        "hostname",
        "init",
        "interactive",
        "mounts",
        "network",
        "read_only",
        "rootfs",
        "tmpfs",
        "tty",
        "user",
        "userns",
        "volumes",
        "workdir",
    )

    def __init__(
        self,
        rootfs: str,
        args: list[str],
        env: list[str] | None = None,
        env_file_text: list[tuple[str, str]] | None = None,  # (path, content)
        workdir: str | None = None,
        user: str | None = None,
        hostname: str | None = None,
        read_only: bool = False,
        volumes: list[str] | None = None,
        tmpfs: list[str] | None = None,
        cap_add: list[str] | None = None,
        cap_drop: list[str] | None = None,
        interactive: bool = False,
        tty: bool = False,
        init: bool = False,
        userns: str = "",  # "" (root maps to you) or "keep-id"
        network: str = "host",  # host | none
        image_env: list[str] | None = None,  # the image config's Env, under -e
        mounts: list[Mount] | None = None,  # more mounts, volumes already resolved
        devices: list[str] | None = None,  # --device HOST[:CTR[:PERMS]]
    ) -> None:
        self.rootfs = rootfs
        self.args = args
        self.env = env or []
        self.env_file_text = env_file_text or []
        self.workdir = workdir
        self.user = user
        self.hostname = hostname
        self.read_only = read_only
        self.volumes = volumes or []
        self.tmpfs = tmpfs or []
        self.cap_add = cap_add or []
        self.cap_drop = cap_drop or []
        self.interactive = interactive
        self.tty = tty
        self.init = init
        self.userns = userns
        self.network = network
        self.image_env = image_env or []
        self.mounts = mounts or []
        self.devices = devices or []


def parse_env_file(path: str, text: str, host_env: Mapping[str, str]) -> list[str]:
    """docker's --env-file format: KEY=VALUE lines, # comments, bare KEY from the host."""
    out = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, eq, _ = line.partition("=")
        if not key or any(c.isspace() for c in key):
            raise UsageError(f"{path}:{lineno}: invalid variable name {key!r}",
                             hint="each line must be KEY=VALUE, KEY, or a # comment")
        if eq:
            out.append(raw.lstrip())
        elif key in host_env:
            out.append(f"{key}={host_env[key]}")
    return out


def merge_env(layers: Sequence[Sequence[str]], host_env: Mapping[str, str]) -> list[str]:
    """Later layers win; `KEY` alone takes the host's value (dropped when unset)."""
    merged: dict[str, str] = {}
    for layer in layers:
        for item in layer:
            key, eq, value = item.partition("=")
            if not key:
                raise UsageError(f"invalid environment variable {item!r}",
                                 hint="use -e KEY=VALUE, or -e KEY to pass the host's value")
            if eq:
                merged[key] = value
            elif key in host_env:
                merged[key] = host_env[key]
    return [f"{k}={v}" for k, v in merged.items()]


# podman's volume names (libpod/define: NameRegex); sandbox/volumes/store.py uses it too.
VOLUME_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*\Z")
_BIND_OPTIONS = frozenset({
    "ro", "rw", "z", "Z", "nosuid", "suid", "nodev", "dev", "noexec", "exec", "bind",
    "rbind", "private", "rprivate", "shared", "rshared", "slave", "rslave"})
# podman's -v options for a volume: [no]copy decides the copy-up of the image's content.
_VOLUME_OPTIONS = frozenset({
    "ro", "rw", "z", "Z", "nosuid", "suid", "nodev", "dev", "noexec", "exec", "copy",
    "nocopy"})


def parse_volume(spec: str, cwd: str) -> Mount:
    """-v as podman reads it: HOST:CTR[:OPTS] binds a host path (absolute, or starting
    with "."), NAME:CTR[:OPTS] mounts a named volume and CTR alone an anonymous one.
    OPTS: ro, rw, z, Z, nosuid, nodev, noexec, ... and nocopy for volumes.

    A volume comes back as Mount(CTR, "volume", NAME or "", OPTS): the caller resolves
    it to a bind mount of the volume's directory (sandbox/volumes/attach.py) before
    `generate`, which takes no volume it cannot find on disk."""
    parts = spec.split(":")
    if len(parts) == 1:
        if not spec.startswith("/"):
            raise UsageError(f"invalid volume {spec!r}: container path must be absolute",
                             hint="use -v /PATH for an anonymous volume, -v NAME:/PATH or "
                             "-v HOST-PATH:/PATH")
        return Mount(os.path.normpath(spec), "volume", "", [])
    if len(parts) > 3 or not parts[0] or not parts[1]:
        raise UsageError(f"invalid volume {spec!r}",
                         hint="use -v HOST-PATH:CONTAINER-PATH[:ro] or -v NAME:/PATH[:ro]")
    src, ctr = parts[0], parts[1]
    opts = parts[2].split(",") if len(parts) == 3 and parts[2] else []
    if not ctr.startswith("/"):
        raise UsageError(f"invalid volume {spec!r}: container path {ctr!r} must be absolute")
    host = src.startswith("/") or src.startswith(".")
    known = _BIND_OPTIONS if host else _VOLUME_OPTIONS
    for o in opts:
        if o not in known:
            raise UsageError(f"invalid option {o!r} in volume {spec!r}",
                             hint="volume options are " + ", ".join(sorted(known)))
    if not host:
        if not VOLUME_NAME.match(src):
            raise UsageError(f"invalid volume {spec!r}: {src!r} is neither a host path nor "
                             "a volume name", hint="host paths are absolute or start with "
                             "./; volume names match [a-zA-Z0-9][a-zA-Z0-9_.-]*")
        return Mount(os.path.normpath(ctr), "volume", src, opts)
    options = [o for o in opts if o not in ("z", "Z")]
    if "bind" not in options:
        options.insert(0, "rbind")
    return Mount(ctr, "bind", os.path.normpath(os.path.join(cwd, src)), options)


def parse_device(spec: str) -> Mount:
    """--device HOST[:CTR[:PERMS]] as docker writes it, made a bind of the host's node:
    a rootless runtime can't mknod, so runc and crun bind the device (and a folder
    of devices such as /dev/dri whole); PERMS (rwm) would be a device cgroup rule,
    which a rootless container has no say over, so it is accepted and not applied,
    as podman does rootless."""
    parts = spec.split(":")
    if len(parts) > 3 or not parts[0]:
        raise UsageError(f"invalid --device {spec!r}", hint="--device /dev/HOST[:/dev/CTR]")
    host = parts[0]
    ctr = parts[1] if len(parts) > 1 and parts[1].startswith("/") else host
    if len(parts) > 1 and not parts[1].startswith("/") and not set(parts[1]) <= set("rwm"):
        raise UsageError(f"invalid --device {spec!r}: {parts[1]!r} is neither a path "
                         "nor permissions (rwm)")
    try:
        st = os.stat(host)
    except OSError as exc:
        raise UsageError(f"--device {host}: {exc.strerror}",
                         hint="give a device node that exists on the host") from None
    import stat as stat_

    if not (stat_.S_ISCHR(st.st_mode) or stat_.S_ISBLK(st.st_mode) or stat_.S_ISDIR(st.st_mode)):
        raise UsageError(f"--device {host} is not a device node or a folder of them")
    return Mount(ctr, "bind", host, ["rbind" if stat_.S_ISDIR(st.st_mode) else "bind",
                                     "nosuid", "noexec"])


def parse_tmpfs(spec: str) -> Mount:
    """--tmpfs /path[:opts]; podman's defaults are rw,noexec,nosuid,nodev."""
    dest, _, opts = spec.partition(":")
    if not dest.startswith("/"):
        raise UsageError(f"invalid --tmpfs {spec!r}: the path must be absolute")
    options = ["rw", "noexec", "nosuid", "nodev"]
    options += [o for o in opts.split(",") if o]
    return Mount(dest, "tmpfs", "tmpfs", options)


def default_mounts(network: str) -> list[Mount]:
    mounts = [
        Mount("/proc", "proc", "proc", ["nosuid", "noexec", "nodev"]),
        Mount("/dev", "tmpfs", "tmpfs", ["nosuid", "strictatime", "mode=755", "size=65536k"]),
        Mount("/dev/pts", "devpts", "devpts",
              ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]),
        Mount("/dev/shm", "tmpfs", "shm", ["nosuid", "noexec", "nodev", "mode=1777",
                                           "size=65536k"]),
        Mount("/dev/mqueue", "mqueue", "mqueue", ["nosuid", "noexec", "nodev"]),
        Mount("/sys", "sysfs", "sysfs", ["nosuid", "noexec", "nodev", "ro"]),
    ]
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        # A pure cgroup v2 host: the container's own cgroup at /sys/fs/cgroup (its
        # cgroup namespace's root), where the JVM, Go and systemd read memory.max and
        # cpu.max, as runc and crun mount it. Hybrid and v1 hosts keep what /sys shows.
        mounts.append(Mount("/sys/fs/cgroup", "cgroup2", "cgroup",
                            ["nosuid", "noexec", "nodev", "relatime", "ro"]))
    mounts += [Mount(d, "bind", d, ["bind", "nosuid", "noexec"]) for d in DEVICES]
    return mounts


def capabilities_for(user: ExecUser, add: list[str], drop: list[str]) -> Capabilities:
    """podman's rule: root gets the set in E/P/B; others get it in B only, plus any
    explicitly added capabilities in every set (ambient included) so they survive exec."""
    bounding = capmod.resolve(add, drop)
    if user.uid == 0:
        return Capabilities(bounding=bounding, effective=bounding, permitted=bounding)
    added = [c for c in capmod.resolve(add, ["ALL"]) if c in bounding]
    return Capabilities(bounding=bounding, effective=added, permitted=added,
                        inheritable=added, ambient=added)


def find_init(candidates: Sequence[str] = INIT_CANDIDATES) -> str:
    """The init binary for --init (a stat per candidate: cheap, and only with --init)."""
    for path in candidates:
        if os.access(path, os.X_OK):
            return path
    raise UsageError("--init needs catatonit, which is not installed",
                     hint="sudo apt-get install catatonit")


def generate(
    opts: RunOptions,
    user: ExecUser,
    uid_maps: list[IdMapping],
    gid_maps: list[IdMapping],
    host_env: Mapping[str, str],
    container_id: str,
    cwd: str,
    etc_files: Mapping[str, str] | None = None,
) -> Spec:
    """The spec for one `sbx run`. `etc_files` maps container paths (/etc/hosts) to the
    host files generated for them."""
    if not opts.args:
        raise UsageError("no command given", hint="sbx run --rootfs DIR [--] COMMAND [ARG...]")
    hostname = opts.hostname or container_id[:12]
    base_env = [f"PATH={DEFAULT_PATH}", f"HOSTNAME={hostname}", "container=sbx",
                f"HOME={user.home or '/'}"]
    if opts.tty:
        base_env.append("TERM=" + host_env.get("TERM", "xterm"))
    env_files = [parse_env_file(p, t, host_env) for p, t in opts.env_file_text]
    env = merge_env([base_env, opts.image_env, *env_files, opts.env], host_env)

    workdir = opts.workdir or "/"
    if not workdir.startswith("/"):
        raise UsageError(f"invalid --workdir {workdir!r}: it must be an absolute path")

    mounts = default_mounts(opts.network)
    for dest, src in (etc_files or {}).items():
        mounts.append(Mount(dest, "bind", src, ["bind"]))
    if opts.init:
        mounts.append(Mount(INIT_PATH, "bind", find_init(), ["bind", "ro"]))
    mounts += [parse_volume(v, cwd) for v in opts.volumes]
    mounts += [parse_device(d) for d in opts.devices]
    mounts += opts.mounts
    for m in mounts:
        if m.type == "volume":
            raise UsageError(f"volume {m.source or '(anonymous)'} for {m.destination} is "
                             "not resolved", hint="sandbox/volumes/attach.py makes volumes "
                             "into bind mounts before the spec is generated")
    mounts += [parse_tmpfs(t) for t in opts.tmpfs]
    # Parents before children, whatever order they were given in: a tmpfs on /home/me
    # mounted after a bind on /home/me/project would hide the project. A stable sort
    # by path depth, as podman's (containers/common util.SortMounts).
    mounts.sort(key=lambda m: os.path.normpath(m.destination).count("/"))

    namespaces = [n for n in NAMESPACES if n != "network"]
    if opts.network == "none":
        namespaces.append("network")
    elif opts.network != "host":
        raise UsageError(f"unsupported --network {opts.network!r}",
                         hint="use --network host or --network none")

    return Spec(
        process=Process(
            args=list(opts.args),
            env=env,
            cwd=workdir,
            user=User(user.uid, user.gid, list(user.additional_gids), user.name),
            terminal=opts.tty,
            capabilities=capabilities_for(user, opts.cap_add, opts.cap_drop),
        ),
        root=Root(os.path.abspath(opts.rootfs), opts.read_only),
        hostname=hostname,
        mounts=mounts,
        linux=Linux(
            namespaces=namespaces,
            uid_mappings=uid_maps,
            gid_mappings=gid_maps,
            masked_paths=list(MASKED_PATHS),
            readonly_paths=list(READONLY_PATHS),
        ),
        init=opts.init,
    )
