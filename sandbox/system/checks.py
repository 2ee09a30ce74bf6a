"""Host probes behind `sbx system check` and `sbx info`.

Each probe looks at one thing sbx needs from the host and returns a `Check`: a
status, what it saw (naming the file or path it read), and the command that fixes it.
Probes never print or exit; `sandbox.cli.system` renders them. Every probe takes the
paths it reads as arguments, so unit tests point it at files under a tmp dir.

A check is `required` when sbx cannot run containers at all without it. Status "fail"
is kept for required checks; a missing optional feature (FUSE, cgroup limits,
networking) is a "warn", because sbx falls back (vfs storage, no limits, no network).

Probes that need namespaces (user namespace, overlay mount) run in a forked child,
so this process never changes namespace: after unshare(CLONE_NEWUSER) a process can
not go back, and user_namespaces(7) forbids it in a threaded process anyway.

The syscalls (unshare, mount) go through `sandbox.runtime.syscalls`, imported inside
the probes: imports at the top stay stdlib-only, so loading this module stays cheap.
"""

from __future__ import annotations

import os
import platform
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from sandbox.errors import SbxError
from sandbox.system.idhelpers import (  # noqa: F401 - re-exported
    CAP_SETGID,
    CAP_SETUID,
    caps_permitted,
    find_helper,
    helper_privilege,
    probe_idmap_helper,
)
from sandbox.system.subid import FULL_RANGE, SUBID_FILES, SubIdRange, read_subid_ranges

Status = Literal["ok", "warn", "fail"]

# Flag values of <linux/sched.h> and <linux/mount.h>, kept equal to those of
# sandbox.runtime.syscalls (a unit test checks) so this module loads without ctypes.
CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18


# The controllers sbx sets limits with (--memory, --cpus, --pids-limit).
LIMIT_CONTROLLERS = ("memory", "cpu", "pids")


@dataclass(frozen=True)
class Check:
    """The outcome of one probe."""

    name: str
    status: Status
    detail: str
    fix: str | None = None
    required: bool = False

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape of `sbx system check --format json`."""
        return {
            "name": self.name,
            "status": self.status,
            "required": self.required,
            "detail": self.detail,
            "fix": self.fix,
        }


def _bad(required: bool) -> Status:
    """The status of a probe that found a problem: only required checks fail."""
    return "fail" if required else "warn"


@dataclass(frozen=True)
class User:
    """Who runs sbx: newuidmap(1) identifies the caller by its real uid."""

    name: str
    uid: int
    gid: int


def current_user() -> User:
    import pwd

    uid, gid = os.getuid(), os.getgid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        # No passwd entry (a container started with an arbitrary uid): only a
        # numeric /etc/subuid entry can match.
        name = str(uid)
    return User(name, uid, gid)


# ---------------------------------------------------------------------------
# 1. newuidmap / newgidmap


def check_idmap_helper(
    name: str,
    cap: int,
    ranges_configured: bool,
    path: str | None = None,
    fallback_dirs: Sequence[str] = ("/usr/bin",),
) -> Check:
    """Probe newuidmap or newgidmap (see `sandbox.system.idhelpers`).

    They are required once the user has /etc/subuid and /etc/subgid ranges; without
    ranges sbx maps only the user's own id itself, so the helpers are optional.
    """
    probe = probe_idmap_helper(name, cap, ranges_configured, path, fallback_dirs)
    if probe.ok:
        return Check(name, "ok", probe.detail, None, ranges_configured)
    return Check(name, _bad(ranges_configured), probe.detail, probe.fix, ranges_configured)


# ---------------------------------------------------------------------------
# 2. /etc/subuid, /etc/subgid


def _usermod_fix(user: str, start: int = 100000) -> str:
    end = start + FULL_RANGE - 1
    return (
        f"sudo usermod --add-subuids {start}-{end} --add-subgids {start}-{end} {user}"
        " (pick a range no other entry in /etc/subuid and /etc/subgid uses)"
    )


def suggest_start(texts: Iterable[str], floor: int = 100000) -> int:
    """A range start past every range already in the given subuid/subgid texts.

    usermod's own default (SUB_UID_MIN in login.defs) is 100000; if that is taken,
    go past the highest range in use, rounded up to a multiple of 65536.
    """
    highest = 0
    for text in texts:
        for line in text.splitlines():
            fields = line.strip().split(":")
            if len(fields) == 3 and fields[1].isdigit() and fields[2].isdigit():
                highest = max(highest, int(fields[1]) + int(fields[2]))
    if highest <= floor:
        return floor
    return -(-highest // FULL_RANGE) * FULL_RANGE


def _read_text(path: str | Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def format_ranges(ranges: Sequence[SubIdRange]) -> str:
    return ", ".join(f"{r.start}-{r.end}" for r in ranges)


def check_subid(
    kind: Literal["uid", "gid"],
    user: User,
    path: str | Path | None = None,
    other_path: str | Path | None = None,
) -> Check:
    """Probe the user's ranges in /etc/subuid or /etc/subgid (subuid(5), subgid(5)).

    Never required: without ranges sbx falls back to mapping only the user's own id,
    as podman does, which runs most images but shows files of other owners as nobody.
    """
    name = f"sub{kind}"
    file = Path(path) if path is not None else Path(SUBID_FILES[kind])
    other = "gid" if kind == "uid" else "uid"
    other_file = Path(other_path) if other_path is not None else Path(SUBID_FILES[other])
    fix = _usermod_fix(user.name, suggest_start([_read_text(file), _read_text(other_file)]))
    try:
        ranges = read_subid_ranges(kind, user.name, user.uid, file)
    except SbxError as err:
        return Check(name, "warn", err.message, err.hint)
    total = sum(r.count for r in ranges)
    who = f"{user.name} (uid {user.uid})"
    if not ranges:
        return Check(
            name,
            "warn",
            f"no ranges for {who} in {file}; sbx maps only your own {kind}, "
            f"so files of other owners in images show up as nobody",
            fix,
        )
    if total < FULL_RANGE:
        return Check(
            name,
            "warn",
            f"{who} has only {total} ids in {file} ({format_ranges(ranges)}); "
            f"images that use {kind}s up to 65535 need {FULL_RANGE}",
            fix,
        )
    return Check(name, "ok", f"{who}: {format_ranges(ranges)} ({total} ids) in {file}")


# ---------------------------------------------------------------------------
# Forked-child probes


class ProbeError(Exception):
    """A step of a child probe failed; the text names the step and the errno."""


def _errno_text(err: int) -> str:
    import errno

    return f"{errno.errorcode.get(err, f'errno {err}')} ({os.strerror(err)})"


def _oserror_step(step: str, exc: OSError) -> ProbeError:
    return ProbeError(f"{step}: {_errno_text(exc.errno or 0)}")


def _syscall(step: str, call: Callable[..., None], *args: Any) -> None:
    """Make one call of `sandbox.runtime.syscalls` (the one door to the kernel) as a
    probe step: its SyscallError becomes a ProbeError that names the step."""
    from sandbox.errors import SyscallError

    try:
        call(*args)
    except SyscallError as exc:
        raise ProbeError(f"{step}: {_errno_text(exc.errno)}") from None


def _unshare(flags: int, step: str) -> None:
    from sandbox.runtime.syscalls import Syscalls

    _syscall(step, Syscalls().unshare, flags)


def _mount(
    source: str, target: str, fstype: str | None, flags: int, data: str | None, step: str
) -> None:
    from sandbox.runtime.syscalls import Syscalls

    _syscall(step, Syscalls().mount, source, target, fstype, flags, data)


def _write_file(path: str, text: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(text)
    except OSError as exc:
        raise _oserror_step(f"write {text.strip()!r} to {path}", exc) from None


def _enter_userns(uid: int, gid: int, extra_flags: int = 0) -> None:
    """unshare a user namespace and map our own ids to root inside it.

    user_namespaces(7): an unprivileged process may write a single-line uid_map that
    maps its own effective uid; for gid_map it must first write "deny" to
    /proc/self/setgroups (Linux 3.19, CVE-2014-8989). Writing the maps also catches
    Ubuntu's AppArmor restriction, under which unshare succeeds but the new
    namespace gets no capabilities, so the writes fail with EPERM.
    """
    _unshare(CLONE_NEWUSER | extra_flags, _unshare_step(extra_flags))
    _write_file("/proc/self/setgroups", "deny")
    _write_file("/proc/self/uid_map", f"0 {uid} 1\n")
    _write_file("/proc/self/gid_map", f"0 {gid} 1\n")


def _unshare_step(extra_flags: int) -> str:
    names = ["CLONE_NEWUSER"] + (["CLONE_NEWNS"] if extra_flags & CLONE_NEWNS else [])
    return f"unshare({'|'.join(names)})"


def run_in_child(fn: Callable[[], str]) -> tuple[bool, str]:
    """Run `fn` in a forked child; return (True, its text) or (False, the error text).

    The child reports through a pipe and leaves with os._exit, so it never runs the
    parent's atexit handlers, pytest's teardown or buffered-output flushes.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.close(read_fd)
            try:
                message = "0" + fn()
            except ProbeError as exc:
                message = "1" + str(exc)
            except OSError as exc:
                message = "1" + f"{exc.filename or 'probe'}: {_errno_text(exc.errno or 0)}"
            except BaseException as exc:
                message = "1" + f"probe crashed: {type(exc).__name__}: {exc}"
            data = message.encode("utf-8", "replace")
            while data:
                data = data[os.write(write_fd, data) :]
        finally:
            os._exit(0)
    os.close(write_fd)
    chunks = []
    with os.fdopen(read_fd, "rb") as pipe:
        while chunk := pipe.read(4096):
            chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    text = b"".join(chunks).decode("utf-8", "replace")
    if not text:
        return False, f"probe child ended with wait status {status} and no report"
    return text[0] == "0", text[1:]


# ---------------------------------------------------------------------------
# 3. user namespaces


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def probe_userns() -> tuple[bool, str]:
    """Create a user namespace in a forked child and map our ids in it."""
    uid, gid = os.geteuid(), os.getegid()

    def child() -> str:
        _enter_userns(uid, gid)
        return "unshare(CLONE_NEWUSER) and writing uid_map/gid_map work"

    return run_in_child(child)


def check_userns(
    sysctl_root: str | Path = "/proc/sys",
    probe: Callable[[], tuple[bool, str]] | None = probe_userns,
    euid: int | None = None,
) -> Check:
    """Probe that this user may create user namespaces (user_namespaces(7)).

    Required: every container starts with one. The sysctls are read first because
    they give the precise fix; then a real unshare in a child proves it.
    """
    name = "userns"
    root = Path(sysctl_root)
    euid = os.geteuid() if euid is None else euid
    max_ns_file = root / "user" / "max_user_namespaces"
    max_ns = _read_int(max_ns_file)
    if max_ns is not None and max_ns <= 0:
        return Check(
            name,
            "fail",
            f"{max_ns_file} is {max_ns}: user namespaces are disabled",
            "sudo sysctl -w user.max_user_namespaces=15000 "
            "(and set it in /etc/sysctl.d/ to keep it after a reboot)",
            True,
        )
    # Debian kernels before 5.10 carried this knob, default 0 (off for non-root).
    clone_file = root / "kernel" / "unprivileged_userns_clone"
    clone = _read_int(clone_file)
    if euid != 0 and clone is not None and clone != 1:
        return Check(
            name,
            "fail",
            f"{clone_file} is {clone}: unprivileged user namespaces are off",
            "sudo sysctl -w kernel.unprivileged_userns_clone=1 "
            "(and set it in /etc/sysctl.d/ to keep it after a reboot)",
            True,
        )
    # Ubuntu 23.10+: unprivileged user namespaces get no capabilities unless an
    # AppArmor profile grants `userns,` to the program.
    aa_file = root / "kernel" / "apparmor_restrict_unprivileged_userns"
    aa = _read_int(aa_file)
    if euid != 0 and aa == 1:
        return Check(
            name,
            "fail",
            f"{aa_file} is 1: AppArmor denies capabilities in unprivileged user namespaces",
            "sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0, or add an "
            f"AppArmor profile in /etc/apparmor.d/ granting 'userns,' to {sys.executable}",
            True,
        )
    if probe is None:
        return Check(name, "ok", "sysctls allow user namespaces (not probed)", None, True)
    ok, text = probe()
    limit = f"; user.max_user_namespaces={max_ns}" if max_ns is not None else ""
    if ok:
        return Check(name, "ok", text + limit, None, True)
    return Check(
        name,
        "fail",
        text + limit,
        "user namespaces are blocked: outside a container check the sysctls in "
        f"{root}/user and {root}/kernel; inside one (docker, a CI runner) allow "
        "unshare in its seccomp profile or run sbx on the host",
        True,
    )


# ---------------------------------------------------------------------------
# 4. /dev/fuse


def check_fuse(dev: str | Path = "/dev/fuse") -> Check:
    """Probe that /dev/fuse opens read-write: the fuse storage driver needs it."""
    name = "fuse"
    device = Path(dev)
    fallback = "the fuse storage driver is unavailable (sbx uses overlay or vfs)"
    try:
        st = device.stat()
    except FileNotFoundError:
        return Check(
            name,
            "warn",
            f"{device} does not exist; {fallback}",
            "sudo apt-get install fuse3 && sudo modprobe fuse "
            "(in a container: pass --device /dev/fuse)",
        )
    except OSError as exc:
        return Check(
            name,
            "warn",
            f"can't stat {device}: {exc.strerror}; {fallback}",
            f"check the permissions of {device.parent}",
        )
    if not stat.S_ISCHR(st.st_mode):
        return Check(
            name,
            "warn",
            f"{device} is not a character device; {fallback}",
            f"sudo rm {device} && sudo mknod -m 0666 {device} c 10 229",
        )
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return Check(
            name,
            "warn",
            f"can't open {device} read-write: {_errno_text(exc.errno or 0)}; {fallback}",
            f"sudo chmod 0666 {device} (Debian's fuse3 package makes it so)",
        )
    os.close(fd)
    return Check(name, "ok", f"{device} opens read-write")


# ---------------------------------------------------------------------------
# 5. kernel overlayfs in a user namespace


def _overlay_escape(path: str) -> str:
    # overlayfs splits its options at ',' and lowerdir at ':'; a backslash escapes
    # either (Documentation/filesystems/overlayfs.rst).
    return path.replace("\\", "\\\\").replace(",", "\\,").replace(":", "\\:")


def _rmtree_force(path: Path) -> str | None:
    """Remove a probe directory; return why it could not be removed, or None.

    overlayfs leaves work/work with mode 000 (owned by us, through the id map), which
    rmtree cannot descend into; make every directory ours to list first. os.walk
    lists a directory before descending into its children, so the chmod comes first.
    """
    try:
        for dirpath, dirnames, _ in os.walk(path):
            for d in dirnames:
                os.chmod(os.path.join(dirpath, d), 0o700)
        shutil.rmtree(path)
    except OSError as exc:
        return f"could not remove {exc.filename or path}: {exc.strerror}"
    return None


def probe_overlay(base: str | Path) -> tuple[bool, str]:
    """Mount a kernel overlay in a new user+mount namespace under `base` and use it.

    Unprivileged overlay mounts need Linux 5.11 and the `userxattr` option, which
    keeps overlay's metadata in user.* xattrs, so the upper directory's filesystem
    must support those (tmpfs only since Linux 6.6; not NFS). The probe deletes a
    lower file (a whiteout) and writes a new one (copy-up), as a container does.
    """
    tmp = Path(tempfile.mkdtemp(prefix="sbx-check-overlay-", dir=base))
    try:
        ok, text = _probe_overlay_in(tmp)
    finally:
        leftover = _rmtree_force(tmp)
    return ok, (f"{text}; {leftover}" if leftover else text)


def _probe_overlay_in(tmp: Path) -> tuple[bool, str]:
    uid, gid = os.geteuid(), os.getegid()
    dirs = {d: tmp / d for d in ("lower", "upper", "work", "merged")}
    for d in dirs.values():
        d.mkdir()
    (dirs["lower"] / "old").write_text("lower\n")
    options = ",".join(
        [
            f"lowerdir={_overlay_escape(str(dirs['lower']))}",
            f"upperdir={_overlay_escape(str(dirs['upper']))}",
            f"workdir={_overlay_escape(str(dirs['work']))}",
            "userxattr",
        ]
    )
    merged = str(dirs["merged"])

    def child() -> str:
        _enter_userns(uid, gid, CLONE_NEWNS)
        # Keep our mounts from propagating anywhere (mount_namespaces(7)).
        _mount("none", "/", None, MS_REC | MS_PRIVATE, None, "make / rprivate")
        _mount("overlay", merged, "overlay", 0, options, f"mount overlay on {merged}")
        try:
            os.unlink(os.path.join(merged, "old"))
        except OSError as exc:
            raise _oserror_step(f"delete a lower file in {merged}", exc) from None
        try:
            Path(merged, "new").write_text("upper\n")
        except OSError as exc:
            raise _oserror_step(f"write a file in {merged}", exc) from None
        if not (dirs["upper"] / "new").exists():
            raise ProbeError(f"a file written to {merged} did not reach {dirs['upper']}")
        return f"overlay with userxattr mounts in a user namespace under {tmp.parent}"

    return run_in_child(child)


def _default_overlay_base() -> Path:
    # Probe on the filesystem the image store will use, when it exists: overlay's
    # upper layer needs user xattrs there, and /tmp may be a different filesystem.
    from sandbox.paths import data_dir

    store = Path(data_dir())
    return store if store.is_dir() and os.access(store, os.W_OK) else Path(tempfile.gettempdir())


def check_overlay(
    base: str | Path | None = None,
    probe: Callable[[Path], tuple[bool, str]] = probe_overlay,
) -> Check:
    """Probe the native overlay storage driver. Optional: fuse and vfs remain."""
    name = "overlay"
    where = Path(base) if base is not None else _default_overlay_base()
    try:
        ok, text = probe(where)
    except OSError as exc:
        return Check(
            name,
            "warn",
            f"can't prepare a probe directory in {where}: {exc.strerror}",
            f"make {where} writable, or set XDG_DATA_HOME to a writable directory",
        )
    if ok:
        return Check(name, "ok", text)
    if text.startswith(("unshare(", "write ")):
        # The namespace itself failed: the userns check says why and what to do.
        fix = "make user namespaces work first (see the userns check)"
    else:
        fix = (
            f"needs Linux 5.11+ and a filesystem with user xattrs under {where} "
            "(ext4, xfs, btrfs; tmpfs from Linux 6.6); or install fuse3 for the fuse driver"
        )
    return Check(
        name,
        "warn",
        f"{text}; the native overlay driver is unavailable (sbx uses fuse or vfs)",
        fix,
    )


# ---------------------------------------------------------------------------
# 6. cgroups


@dataclass(frozen=True)
class CgroupInfo:
    """What this process can do with cgroups (see the kernel's cgroup-v2.rst)."""

    version: Literal["v1", "v2", "hybrid"]
    mount: str | None = None  # the cgroup2 mount point
    path: str | None = None  # this process's cgroup, from the "0::" line of /proc/self/cgroup
    directory: str | None = None  # mount + path
    controllers: tuple[str, ...] = ()  # cgroup.controllers of that directory
    subtree_control: tuple[str, ...] = ()
    writable: bool = False  # this user may create child cgroups and enable controllers

    @property
    def delegated(self) -> tuple[str, ...]:
        """The limit controllers sbx can use in a child cgroup of this one."""
        if not self.writable:
            return ()
        return tuple(c for c in LIMIT_CONTROLLERS if c in self.controllers)


def _unescape_mount_field(field: str) -> str:
    # /proc/self/mounts escapes space, tab, newline and backslash as \ooo (fstab(5)).
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def cgroup2_mounts(mounts_text: str) -> list[str]:
    """The mount points of cgroup2 filesystems in a /proc/self/mounts text."""
    points = []
    for line in mounts_text.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[2] == "cgroup2":
            points.append(_unescape_mount_field(fields[1]))
    return points


def self_cgroup_path(cgroup_text: str) -> str | None:
    """The unified-hierarchy path from a /proc/PID/cgroup text (cgroups(7): "0::PATH")."""
    for line in cgroup_text.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            return path or "/"
    return None


def _user_can_write(path: Path) -> bool:
    return os.access(path, os.W_OK)


def probe_cgroups(
    root: str | Path = "/sys/fs/cgroup",
    mounts_path: str | Path = "/proc/self/mounts",
    self_cgroup: str | Path = "/proc/self/cgroup",
    writable: Callable[[Path], bool] = _user_can_write,
) -> CgroupInfo:
    """Find the cgroup version, this process's cgroup and what is delegated in it."""
    root = Path(root)
    mounts = cgroup2_mounts(_read_text(mounts_path))
    if (root / "cgroup.controllers").is_file():
        version: Literal["v1", "v2", "hybrid"] = "v2"
        mount = str(root)
    elif mounts:
        version = "hybrid"
        # Prefer systemd's /sys/fs/cgroup/unified over any other cgroup2 mount.
        under = [m for m in mounts if Path(m).is_relative_to(root)]
        mount = (under or mounts)[0]
    else:
        return CgroupInfo("v1")
    path = self_cgroup_path(_read_text(self_cgroup))
    if path is None:
        return CgroupInfo(version, mount)
    directory = Path(mount) / path.lstrip("/")
    if directory.name == "sbx-leaf" and path != "/":
        # An earlier sbx moved the processes of the delegated cgroup D into its leaf
        # D/sbx-leaf (runtime/cgroups.py); containers are still made in D.
        directory = directory.parent
        path = str(Path(path).parent)
    controllers = tuple(_read_text(directory / "cgroup.controllers").split())
    subtree = tuple(_read_text(directory / "cgroup.subtree_control").split())
    # Delegation (cgroup-v2.rst, "Delegation Containment"): the delegatee owns the
    # directory and its cgroup.subtree_control, so it can add children and enable
    # controllers for them.
    can_write = (
        directory.is_dir()
        and writable(directory)
        and writable(directory / "cgroup.subtree_control")
    )
    return CgroupInfo(version, mount, path, str(directory), controllers, subtree, can_write)


_CGROUP_V2_FIX = (
    "boot with systemd.unified_cgroup_hierarchy=1 on the kernel command line "
    "(cgroup v2, the default since Debian 11)"
)
_DELEGATE_FIX = (
    "run sbx in a delegated scope: systemd-run --user --scope -p Delegate=yes sbx ...; "
    "for all logins, add Delegate=cpu cpuset io memory pids to a drop-in "
    "/etc/systemd/system/user@.service.d/delegate.conf (systemd.resource-control(5))"
)


def check_cgroups(info: CgroupInfo | None = None) -> Check:
    """Report whether resource limits can apply. Optional: containers run without."""
    name = "cgroups"
    info = info if info is not None else probe_cgroups()
    ignored = "resource limits (--memory, --cpus, --pids-limit) are not applied"
    if info.version == "v1":
        return Check(
            name,
            "warn",
            f"cgroup v1 only (no cgroup2 in /proc/self/mounts); rootless {ignored}",
            _CGROUP_V2_FIX,
        )
    if info.directory is None:
        return Check(
            name,
            "warn",
            f"cgroup {info.version}: no 0:: line in /proc/self/cgroup; {ignored}",
            _CGROUP_V2_FIX,
        )
    delegated = info.delegated
    missing = [c for c in LIMIT_CONTROLLERS if c not in delegated]
    label = f"cgroup {info.version} ({info.mount})"
    if not missing:
        return Check(name, "ok", f"{label}: {', '.join(delegated)} delegated in {info.directory}")
    available = ", ".join(info.controllers) or "none"
    if info.version == "hybrid" and not any(c in info.controllers for c in LIMIT_CONTROLLERS):
        return Check(
            name,
            "warn",
            f"{label}: controllers in cgroup2: {available}; memory, cpu and pids are on "
            f"cgroup v1, so {ignored}",
            _CGROUP_V2_FIX,
        )
    why = "not writable by you" if not info.writable else f"controllers available: {available}"
    return Check(
        name,
        "warn",
        f"{label}: {info.directory} is {why}; not delegated: {', '.join(missing)}; "
        f"those limits are not applied",
        _DELEGATE_FIX,
    )


# ---------------------------------------------------------------------------
# 7. user-mode networking


def check_network(path: str | None = None) -> Check:
    """Probe for pasta (passt) or slirp4netns: rootless containers reach the network
    through one of them. Optional: without, containers get only loopback."""
    name = "network"
    found = {tool: shutil.which(tool, path=path) for tool in ("pasta", "slirp4netns")}
    present = [f"{tool}: {where}" for tool, where in found.items() if where]
    if present:
        return Check(name, "ok", "; ".join(present))
    return Check(
        name,
        "warn",
        "neither pasta nor slirp4netns is on PATH; containers get only loopback networking",
        "sudo apt-get install passt (or slirp4netns)",
    )


# ---------------------------------------------------------------------------
# All of them


def _guarded(name: str, required: bool, probe: Callable[[], Check]) -> Check:
    """Run one probe; a bug in one must not hide the results of the others."""
    try:
        return probe()
    except Exception as exc:
        return Check(
            name,
            _bad(required),
            f"probe crashed: {type(exc).__name__}: {exc}",
            "report this as an sbx bug",
            required,
        )


def _ranges(kind: Literal["uid", "gid"], user: User) -> list[SubIdRange]:
    try:
        return read_subid_ranges(kind, user.name, user.uid)
    except SbxError:
        return []


def run_checks() -> list[Check]:
    """Run every probe, in the order `sbx system check` shows them."""
    user = current_user()
    # The runtime (sandbox.runtime.idmap.plan) runs the helpers only when the user
    # has both subuid and subgid ranges; then they must work.
    uses_helpers = bool(_ranges("uid", user)) and bool(_ranges("gid", user))
    return [
        _guarded(
            "newuidmap",
            uses_helpers,
            lambda: check_idmap_helper("newuidmap", CAP_SETUID, uses_helpers),
        ),
        _guarded(
            "newgidmap",
            uses_helpers,
            lambda: check_idmap_helper("newgidmap", CAP_SETGID, uses_helpers),
        ),
        _guarded("subuid", False, lambda: check_subid("uid", user)),
        _guarded("subgid", False, lambda: check_subid("gid", user)),
        _guarded("userns", True, check_userns),
        _guarded("fuse", False, check_fuse),
        _guarded("overlay", False, check_overlay),
        _guarded("cgroups", False, check_cgroups),
        _guarded("network", False, check_network),
    ]


def failed_required(checks: Iterable[Check]) -> list[Check]:
    return [c for c in checks if c.required and c.status == "fail"]


def info(checks: Sequence[Check] | None = None) -> dict[str, Any]:
    """How sbx sees this host, for `sbx info`. Runs the checks unless given them."""
    import sandbox
    from sandbox import paths

    user = current_user()
    checks = list(checks) if checks is not None else run_checks()
    try:
        runtime: str = str(paths.runtime_dir())
    except SbxError as err:
        runtime = f"unusable: {err.message}"
    cgroups = _guarded_cgroups()
    uname = os.uname()
    return {
        "sbx": {
            "version": sandbox.__version__,
            "python": platform.python_version(),
            "executable": sys.executable,
        },
        "host": {
            "kernel": uname.release,
            "arch": uname.machine,
            "os": _os_name(),
            "cgroup_version": cgroups.version,
            "cgroup": cgroups.directory,
            "cgroup_delegated": list(cgroups.delegated),
        },
        "user": {
            "name": user.name,
            "uid": user.uid,
            "gid": user.gid,
            "subuid": [{"start": r.start, "count": r.count} for r in _ranges("uid", user)],
            "subgid": [{"start": r.start, "count": r.count} for r in _ranges("gid", user)],
        },
        "store": {
            "storage_driver": _storage_driver(),
            "data_dir": str(paths.data_dir()),
            "config_dir": str(paths.config_dir()),
            "runtime_dir": runtime,
        },
        "checks": {c.name: c.status for c in checks},
    }


def _storage_driver() -> str:
    """The driver a container gets here, and why (sandbox/storage/drivers.py)."""
    from sandbox.storage import drivers

    try:
        asked = drivers.requested()
        chosen = drivers.choose(asked)
    except SbxError as err:
        return f"error: {err.message}"
    if asked != "auto":
        return chosen
    if chosen == "overlay":
        return "overlay (auto; keep-id: overlay on shifted copies of the layers)"
    return f"{chosen} (auto)"


def _guarded_cgroups() -> CgroupInfo:
    try:
        return probe_cgroups()
    except OSError:
        return CgroupInfo("v1")


def _os_name(path: str | Path = "/etc/os-release") -> str | None:
    """PRETTY_NAME from os-release(5)."""
    for line in _read_text(path).splitlines():
        key, _, value = line.partition("=")
        if key == "PRETTY_NAME":
            return value.strip().strip('"')
    return None
