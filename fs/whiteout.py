"""Whiteouts and opaque directories: reading every form that image tools and the
kernel write, and writing the form this host permits.

Owns: the names, device numbers and xattrs that record a deletion in a layer. Works on
directory descriptors and names, never on joined paths, and never follows a symlink.
Imports nothing from `sandbox`.

Read (Documentation/filesystems/overlayfs.rst, "whiteouts and opaque directories";
OCI image-spec layer.md, "Whiteouts"; fuse-overlayfs main.c, get_whiteout_name and
is_directory_opaque):
- a character device 0/0 named NAME;
- a file `.wh.NAME` (the aufs/OCI form, as podman unpacks layers for a mount program);
- an opaque directory: the xattr `trusted.overlay.opaque`, `user.overlay.opaque` (the
  kernel's `userxattr` form) or `user.fuseoverlayfs.opaque` equal to "y", or a file
  `.wh..wh..opq` in it;
- read-only: the Linux 6.7 "xwhiteout", a zero-size regular file with the xattr
  `user.overlay.whiteout` (or `trusted.`) in a directory whose opaque xattr is "x".
Names beginning `.wh..wh.` are aufs metadata and never part of the tree.

Written: a 0/0 character device and `user.overlay.opaque=y`, what the kernel's own
overlayfs writes with `userxattr`, when mknod of the whiteout device is permitted (root,
or a user namespace on Linux >= 5.8); otherwise `.wh.NAME` and `.wh..wh..opq` files,
as fuse-overlayfs falls back to (create_whiteout, set_fd_opaque).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from typing import NamedTuple

WH_PREFIX = b".wh."
META_PREFIX = b".wh..wh."
OPAQUE_MARKER = b".wh..wh..opq"

OPAQUE_XATTRS = (b"trusted.overlay.opaque", b"user.overlay.opaque", b"user.fuseoverlayfs.opaque")
WHITEOUT_XATTRS = (b"trusted.overlay.whiteout", b"user.overlay.whiteout")
USER_OPAQUE_XATTR = b"user.overlay.opaque"
TRUSTED_OPAQUE_XATTR = b"trusted.overlay.opaque"

_WH_DEV = os.makedev(0, 0)


def proc_path(dirfd: int, name: bytes | None = None) -> bytes:
    """A path that reaches `name` in the directory open as `dirfd` (an O_PATH fd
    will do) through /proc/self/fd, for the calls that take no directory fd (the
    xattr calls, opendir). The magic link resolves to the directory itself, never
    through a symlink; with follow_symlinks=False, `name` is not followed either.
    Without a name the path ends in "." (the directory itself): a bare magic link
    with follow_symlinks=False would name the link, not the directory."""
    if name is None:
        return b"/proc/self/fd/%d/." % dirfd
    return b"/proc/self/fd/%d/%s" % (dirfd, name)


def fd_path(fd: int) -> bytes:
    """/proc/self/fd/N, to reopen an open file (followed, never with
    follow_symlinks=False)."""
    return b"/proc/self/fd/%d" % fd


def is_whiteout_name(name: bytes) -> bool:
    """`.wh.*`: a whiteout, the opaque marker or aufs metadata; never shown."""
    return name.startswith(WH_PREFIX)


def is_whiteout_dev(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == _WH_DEV


def exists(dirfd: int, name: bytes) -> bool:
    try:
        os.stat(name, dir_fd=dirfd, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG):
            return False
        raise
    return True


def has_wh_file(dirfd: int, name: bytes) -> bool:
    """Whether `.wh.NAME` exists in the directory."""
    if len(name) > 251:  # `.wh.` + NAME would exceed NAME_MAX: cannot exist
        return False
    return exists(dirfd, WH_PREFIX + name)


class DirMarks(NamedTuple):
    opaque: bool
    xwhiteouts: bool  # opaque xattr "x": may hold xattr whiteouts


def _listxattr(path: bytes) -> list[bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.ENODATA):
            return []
        raise
    return [os.fsencode(n) for n in names]


def dir_marks(dirfd: int) -> DirMarks:
    """Whether the directory open as `dirfd` is opaque, and whether it may hold
    xattr whiteouts."""
    path = proc_path(dirfd)
    names = _listxattr(path)
    opaque = xwh = False
    for attr in OPAQUE_XATTRS:
        if attr in names:
            try:
                value = os.getxattr(path, attr)
            except OSError as exc:
                if exc.errno in (errno.ENODATA, errno.EOPNOTSUPP, errno.EPERM):
                    continue
                raise
            if value[:1] == b"y":
                opaque = True
            elif value[:1] == b"x":
                xwh = True
    if not opaque:
        opaque = exists(dirfd, OPAQUE_MARKER)
    return DirMarks(opaque, xwh)


def is_xattr_whiteout(dirfd: int, name: bytes, st: os.stat_result) -> bool:
    """The Linux 6.7 xwhiteout: an empty regular file with an overlay whiteout xattr."""
    if not stat.S_ISREG(st.st_mode) or st.st_size != 0:
        return False
    names = _listxattr(proc_path(dirfd, name))
    return any(attr in names for attr in WHITEOUT_XATTRS)


def can_mknod_whiteout(workfd: int, probe_name: bytes) -> bool:
    """Whether this process may create the 0/0 whiteout device (fuse-overlayfs's
    check_can_mknod, done once in the work directory at mount)."""
    if os.environ.get("FUSE_OVERLAYFS_DISABLE_OVL_WHITEOUT"):
        return False
    try:
        os.mknod(probe_name, stat.S_IFCHR | 0o600, _WH_DEV, dir_fd=workfd)
    except OSError as exc:
        if exc.errno in (errno.EPERM, errno.EACCES, errno.EOPNOTSUPP):
            return False
        raise
    os.unlink(probe_name, dir_fd=workfd)
    return True


class WhiteoutWriter:
    """Writes whiteouts and opaque marks into the upper layer, in one form."""

    __slots__ = ("chardev",)

    def __init__(self, chardev: bool) -> None:
        self.chardev = chardev

    def make(self, dirfd: int, name: bytes) -> None:
        """A whiteout for NAME, which must not exist in this directory."""
        if self.chardev:
            try:
                os.mknod(name, stat.S_IFCHR, _WH_DEV, dir_fd=dirfd)
                return
            except OSError as exc:
                if exc.errno == errno.EEXIST:
                    st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
                    if is_whiteout_dev(st):
                        return
                    raise
                if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP):
                    raise
                self.chardev = False  # as fuse-overlayfs: do not try mknod again
        fd = os.open(WH_PREFIX + name, os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600, dir_fd=dirfd)
        os.close(fd)

    def make_in(self, dirfd: int, name: bytes) -> bool:
        """Create a 0/0 device NAME (for an atomic rename over a target); False where
        only the `.wh.` form is possible."""
        if not self.chardev:
            return False
        try:
            os.mknod(name, stat.S_IFCHR, _WH_DEV, dir_fd=dirfd)
        except OSError as exc:
            if exc.errno in (errno.EPERM, errno.EOPNOTSUPP):
                self.chardev = False
                return False
            raise
        return True

    @staticmethod
    def find(dirfd: int, name: bytes) -> str | None:
        """The whiteout recorded for NAME in this upper directory: "dev", "file" (a
        `.wh.NAME`) or None."""
        try:
            st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ENOTDIR):
                raise
        else:
            return "dev" if is_whiteout_dev(st) else None
        return "file" if has_wh_file(dirfd, name) else None

    @staticmethod
    def remove_file_form(dirfd: int, name: bytes) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(WH_PREFIX + name, dir_fd=dirfd)

    def set_opaque(self, dirfd: int) -> None:
        """Make the directory open as `dirfd` opaque. The xattr where this host can
        write one (trusted. as real root, else user.), the marker file otherwise."""
        path = proc_path(dirfd)
        for attr in (TRUSTED_OPAQUE_XATTR, USER_OPAQUE_XATTR):
            try:
                os.setxattr(path, attr, b"y")
            except OSError as exc:
                if exc.errno in (errno.EPERM, errno.EOPNOTSUPP, errno.EACCES):
                    continue
                raise
            if not self.chardev:
                break  # also drop the marker below: readers of the aufs form need it
            return
        fd = os.open(OPAQUE_MARKER, os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600, dir_fd=dirfd)
        os.close(fd)
