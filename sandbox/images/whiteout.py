"""Whiteouts and opaque directories: how a layer records deletions, in each format.

A layer tar records deletions as the OCI image-spec's layer.md ("Whiteouts") says,
a convention it took from aufs:
- a file `.wh.NAME` means NAME was deleted from the layers below;
- a file `.wh..wh..opq` in a directory makes it opaque: everything the layers below
  had in it is hidden, only this layer's entries remain;
- other names beginning `.wh..wh.` are reserved (aufs metadata such as
  `.wh..wh.plnk/`) and are not part of the filesystem.
A naive tar of an overlayfs upper directory carries the kernel's own form instead,
a 0/0 character device; the extractor treats that like `.wh.NAME`.

On disk, an unpacked layer keeps them in the form its reader understands
(`WhiteoutFormat`):

"aufs"   the tar's own form, kept as-is: `.wh.NAME` and `.wh..wh..opq` as empty
         regular files. fuse-overlayfs reads exactly this: its `get_whiteout_name()`
         treats a `.wh.`-prefixed name (or a 0/0 char device) as a whiteout, and its
         `is_directory_opaque()` falls back to looking for `.wh..wh..opq` when no
         opaque xattr is set (containers/fuse-overlayfs, main.c).
"xattr"  the kernel overlayfs "xwhiteout" form, usable by an unprivileged user who
         cannot mknod the 0/0 char device (Linux >= 6.7, mounted with `userxattr`):
         a zero-size regular file NAME with the xattr `user.overlay.whiteout`, in a
         directory whose `user.overlay.opaque` xattr is "x"; an opaque directory has
         `user.overlay.opaque` = "y". Documentation/filesystems/overlayfs.rst,
         "whiteouts and opaque directories" and "Nesting overlayfs mounts" (with
         `userxattr` the `trusted.overlay.` prefix becomes `user.overlay.`). An early
         6.7-rc draft marked the parent with `overlay.whiteouts`; the kernel that
         shipped uses opaque="x" instead, and without it on the parent a whiteout is
         still listed by readdir (checked on 6.18 by tests/integration).

"chardev" the kernel overlayfs form every overlay reader knows (Linux >= 5.8 lets an
         unprivileged user mknod the 0/0 char device; the unpacking runs inside the
         user's namespace): a whiteout is a 0/0 character device NAME; an opaque
         directory has `user.overlay.opaque` = "y" (`userxattr`, Linux >= 5.11).
         fuse-overlayfs reads 0/0 devices too. This is what sbx's overlay driver uses.

The flattened-rootfs mode does not record whiteouts at all: it deletes (remove_at,
empty_dir_except), as docker's vfs driver applies a layer onto a copy of its parent.

Everything here works on directory descriptors, never on joined path strings, so a
symlink in the tree is never followed (see extract.py on CVE-2018-15664). Stdlib
only; must not import the runtime, the registry or the store.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

WhiteoutFormat = Literal["aufs", "xattr", "chardev"]
WHITEOUT_FORMATS: tuple[WhiteoutFormat, ...] = ("aufs", "xattr", "chardev")

WHITEOUT_PREFIX = ".wh."
META_PREFIX = ".wh..wh."
OPAQUE_MARKER = ".wh..wh..opq"

# overlayfs.rst: trusted.overlay.* normally; user.overlay.* under `userxattr`, the
# only namespace an unprivileged user may write.
XATTR_WHITEOUT = "user.overlay.whiteout"
XATTR_OPAQUE = "user.overlay.opaque"
OPAQUE_YES = b"y"
OPAQUE_HAS_XWHITEOUTS = b"x"

# Xattr namespaces that steer a union filesystem. A layer must never carry them in
# from its tar: overlayfs.rst warns that crafted `redirect` + `metacopy` xattrs in an
# untrusted layer can expose files of another layer, and a forged whiteout, opaque
# or override_stat xattr would hide files or fake their owner.
RESERVED_XATTR_PREFIXES = (
    "trusted.overlay.",
    "user.overlay.",
    "user.fuseoverlayfs.",
    "user.containers.",
)

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_PATH_DIR = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class Marker:
    """What a whiteout-convention name means: `kind` "whiteout" deletes `target` (a
    sibling name), "opaque" makes the directory opaque, "meta" is reserved aufs
    metadata to be skipped."""

    kind: Literal["whiteout", "opaque", "meta"]
    target: str = ""


class BadWhiteout(ValueError):
    """A name that uses the whiteout prefix but deletes nothing sensible."""


def classify(name: str) -> Marker | None:
    """The meaning of one path component: None for an ordinary name.

    Raises BadWhiteout for a bare `.wh.` and for whiteouts of "." or "..", which
    would delete the directory itself or its parent (above the layer root at top
    level).
    """
    if not name.startswith(WHITEOUT_PREFIX):
        return None
    if name == OPAQUE_MARKER:
        return Marker("opaque")
    if name.startswith(META_PREFIX):
        return Marker("meta")
    target = name[len(WHITEOUT_PREFIX) :]
    if target in ("", ".", ".."):
        raise BadWhiteout(f"whiteout {name!r} names no entry")
    return Marker("whiteout", target)


def is_reserved_xattr(name: str) -> bool:
    return name.startswith(RESERVED_XATTR_PREFIXES)


def check_format(fmt: str) -> WhiteoutFormat:
    if fmt not in WHITEOUT_FORMATS:
        raise ValueError(f"unknown whiteout format {fmt!r}; expected one of {WHITEOUT_FORMATS}")
    return fmt  # type: ignore[return-value]


def _reopen_dir(path_fd: int) -> int:
    """A readable descriptor for the directory behind an O_PATH descriptor:
    fsetxattr, fdopendir and fchmod refuse O_PATH descriptors."""
    return os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=path_fd)


def _create_empty(parent_fd: int, name: str) -> int:
    """Create an empty regular file, replacing a non-directory already at `name`."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(name, flags, 0o600, dir_fd=parent_fd)
    except FileExistsError:
        remove_at(parent_fd, name)
        return os.open(name, flags, 0o600, dir_fd=parent_fd)


def _mark_has_xwhiteouts(parent_fd: int) -> None:
    fd = _reopen_dir(parent_fd)
    try:
        try:
            current = os.getxattr(fd, XATTR_OPAQUE)
        except OSError as exc:
            if exc.errno != errno.ENODATA:
                raise
            current = b""
        # A fully opaque directory ("y") already hides everything below; "x" would
        # weaken it to "merge, but check for xwhiteouts".
        if current != OPAQUE_YES:
            os.setxattr(fd, XATTR_OPAQUE, OPAQUE_HAS_XWHITEOUTS)
    finally:
        os.close(fd)


def write_whiteout(parent_fd: int, name: str, fmt: WhiteoutFormat) -> None:
    """Record in the directory `parent_fd` that `name` is deleted from lower layers."""
    if fmt == "aufs":
        os.close(_create_empty(parent_fd, WHITEOUT_PREFIX + name))
        return
    if fmt == "chardev":
        # mknod(2) of a 0/0 char device needs no CAP_MKNOD since Linux 5.8
        # ("vfs: allow unprivileged whiteout creation").
        dev = stat.S_IFCHR | 0o000
        try:
            os.mknod(name, dev, os.makedev(0, 0), dir_fd=parent_fd)
        except FileExistsError:
            remove_at(parent_fd, name)
            os.mknod(name, dev, os.makedev(0, 0), dir_fd=parent_fd)
        return
    fd = _create_empty(parent_fd, name)
    try:
        os.setxattr(fd, XATTR_WHITEOUT, b"")
    finally:
        os.close(fd)
    _mark_has_xwhiteouts(parent_fd)


def remove_whiteout(parent_fd: int, name: str, fmt: WhiteoutFormat) -> None:
    """Drop the whiteout for `name`, when this layer puts an entry back at `name`.

    The entry hides the lower one by itself (a directory must then be made opaque by
    the caller). For "xattr" the marker *is* `name`, which the new entry replaces."""
    if fmt == "aufs":
        with contextlib.suppress(FileNotFoundError):
            os.unlink(WHITEOUT_PREFIX + name, dir_fd=parent_fd)
    else:
        remove_at(parent_fd, name)


def write_opaque(dir_fd: int, fmt: WhiteoutFormat) -> None:
    """Make the directory `dir_fd` (an O_PATH descriptor is fine) opaque."""
    if fmt == "aufs":
        os.close(_create_empty(dir_fd, OPAQUE_MARKER))
        return
    fd = _reopen_dir(dir_fd)
    try:
        os.setxattr(fd, XATTR_OPAQUE, OPAQUE_YES)
    finally:
        os.close(fd)


def _open_dir_for_removal(parent_fd: int, name: str) -> int:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except PermissionError:
        pass
    # A directory of ours without read permission (mode 0o000 in an image): make it
    # ours to empty. chmod through /proc/self/fd of an O_PATH|O_NOFOLLOW descriptor
    # acts on that very inode, so a swapped-in symlink can't redirect it.
    path_fd = os.open(name, _PATH_DIR, dir_fd=parent_fd)
    try:
        st = os.fstat(path_fd)
        os.chmod(f"/proc/self/fd/{path_fd}", stat.S_IMODE(st.st_mode) | 0o700)
    finally:
        os.close(path_fd)
    return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)


def _make_writable(fd: int) -> None:
    st = os.fstat(fd)
    if st.st_uid == os.geteuid() and (st.st_mode & 0o700) != 0o700:
        os.fchmod(fd, stat.S_IMODE(st.st_mode) | 0o700)


def remove_at(parent_fd: int, name: str) -> bool:
    """Remove `name` from the directory `parent_fd`, with everything under it.

    Never follows a symlink (a link is unlinked, not its target), iterative so a
    hostile 2,000-level tree can't exhaust Python's recursion limit, and it gives its
    own directories u+rwx first, so an image's 0o555 directories can be removed.
    Returns False when there was nothing at `name`.
    """
    try:
        st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=parent_fd)
        return True
    # Each frame: (parent descriptor, name in it, own descriptor, children left).
    stack: list[tuple[int, str, int, list[str]]] = []
    try:
        fd = _open_dir_for_removal(parent_fd, name)
        stack.append((parent_fd, name, fd, []))
        _make_writable(fd)
        stack[-1][3].extend(os.listdir(fd))
        while stack:
            pfd, nm, fd, pending = stack[-1]
            if not pending:
                stack.pop()
                os.close(fd)
                os.rmdir(nm, dir_fd=pfd)
                continue
            child = pending.pop()
            try:
                cst = os.stat(child, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(cst.st_mode):
                cfd = _open_dir_for_removal(fd, child)
                stack.append((fd, child, cfd, []))
                _make_writable(cfd)
                stack[-1][3].extend(os.listdir(cfd))
            else:
                os.unlink(child, dir_fd=fd)
    finally:
        for _, _, fd, _ in stack:
            os.close(fd)
    return True


def empty_dir_except(dir_fd: int, rel: str, keep: Callable[[str], bool]) -> int:
    """Apply an opaque marker to a flattened tree: delete every entry under the
    directory `dir_fd` (layer path `rel`, "" for the root) whose layer path `keep`
    rejects, descending into kept directories. Returns how many entries went.

    `keep` says which paths the current layer itself unpacked: the image-spec's
    whiteouts only hide what lower layers had ("Files that are present in the same
    layer as a whiteout file can only be hidden by whiteout files in subsequent
    layers"), which is how docker's pkg/archive applies `.wh..wh..opq` too.
    """
    removed = 0
    todo: list[tuple[int, str]] = [(_reopen_dir(dir_fd), rel)]
    try:
        while todo:
            fd, prefix = todo.pop()
            try:
                for name in os.listdir(fd):
                    path = f"{prefix}/{name}" if prefix else name
                    if not keep(path):
                        remove_at(fd, name)
                        removed += 1
                        continue
                    st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                    if stat.S_ISDIR(st.st_mode):
                        todo.append((os.open(name, _DIR_FLAGS, dir_fd=fd), path))
            finally:
                os.close(fd)
    finally:
        for fd, _ in todo:
            os.close(fd)
    return removed
