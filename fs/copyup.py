"""Copy-up, and the metadata of everything fs/ writes into the upper layer.

Owns: how an entry of a lower layer becomes an entry of the upper one — data, owner,
mode, xattrs and times — and how an owner and a mode are stored there at all (a real
chown, or an override_stat xattr where the id cannot be stored; mapping.py). Imports
nothing from `sandbox`.

As overlayfs.rst ("Copy up") describes it: the copy is built under a temporary name
in the work directory and renamed into place when complete, so the upper layer never
holds a half-copied file; the parent's timestamps are restored afterwards by the
caller, as the kernel does (ovl_copy_up_one), since a copy-up is not a change to the
directory. Metadata is written in the order that keeps it (GNU tar's, and
fuse-overlayfs's copyup): data, chown (which clears setuid bits and file
capabilities), chmod, xattrs, then times. Data keeps its holes (SEEK_DATA/SEEK_HOLE),
so a sparse file larger than the disk can be copied up; a reflink (FICLONE) is tried
first, then copy_file_range(2), then sendfile(2).
"""

from __future__ import annotations

import errno
import itertools
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass

from fs import mapping, syscalls
from fs.layer import Layer
from fs.whiteout import proc_path

_CHUNK = 1 << 24
_BEST_EFFORT = (errno.EPERM, errno.EOPNOTSUPP, errno.EINVAL, errno.EACCES, errno.ENODATA)


@dataclass(slots=True)
class Meta:
    """Owner and mode of an entry as its layer stores them (override applied,
    before any id mapping), and its times."""

    uid: int
    gid: int
    mode: int  # with the type bits
    rdev: int
    atime_ns: int
    mtime_ns: int


class MetaWriter:
    """Stores owners and modes into the upper layer."""

    def __init__(self, upper: Layer, *, squash: bool) -> None:
        self.upper = upper
        self.squash = squash
        self.euid = os.geteuid()
        self.egid = os.getegid()

    def enable_override(self) -> None:
        """From now on store owners in the upper layer's override_stat xattrs: an id
        could not be given with chown (a user namespace without it in its map). The
        root gets one first, which is what turns the layer's xattrs on (mapping.py)."""
        if self.upper.override is not None:
            return
        name = mapping.CONTAINERS_OVERRIDE_XATTR
        st = os.fstat(self.upper.root_fd)
        os.setxattr(proc_path(self.upper.root_fd), name,
                    mapping.format_override(st.st_uid, st.st_gid, st.st_mode))
        self.upper.override = name

    def set(self, dirfd: int, name: bytes, uid: int, gid: int, mode: int, rdev: int = 0,
            *, real: os.stat_result | None = None) -> bool:
        """Give the upper entry NAME in `dirfd` the owner uid:gid and the mode `mode`
        (type bits included); -1 leaves the owner, group or mode as it is. Whether
        anything was written (False: it had them already)."""
        if real is None:
            real = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
        kind = stat.S_IFMT(real.st_mode)
        cur = self._current(dirfd, name, real)
        uid = cur.uid if uid < 0 else uid
        gid = cur.gid if gid < 0 else gid
        if mode < 0:
            mode = cur.mode
        want_kind = stat.S_IFMT(mode) or kind
        same_owner = (uid, gid) == (real.st_uid, real.st_gid)
        if (self.upper.override is None and want_kind == kind
                and self._chown(dirfd, name, uid, gid, real)):
            if kind != stat.S_IFLNK:
                now = real.st_mode if same_owner else \
                    os.stat(name, dir_fd=dirfd, follow_symlinks=False).st_mode  # chown
                    # may have cleared setuid bits
                if stat.S_IMODE(mode) != stat.S_IMODE(now):
                    os.chmod(name, stat.S_IMODE(mode), dir_fd=dirfd)
                    return True
            return not same_owner
        if kind == stat.S_IFLNK:
            return False  # a symlink cannot carry a user.* xattr: its owner stays
        self.enable_override()
        assert self.upper.override is not None
        value = mapping.format_override(uid, gid, want_kind | stat.S_IMODE(mode), rdev)
        os.setxattr(proc_path(dirfd, name), self.upper.override, value, follow_symlinks=False)
        # The real mode only has to let the owner in (the extractor's convention).
        own = 0o700 if kind == stat.S_IFDIR else 0o600
        real_mode = (stat.S_IMODE(mode) & 0o777) | own
        if stat.S_IMODE(real.st_mode) != real_mode:
            os.chmod(name, real_mode, dir_fd=dirfd)
        return True

    def _chown(self, dirfd: int, name: bytes, uid: int, gid: int,
               real: os.stat_result) -> bool:
        """chown; False where the ids cannot be given here (not in this user
        namespace's map) and an override_stat xattr must hold them instead."""
        if (uid, gid) == (real.st_uid, real.st_gid):
            return True
        try:
            os.chown(name, uid, gid, dir_fd=dirfd, follow_symlinks=False)
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.EPERM):
                raise
            # Squashing ignores chown errors, as fuse-overlayfs's do_fchown does.
            return self.squash
        return True

    def _current(self, dirfd: int, name: bytes, real: os.stat_result) -> mapping.Override:
        if self.upper.override is not None:
            ov = mapping.read_override(proc_path(dirfd, name), self.upper.override)
            if ov is not None:
                mode, _ = mapping.apply_override(ov, real.st_mode, real.st_rdev)
                return mapping.Override(ov.uid, ov.gid, mode)
        return mapping.Override(real.st_uid, real.st_gid, real.st_mode)


def copy_xattrs(src: bytes, dst: bytes, keep: Callable[[bytes], bool]) -> None:
    """Copy the xattrs of the file at `src` to `dst` (paths from whiteout.proc_path;
    neither followed). `user.*` ones must copy; the others (security.capability,
    trusted.*) where this process may write them, as the kernel's copy-up does
    (ovl_copy_xattr) and as fuse-overlayfs's copy_xattr skips EINVAL/EOPNOTSUPP."""
    try:
        names = os.listxattr(src, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EPERM):
            return
        raise
    for n in names:
        nb = os.fsencode(n)
        if not keep(nb):
            continue
        try:
            value = os.getxattr(src, nb, follow_symlinks=False)
            os.setxattr(dst, nb, value, follow_symlinks=False)
        except OSError as exc:
            if exc.errno in _BEST_EFFORT and not nb.startswith(b"user."):
                continue
            if exc.errno == errno.ENODATA:
                continue
            raise


def copy_data(sfd: int, dfd: int, size: int) -> None:
    """Copy `size` bytes, keeping holes, then set the length (a trailing hole)."""
    if size == 0:
        return
    if syscalls.ficlone(dfd, sfd):
        return
    off = 0
    try:
        while off < size:
            try:
                start = os.lseek(sfd, off, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # only a hole is left
                    break
                raise
            end = min(os.lseek(sfd, start, os.SEEK_HOLE), size)
            _copy_range(sfd, dfd, start, end)
            off = end
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP):  # no SEEK_DATA here
            raise
        _copy_range(sfd, dfd, 0, size)
    os.ftruncate(dfd, size)


def _copy_range(sfd: int, dfd: int, start: int, end: int) -> None:
    off = start
    while off < end:
        n = min(_CHUNK, end - off)
        try:
            done = os.copy_file_range(sfd, dfd, n, off, off)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP,
                                 errno.EBADF):
                raise
            _copy_plain(sfd, dfd, off, end)
            return
        if done == 0:  # the source is shorter than it said: stop at its end
            return
        off += done


def _copy_plain(sfd: int, dfd: int, off: int, end: int) -> None:
    while off < end:
        data = os.pread(sfd, min(1 << 20, end - off), off)
        if not data:
            return
        view = memoryview(data)
        while view:
            n = os.pwrite(dfd, view, off)
            view = view[n:]
            off += n


class CopyUp:
    """Copies entries into the upper layer through the work directory."""

    def __init__(self, upper: Layer, workfd: int, writer: MetaWriter,
                 keep_xattr: Callable[[bytes], bool]) -> None:
        self.upper = upper
        self.workfd = workfd
        self.writer = writer
        self.keep_xattr = keep_xattr
        self._counter = itertools.count(1)
        self._pid = os.getpid()

    def tmpname(self) -> bytes:
        return b"#sbx-fs-%d-%d" % (self._pid, next(self._counter))

    def entry(self, sdirfd: int, name: bytes, real: os.stat_result, meta: Meta,
              ddirfd: int, dname: bytes, *, data: bool = True) -> os.stat_result:
        """Copy the non-directory NAME of a lower directory (`sdirfd`) to `dname` in an
        upper one; `data=False` for a copy about to be truncated to zero. Returns the
        stat of the new upper file."""
        tmp = self.tmpname()
        wfd = self.workfd
        kind = stat.S_IFMT(real.st_mode)
        made = False
        try:
            if kind == stat.S_IFREG:
                src = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                              dir_fd=sdirfd)
                try:
                    dst = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC,
                                  0o600, dir_fd=wfd)
                    made = True
                    try:
                        if data:
                            copy_data(src, dst, real.st_size)
                    finally:
                        os.close(dst)
                finally:
                    os.close(src)
            elif kind == stat.S_IFLNK:
                os.symlink(os.readlink(name, dir_fd=sdirfd), tmp, dir_fd=wfd)
                made = True
            else:  # fifo, socket, device: mknod of a device fails in a user namespace
                os.mknod(tmp, kind | 0o600, real.st_rdev, dir_fd=wfd)
                made = True
            self._finish(wfd, tmp, meta, proc_path(sdirfd, name))
            os.rename(tmp, dname, src_dir_fd=wfd, dst_dir_fd=ddirfd)
            made = False
        finally:
            if made:
                os.unlink(tmp, dir_fd=wfd)
        return os.stat(dname, dir_fd=ddirfd, follow_symlinks=False)

    def directory(self, sdirfd: int, meta: Meta, ddirfd: int, dname: bytes) -> None:
        """Copy the directory open as `sdirfd` (its metadata, not its entries) to
        `dname` in an upper directory."""
        tmp = self.tmpname()
        wfd = self.workfd
        os.mkdir(tmp, 0o700, dir_fd=wfd)
        try:
            self._finish(wfd, tmp, meta, proc_path(sdirfd))
            os.rename(tmp, dname, src_dir_fd=wfd, dst_dir_fd=ddirfd)
        except BaseException:
            os.rmdir(tmp, dir_fd=wfd)
            raise

    def _finish(self, wfd: int, tmp: bytes, meta: Meta, src: bytes) -> None:
        self.writer.set(wfd, tmp, meta.uid, meta.gid, meta.mode, meta.rdev)
        copy_xattrs(src, proc_path(wfd, tmp), self.keep_xattr)
        os.utime(tmp, ns=(meta.atime_ns, meta.mtime_ns), dir_fd=wfd, follow_symlinks=False)
