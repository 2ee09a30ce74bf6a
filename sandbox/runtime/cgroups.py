"""Resource limits (memory, cpus, pids) in a cgroup v2 child cgroup of a delegated one.

A rootless runtime can only make cgroups where it has been given a subtree
(cgroup-v2.rst, "Delegation"): typically `systemd-run --user --scope -p
Delegate=yes sbx ...`, or a user@.service with Delegate=. sbx then runs inside
that cgroup D, as its only processes. Two rules of cgroup v2 shape what happens:

- "no internal processes": controllers enabled in D's cgroup.subtree_control apply
  to D's children, and a cgroup (other than the root) that has controllers enabled
  for its children may hold no processes itself. So, as crun does when it finds
  itself in a delegated scope, the processes in D are first moved into a leaf child
  `D/sbx-leaf`, then `+memory +cpu +pids` is written to D/cgroup.subtree_control;
- a process moves by writing its pid to the destination's cgroup.procs, which needs
  write access to the common ancestor's cgroup.procs too: D, which is ours.

Each container gets `D/sbx-<id12>` with memory.max (and memory.swap.max = 0 when a
memory limit is set, so that the limit is the limit: podman's default
--memory-swap is twice --memory, docker's too; sbx keeps it simple and says so),
cpu.max ("QUOTA PERIOD", period 100 ms as runc's default) and pids.max. The
runtime moves the container's first process there before it makes the cgroup
namespace, so the container sees its own cgroup as its root. The folder is removed
once the container is gone; memory.events' oom_kill count tells an OOM kill.

Where the host has no delegation (this project's CI host: hybrid cgroups, with
memory, cpu and pids on v1), `plan` raises CgroupUnavailable with what to do, and
the callers (cli/run.py, profiles) decide whether that is an error or a note.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from sandbox.errors import SbxError

if TYPE_CHECKING:
    from sandbox.system.checks import CgroupInfo

CPU_PERIOD_US = 100_000  # runc's and the kernel's default cfs period
LEAF = "sbx-leaf"


class CgroupUnavailable(SbxError):
    """Limits were asked for and this host gives sbx no cgroup v2 to set them in."""


class Limits:
    """The limits of one container; None = no limit."""

    __slots__ = ("cpus", "memory", "pids")

    def __init__(self, memory: int | None = None, cpus: float | None = None,
                 pids: int | None = None) -> None:
        self.memory = memory
        self.cpus = cpus
        self.pids = pids

    def __bool__(self) -> bool:
        return any(v is not None for v in (self.memory, self.cpus, self.pids))

    def controllers(self) -> list[str]:
        out = []
        if self.memory is not None:
            out.append("memory")
        if self.cpus is not None:
            out.append("cpu")
        if self.pids is not None:
            out.append("pids")
        return out

    def files(self) -> dict[str, str]:
        """Interface file -> value (cgroup-v2.rst, "Memory", "CPU", "PID")."""
        out = {}
        if self.memory is not None:
            out["memory.max"] = str(self.memory)
            out["memory.swap.max"] = "0"
        if self.cpus is not None:
            out["cpu.max"] = f"{max(1000, round(self.cpus * CPU_PERIOD_US))} {CPU_PERIOD_US}"
        if self.pids is not None:
            out["pids.max"] = str(self.pids)
        return out

    def to_json(self) -> dict[str, float | int | None]:
        return {"memory": self.memory, "cpus": self.cpus, "pids": self.pids}


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _write(path: Path, value: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(value)
    except OSError as exc:
        raise SbxError(f"can't write {value!r} to {path}: {exc.strerror}",
                       hint="check the cgroup delegation: sbx info") from None


def plan(limits: Limits, probe: Callable[[], CgroupInfo] | None = None) -> str:
    """The delegated cgroup directory D to make the container's cgroup in; raises
    CgroupUnavailable (with the fix) when the controllers are not delegated."""
    from sandbox.system.checks import check_cgroups, probe_cgroups

    info = (probe or probe_cgroups)()
    missing = [c for c in limits.controllers() if c not in info.delegated]
    if missing or not info.directory:
        check = check_cgroups(info)
        raise CgroupUnavailable(
            f"can't apply {', '.join(missing) or 'the'} limits: {check.detail}",
            hint=check.fix or "run sbx in a delegated cgroup v2 scope")
    return info.directory


def create(parent: str, container_id: str, limits: Limits) -> str:
    """Make parent/sbx-<id12> with the limits; returns its path."""
    d = Path(parent)
    wanted = limits.controllers()
    enabled = _read(d / "cgroup.subtree_control").split()
    if any(c not in enabled for c in wanted):
        procs = _read(d / "cgroup.procs").split()
        if procs:
            leaf = d / LEAF
            leaf.mkdir(exist_ok=True)
            for pid in procs:
                with contextlib.suppress(SbxError):  # a process that exited meanwhile
                    _write(leaf / "cgroup.procs", pid)
        _write(d / "cgroup.subtree_control", " ".join(f"+{c}" for c in wanted))
    path = d / f"sbx-{container_id[:12]}"
    path.mkdir(exist_ok=True)
    for name, value in limits.files().items():
        if name == "memory.swap.max" and not (path / name).exists():
            continue  # swap accounting off (kernel cmdline): memory.max still holds
        _write(path / name, value)
    return str(path)


def of_process(pid: int) -> str | None:
    """The cgroup v2 directory `pid` is in (for `sbx exec`, which joins it), if any."""
    from sandbox.system.checks import cgroup2_mounts, self_cgroup_path

    path = self_cgroup_path(_read(Path(f"/proc/{pid}/cgroup")))
    mounts = cgroup2_mounts(_read(Path("/proc/self/mounts")))
    if path is None or not mounts:
        return None
    mount = "/sys/fs/cgroup" if "/sys/fs/cgroup" in mounts else mounts[0]
    d = os.path.join(mount, path.lstrip("/"))
    return d if os.path.basename(d).startswith("sbx-") else None


def add_process(path: str, pid: int) -> None:
    _write(Path(path) / "cgroup.procs", str(pid))


def oom_killed(path: str) -> bool:
    """Whether the kernel's OOM killer killed a process of this cgroup."""
    for line in _read(Path(path) / "memory.events").splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill" and value.strip() not in ("", "0"):
            return True
    return False


def remove(path: str) -> None:
    """rmdir the container's cgroup once its processes are gone (EBUSY otherwise)."""
    with contextlib.suppress(OSError):
        os.rmdir(path)
