"""The OCI runtime-spec subset sbx runs: plain data, no I/O.

Field names follow the runtime-spec's config.json (opencontainers/runtime-spec,
config.md and config-linux.md), so `Spec.to_oci()` is a config.json a peer runtime
could read. Building a spec from user options lives in `specgen`; making a process
from it lives in `process` and `rootfs`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

NAMESPACES = ("user", "mount", "pid", "uts", "ipc", "cgroup", "network")


@dataclass(frozen=True)
class IdMapping:
    """One line of /proc/PID/uid_map: container ids [c, c+size) are host [h, h+size)."""

    container_id: int
    host_id: int
    size: int

    def to_oci(self) -> dict[str, int]:
        return {"containerID": self.container_id, "hostID": self.host_id, "size": self.size}


@dataclass
class Capabilities:
    bounding: list[str] = field(default_factory=list)
    effective: list[str] = field(default_factory=list)
    permitted: list[str] = field(default_factory=list)
    inheritable: list[str] = field(default_factory=list)
    ambient: list[str] = field(default_factory=list)


@dataclass
class User:
    uid: int = 0
    gid: int = 0
    additional_gids: list[int] = field(default_factory=list)
    username: str | None = None


@dataclass
class Process:
    args: list[str]
    env: list[str] = field(default_factory=list)
    cwd: str = "/"
    user: User = field(default_factory=User)
    terminal: bool = False
    capabilities: Capabilities = field(default_factory=Capabilities)
    no_new_privileges: bool = True


@dataclass
class Mount:
    """A mount in the container; `options` are OCI/fstab words ("ro", "mode=755")."""

    destination: str
    type: str = "bind"
    source: str | None = None
    options: list[str] = field(default_factory=list)

    @property
    def is_bind(self) -> bool:
        return self.type == "bind" or "bind" in self.options or "rbind" in self.options


@dataclass
class Root:
    path: str
    readonly: bool = False


@dataclass
class Linux:
    namespaces: list[str] = field(default_factory=lambda: list(NAMESPACES[:-1]))
    uid_mappings: list[IdMapping] = field(default_factory=list)
    gid_mappings: list[IdMapping] = field(default_factory=list)
    masked_paths: list[str] = field(default_factory=list)
    readonly_paths: list[str] = field(default_factory=list)


@dataclass
class Spec:
    process: Process
    root: Root
    hostname: str = ""
    mounts: list[Mount] = field(default_factory=list)
    linux: Linux = field(default_factory=Linux)
    annotations: dict[str, str] = field(default_factory=dict)
    # Not in the runtime-spec: run a small reaping init as pid 1 (docker --init).
    init: bool = False
    # Not in the runtime-spec: where the generated /etc files were written.
    state_dir: str | None = None

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
                "capabilities": asdict(proc.capabilities),
                "noNewPrivileges": proc.no_new_privileges,
            },
            "root": {"path": self.root.path, "readonly": self.root.readonly},
            "hostname": self.hostname,
            "mounts": [
                {k: v for k, v in asdict(m).items() if v is not None} for m in self.mounts
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
