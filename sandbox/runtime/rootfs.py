"""The container's filesystem: a declarative plan of mount steps, and its executor.

As bubblewrap's argument parsing only builds a list of `SETUP_*` operations that
`setup_newroot()` runs inside the new namespaces, `plan(spec)` turns a spec into a list
of steps (pure, unit-tested) and `execute(steps, rootfs, sys)` runs them in the child,
through `Syscalls`, then `pivot_root` makes the rootfs `/`.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import NamedTuple

from sandbox.errors import SbxError, SyscallError
from sandbox.runtime import syscalls as sc
from sandbox.runtime.securejoin import secure_join
from sandbox.runtime.spec import Mount, Spec

# mount(8) option words -> (flags to set, flags to clear); runc's parseMountOptions.
_FLAGS: dict[str, tuple[int, int]] = {
    "ro": (sc.MS_RDONLY, 0),
    "rw": (0, sc.MS_RDONLY),
    "nosuid": (sc.MS_NOSUID, 0),
    "suid": (0, sc.MS_NOSUID),
    "nodev": (sc.MS_NODEV, 0),
    "dev": (0, sc.MS_NODEV),
    "noexec": (sc.MS_NOEXEC, 0),
    "exec": (0, sc.MS_NOEXEC),
    "sync": (sc.MS_SYNCHRONOUS, 0),
    "dirsync": (sc.MS_DIRSYNC, 0),
    "noatime": (sc.MS_NOATIME, 0),
    "nodiratime": (sc.MS_NODIRATIME, 0),
    "relatime": (sc.MS_RELATIME, 0),
    "strictatime": (sc.MS_STRICTATIME, 0),
    "bind": (sc.MS_BIND, 0),
    "rbind": (sc.MS_BIND | sc.MS_REC, 0),
}
_PROPAGATION = {
    "private": sc.MS_PRIVATE,
    "rprivate": sc.MS_PRIVATE | sc.MS_REC,
    "slave": sc.MS_SLAVE,
    "rslave": sc.MS_SLAVE | sc.MS_REC,
    "shared": sc.MS_SHARED,
    "rshared": sc.MS_SHARED | sc.MS_REC,
}
# Options sbx understands but the kernel must not see (SELinux relabel, volume "z").
_IGNORED = {"z", "Z", "defaults", "auto"}
# An sbx option on a volume's bind mount: `sbx-copy-up=MARKER`. When MARKER (a file
# beside the volume) can be removed, this is the volume's first mount: the content the
# image has at the mount point is copied into the (empty) volume, and the volume takes
# that directory's owner and mode, or the container user's when the image has none
# there (podman's NeedsCopyUp and NeedsChown, libpod's fixVolumePermissions). Done
# here because only the container's own user namespace sees the image's owners.
COPY_UP_OPTION = "sbx-copy-up="

# statvfs(3) ST_* bits -> MS_* flags. A bind remount in a user namespace must repeat
# the flags a more privileged namespace locked on the mount, or it fails with EPERM
# (mount_namespaces(7), "locked" mounts; runc's getLockedMountFlags).
_LOCKED = (
    (os.ST_NOSUID, sc.MS_NOSUID),
    (os.ST_NODEV, sc.MS_NODEV),
    (os.ST_NOEXEC, sc.MS_NOEXEC),
    (os.ST_NOATIME, sc.MS_NOATIME),
    (os.ST_NODIRATIME, sc.MS_NODIRATIME),
    (os.ST_RELATIME, sc.MS_RELATIME),
)


class MountOptions(NamedTuple):
    flags: int
    propagation: int
    data: str


def parse_options(options: list[str]) -> MountOptions:
    flags = 0
    propagation = 0
    data: list[str] = []
    for opt in options:
        if opt in _FLAGS:
            set_, clear = _FLAGS[opt]
            flags = (flags | set_) & ~clear
        elif opt in _PROPAGATION:
            propagation |= _PROPAGATION[opt]
        elif opt in _IGNORED:
            continue
        else:
            data.append(opt)
    return MountOptions(flags, propagation, ",".join(data))


class Step(NamedTuple):
    """One thing to do to the new root; `dest` is a path inside the container."""

    kind: str  # mount | bind | symlink | mask | readonly | mkdir
    dest: str
    source: str | None = None
    fstype: str | None = None
    options: tuple[str, ...] = ()


DEV_SYMLINKS = (
    ("/dev/fd", "/proc/self/fd"),
    ("/dev/stdin", "/proc/self/fd/0"),
    ("/dev/stdout", "/proc/self/fd/1"),
    ("/dev/stderr", "/proc/self/fd/2"),
    ("/dev/core", "/proc/kcore"),
    ("/dev/ptmx", "pts/ptmx"),
)


def plan(spec: Spec) -> list[Step]:
    """The steps that build the container's tree, in order. Pure."""
    steps: list[Step] = []
    for m in spec.mounts:
        steps.append(_mount_step(m))
        if m.destination == "/dev" and m.type == "tmpfs":
            # Symlinks come right after /dev so later binds (/dev/pts) land on them.
            steps.extend(Step("symlink", d, source=t) for d, t in DEV_SYMLINKS)
    if spec.process.cwd not in ("", "/"):
        steps.append(Step("mkdir", spec.process.cwd))
    steps.extend(Step("mask", p) for p in spec.linux.masked_paths)
    steps.extend(Step("readonly", p) for p in spec.linux.readonly_paths)
    return steps


def _mount_step(m: Mount) -> Step:
    if m.is_bind:
        return Step("bind", m.destination, source=m.source, options=tuple(m.options))
    return Step("mount", m.destination, source=m.source or m.type, fstype=m.type,
                options=tuple(m.options))


class Executor:
    """Runs a plan under `rootfs` in the container's mount namespace."""

    def __init__(self, rootfs: str, sys: sc.Syscalls, owner: tuple[int, int] = (0, 0)
                 ) -> None:
        self.rootfs = os.path.abspath(rootfs)
        self.sys = sys
        self.owner = owner  # the container process's uid and gid (for new volumes)
        self.cgroup_path = ""  # the container's own cgroup on the host, when it has one

    # -- helpers ---------------------------------------------------------------------
    def target(self, dest: str) -> str:
        return secure_join(self.rootfs, dest)

    def _make_mountpoint(self, path: str, is_dir: bool) -> None:
        if os.path.lexists(path):
            return
        try:
            if is_dir:
                os.makedirs(path, mode=0o755, exist_ok=True)
            else:
                os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644))
        except OSError as exc:
            hint = None
            if exc.errno == errno.EROFS:
                hint = "the rootfs is read-only: create the mount point in the image first"
            raise SyscallError("create mount point", exc.errno or errno.EIO, path, hint) from None

    def _locked_flags(self, path: str) -> int:
        try:
            f_flag = os.statvfs(path).f_flag
        except OSError:
            return 0
        return sum(ms for st, ms in _LOCKED if f_flag & st)

    def remount_readonly(self, path: str, extra: int = 0) -> None:
        flags = sc.MS_BIND | sc.MS_REMOUNT | sc.MS_RDONLY | extra | self._locked_flags(path)
        self.sys.mount(None, path, None, flags, None)

    def _submounts(self, path: str) -> list[str]:
        """Mount points at or below `path`, from /proc/self/mountinfo."""
        found = []
        try:
            with open("/proc/self/mountinfo") as f:
                for line in f:
                    point = line.split()[4].replace("\\040", " ")
                    if point == path or point.startswith(path.rstrip("/") + "/"):
                        found.append(point)
        except OSError:
            return [path]
        return found

    # -- steps -----------------------------------------------------------------------
    def prepare_root(self, root_mount: Mount | None = None, mount_cwd: str | None = None
                     ) -> None:
        # Slave, not private: host unmounts still reach us, ours never reach the host.
        self.sys.mount(None, "/", None, sc.MS_REC | sc.MS_SLAVE, None)
        if root_mount is not None:
            # The image's layers, mounted here in the container's own namespaces.
            opts = parse_options(root_mount.options)
            if mount_cwd:
                os.chdir(mount_cwd)
            self.sys.mount(root_mount.source, self.rootfs, root_mount.type, opts.flags,
                           opts.data or None)
            return  # already a mount point
        # pivot_root needs the new root to be a mount point.
        self.sys.mount(self.rootfs, self.rootfs, None, sc.MS_BIND | sc.MS_REC, None)

    def run(self, step: Step) -> None:
        getattr(self, "do_" + step.kind)(step)

    def do_mount(self, step: Step) -> None:
        path = self.target(step.dest)
        self._make_mountpoint(path, True)
        opts = parse_options(list(step.options))
        try:
            self.sys.mount(step.source, path, step.fstype, opts.flags, opts.data or None)
        except SyscallError as err:
            if not self._fallback(step, path, opts, err):
                raise
        if opts.propagation:
            self.sys.mount(None, path, None, opts.propagation, None)

    def _fallback(self, step: Step, path: str, opts: MountOptions, err: SyscallError) -> bool:
        """Rootless fallbacks, as runc and crun do them. True when handled."""
        if step.fstype == "sysfs" and err.errno in (errno.EPERM, errno.EACCES):
            # sysfs can only be mounted by the owner of the network namespace; with the
            # host's network, bind the host's /sys read-only instead (runc rootless).
            self.sys.mount("/sys", path, None, sc.MS_BIND | sc.MS_REC, None)
            for point in self._submounts(path):
                self.remount_readonly(point)
            return True
        if step.fstype == "devpts" and err.errno == errno.EINVAL and "gid=" in opts.data:
            # gid 5 (tty) is not mapped in a single-id user namespace.
            data = ",".join(o for o in opts.data.split(",") if not o.startswith("gid="))
            self.sys.mount(step.source, path, step.fstype, opts.flags, data)
            return True
        if step.fstype == "cgroup2":
            # With the host's /sys bound in (above), its cgroup2 mount is already at
            # /sys/fs/cgroup, and the kernel refuses the same superblock on top of
            # its own root (EBUSY). runc's rootless fallback: bind the container's
            # own cgroup directory there instead. Without one (no limits) or on any
            # other error, /sys's view stays as it is.
            if self.cgroup_path and os.path.isdir(self.cgroup_path):
                self.sys.mount(self.cgroup_path, path, None, sc.MS_BIND, None)
                self.remount_readonly(path)
            return True
        if step.fstype == "mqueue" and err.errno in (errno.EPERM, errno.EACCES):
            if os.path.isdir("/dev/mqueue"):
                self.sys.mount("/dev/mqueue", path, None, sc.MS_BIND | sc.MS_REC, None)
            return True
        return False

    def do_bind(self, step: Step) -> None:
        source = step.source or ""
        for opt in step.options:
            if opt.startswith(COPY_UP_OPTION):
                self.copy_up(source, step.dest, opt[len(COPY_UP_OPTION):])
        try:
            st = os.stat(source)
        except OSError as exc:
            raise SyscallError("bind mount source", exc.errno or errno.ENOENT, source,
                               "the host path must exist") from None
        path = self.target(step.dest)
        self._make_mountpoint(path, stat.S_ISDIR(st.st_mode))
        opts = parse_options(list(step.options))
        recursive = "bind" not in step.options  # rbind unless plain "bind" is asked for
        flags = sc.MS_BIND | (sc.MS_REC if recursive else 0)
        self.sys.mount(source, path, None, flags, None)
        extra = opts.flags & (sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)
        if opts.flags & sc.MS_RDONLY:
            for point in self._submounts(path) if recursive else [path]:
                self.remount_readonly(point, extra)
        elif extra:
            self.sys.mount(None, path, None,
                           sc.MS_BIND | sc.MS_REMOUNT | extra | self._locked_flags(path), None)
        if opts.propagation:
            self.sys.mount(None, path, None, opts.propagation, None)

    def copy_up(self, volume: str, dest: str, marker: str) -> None:
        """A volume's first mount: fill it from the image (see COPY_UP_OPTION)."""
        try:
            os.unlink(marker)
        except FileNotFoundError:
            return  # mounted before: its content is the user's now
        except OSError as exc:
            raise SyscallError("remove the volume's copy-up marker", exc.errno or errno.EIO,
                               marker) from None
        target = self.target(dest)
        try:
            st = os.lstat(target)
            if not stat.S_ISDIR(st.st_mode):
                st = None  # a file there: the mount fails later with a clear error
        except (FileNotFoundError, NotADirectoryError):
            st = None
        try:
            if st is None:
                os.lchown(volume, *self.owner)
                return
            if os.listdir(target) and not os.listdir(volume):
                # The same walk as the vfs driver's copy; imported only when there is
                # something to copy (shutil costs ~5 ms, on `sbx run`'s hot path).
                from sandbox.storage import vfs

                vfs.apply_layer(target, volume)
            os.lchown(volume, st.st_uid, st.st_gid)
            os.chmod(volume, stat.S_IMODE(st.st_mode))
        except OSError as exc:
            raise SyscallError(f"copy the image's {dest} into its new volume",
                               exc.errno or errno.EIO, exc.filename or volume) from None

    def do_symlink(self, step: Step) -> None:
        path = self.target(step.dest)
        try:
            os.symlink(step.source or "", path)
        except FileExistsError:
            pass
        except OSError as exc:
            raise SyscallError("symlink", exc.errno or errno.EIO, path) from None

    def do_mkdir(self, step: Step) -> None:
        path = self.target(step.dest)
        if os.path.isdir(path):
            return
        try:
            os.makedirs(path, mode=0o755, exist_ok=True)
        except OSError as exc:
            raise SyscallError("create working directory", exc.errno or errno.EIO,
                               step.dest) from None

    def do_mask(self, step: Step) -> None:
        path = self.target(step.dest)
        try:
            st = os.lstat(path)
        except OSError:
            return  # nothing to hide
        if stat.S_ISDIR(st.st_mode):
            self.sys.mount("tmpfs", path, "tmpfs", sc.MS_RDONLY, "size=0k")
        else:
            self.sys.mount("/dev/null", path, None, sc.MS_BIND, None)

    def do_readonly(self, step: Step) -> None:
        path = self.target(step.dest)
        if not os.path.exists(path):
            return
        self.sys.mount(path, path, None, sc.MS_BIND | sc.MS_REC, None)
        self.remount_readonly(path, sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)

    def finish(self, readonly_root: bool) -> None:
        if readonly_root:
            self.remount_readonly(self.rootfs)
        self.pivot_root()

    def pivot_root(self) -> None:
        # runc's trick (also in crun): pivot_root(".", ".") stacks the old root on top
        # of the new one; make it slave so the unmount does not propagate to the host,
        # then detach it. No put_old directory is needed inside the rootfs.
        try:
            os.chdir(self.rootfs)
        except OSError as exc:
            raise SyscallError("chdir", exc.errno or errno.EIO, self.rootfs) from None
        self.sys.pivot_root(".", ".")
        self.sys.mount(None, ".", None, sc.MS_SLAVE | sc.MS_REC, None)
        self.sys.umount2(".", sc.MNT_DETACH)
        os.chdir("/")


def setup(spec: Spec, sys: sc.Syscalls) -> None:
    """Build the container's tree from `spec` and pivot into it."""
    if not os.path.isdir(spec.root.path):
        raise SbxError(f"rootfs {spec.root.path} is not a directory")
    ex = Executor(spec.root.path, sys, (spec.process.user.uid, spec.process.user.gid))
    ex.cgroup_path = spec.linux.cgroup_path
    ex.prepare_root(spec.root.mount, spec.root.mount_cwd)
    for step in plan(spec):
        ex.run(step)
    ex.finish(spec.root.readonly)
