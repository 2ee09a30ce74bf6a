"""The OCI runtime-spec subset sbx runs: plain data, no I/O.

Field names follow the runtime-spec's config.json (opencontainers/runtime-spec,
config.md and config-linux.md), so `Spec.to_oci()` is a config.json a peer runtime
could read. Building a spec from user options lives in `specgen`; making a process
from it lives in `process` and `rootfs`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from sandbox.runtime.record import Record

NAMESPACES = ("user", "mount", "pid", "uts", "ipc", "cgroup", "network")


class IdMapping(NamedTuple):
    """One line of /proc/PID/uid_map: container ids [c, c+size) are host [h, h+size)."""

    container_id: int
    host_id: int
    size: int

    def to_oci(self) -> dict[str, int]:
        return {"containerID": self.container_id, "hostID": self.host_id, "size": self.size}


class Capabilities(Record):
    __slots__ = ("ambient", "bounding", "effective", "inheritable", "permitted")

    def __init__(self, bounding: list[str] | None = None, effective: list[str] | None = None,
                 permitted: list[str] | None = None, inheritable: list[str] | None = None,
                 ambient: list[str] | None = None) -> None:
        self.bounding = bounding or []
        self.effective = effective or []
        self.permitted = permitted or []
        self.inheritable = inheritable or []
        self.ambient = ambient or []


class User(Record):
    __slots__ = ("additional_gids", "gid", "uid", "username")

    def __init__(self, uid: int = 0, gid: int = 0, additional_gids: list[int] | None = None,
                 username: str | None = None) -> None:
        self.uid = uid
        self.gid = gid
        self.additional_gids = additional_gids or []
        self.username = username


class Process(Record):
    __slots__ = (
        "args",
        "capabilities",
        "cwd",
        "env",
        "no_new_privileges",
        "terminal",
        "user",
    )

    def __init__(self, args: list[str], env: list[str] | None = None, cwd: str = "/",
                 user: User | None = None, terminal: bool = False,
                 capabilities: Capabilities | None = None,
                 no_new_privileges: bool = True) -> None:
        self.args = args
        self.env = env or []
        self.cwd = cwd
        self.user = user or User()
        self.terminal = terminal
        self.capabilities = capabilities or Capabilities()
        self.no_new_privileges = no_new_privileges


class Mount(Record):
    """A mount in the container; `options` are OCI/fstab words ("ro", "mode=755")."""

    __slots__ = ("destination", "options", "source", "type")

    def __init__(self, destination: str, type: str = "bind", source: str | None = None,
                 options: list[str] | None = None) -> None:
        self.destination = destination
        self.type = type
        self.source = source
        self.options = options or []

    @property
    def is_bind(self) -> bool:
        return self.type == "bind" or "bind" in self.options or "rbind" in self.options


class Root(Record):
    """The container's root filesystem.

    `mount` is an sbx extension to the runtime-spec: a filesystem to mount on `path`
    inside the container's mount namespace before anything else (the union of an
    image's layers). A rootless overlay must be mounted from inside the user
    namespace that owns it, so it cannot be prepared beforehand as runc expects.
    `mount_cwd` is where that mount's relative paths start (overlay's lowerdir list
    must fit in one page; relative paths keep it short, as containers/storage's
    "l/" links do).
    """

    __slots__ = ("path", "readonly", "mount", "mount_cwd", "mount_program")

    def __init__(self, path: str, readonly: bool = False, mount: Mount | None = None,
                 mount_cwd: str | None = None, mount_program: list[str] | None = None
                 ) -> None:
        self.path = path
        self.readonly = readonly
        self.mount = mount
        self.mount_cwd = mount_cwd
        # A command that mounts the root on `path` and returns once it is mounted
        # (sbx-fs, fuse-overlayfs), run in the container's user and mount namespaces
        # before its pid namespace exists, so the filesystem daemon stays outside it.
        self.mount_program = mount_program


class Linux(Record):
    # cgroup_path: the container's own cgroup (runtime/cgroups.py), made at each
    # start when it has limits; "" for none. Not part of the stored record.
    __slots__ = (
        "cgroup_path",
        "gid_mappings",
        "masked_paths",
        "namespaces",
        "readonly_paths",
        "uid_mappings",
    )

    def __init__(self, namespaces: list[str] | None = None,
                 uid_mappings: list[IdMapping] | None = None,
                 gid_mappings: list[IdMapping] | None = None,
                 masked_paths: list[str] | None = None,
                 readonly_paths: list[str] | None = None) -> None:
        self.namespaces = list(NAMESPACES[:-1]) if namespaces is None else namespaces
        self.uid_mappings = uid_mappings or []
        self.gid_mappings = gid_mappings or []
        self.masked_paths = masked_paths or []
        self.readonly_paths = readonly_paths or []
        self.cgroup_path = ""


class Spec(Record):
    __slots__ = ("annotations", "hostname", "init", "linux", "mounts", "process", "root")

    def __init__(self, process: Process, root: Root, hostname: str = "",
                 mounts: list[Mount] | None = None, linux: Linux | None = None,
                 annotations: dict[str, str] | None = None, init: bool = False) -> None:
        self.process = process
        self.root = root
        self.hostname = hostname
        self.mounts = mounts or []
        self.linux = linux or Linux()
        self.annotations = annotations or {}
        # Not in the runtime-spec: run a small reaping init as pid 1 (docker --init).
        self.init = init

    def has_namespace(self, kind: str) -> bool:
        return kind in self.linux.namespaces

    def to_oci(self) -> dict[str, Any]:
        """The spec as an OCI config.json document."""
        proc = self.process
        return {
            "ociVersion": "1.1.0",
            "process": {
                "terminal": proc.terminal,
                "user": {
                    "uid": proc.user.uid,
                    "gid": proc.user.gid,
                    "additionalGids": proc.user.additional_gids,
                },
                "args": proc.args,
                "env": proc.env,
                "cwd": proc.cwd,
                "capabilities": proc.capabilities.as_dict(),
                "noNewPrivileges": proc.no_new_privileges,
            },
            "root": {"path": self.root.path, "readonly": self.root.readonly},
            "hostname": self.hostname,
            "mounts": [
                {k: v for k, v in m.as_dict().items() if v is not None} for m in self.mounts
            ],
            "linux": {
                "namespaces": [{"type": n} for n in self.linux.namespaces],
                "uidMappings": [m.to_oci() for m in self.linux.uid_mappings],
                "gidMappings": [m.to_oci() for m in self.linux.gid_mappings],
                "maskedPaths": self.linux.masked_paths,
                "readonlyPaths": self.linux.readonly_paths,
            },
            "annotations": self.annotations,
        }
