"""The vfs driver: a full copy of the image per container, as podman's vfs driver.

Slow to create and heavy on disk, but it needs nothing from the kernel beyond a
user namespace: it is the fallback where neither kernel overlayfs nor FUSE works
in a user namespace. The layers are applied lowest first onto an empty directory;
a 0/0 character device (or a `.wh.` file) deletes what the layers below had, and
an opaque directory (`user.overlay.opaque` = "y", or `.wh..wh..opq`) empties it.
Runs inside the user's namespace (the caller's runner), so owners copy as they are.

The walk never follows a symlink: each directory it descends into on the target
side was made or checked by the walk itself, and an entry whose type changes is
removed before the new one is written.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from collections.abc import Sequence

OPAQUE_XATTR = "user.overlay.opaque"
_SKIP_XATTRS = ("user.overlay.", "trusted.overlay.")


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _remove(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def _copy_meta(src: str, dst: str, st: os.stat_result) -> None:
    with contextlib.suppress(OSError):
        for name in os.listxattr(src, follow_symlinks=False):
            if name.startswith(_SKIP_XATTRS):
                continue
            os.setxattr(dst, name, os.getxattr(src, name, follow_symlinks=False),
                        follow_symlinks=False)
    os.chown(dst, st.st_uid, st.st_gid, follow_symlinks=False)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(dst, stat.S_IMODE(st.st_mode))
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def _opaque(path: str, names: list[str]) -> bool:
    if ".wh..wh..opq" in names:
        return True
    try:
        return os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


def apply_layer(layer: str, dest: str) -> None:
    """Apply one unpacked layer directory onto `dest`."""
    links: dict[tuple[int, int], str] = {}  # hard links within the layer stay linked
    _apply_dir(layer, dest, links)


def _apply_dir(src_dir: str, dst_dir: str, links: dict[tuple[int, int], str]) -> None:
    names = sorted(os.listdir(src_dir))
    if _opaque(src_dir, names):
        for name in os.listdir(dst_dir):
            _remove(os.path.join(dst_dir, name))
    dirs: list[tuple[str, str, os.stat_result]] = []
    for name in names:
        if name == ".wh..wh..opq":
            continue
        src = os.path.join(src_dir, name)
        st = os.lstat(src)
        if name.startswith(".wh."):
            _remove(os.path.join(dst_dir, name[4:]))
            continue
        dst = os.path.join(dst_dir, name)
        if _is_whiteout(st):
            _remove(dst)
            continue
        if stat.S_ISDIR(st.st_mode):
            try:
                existing = os.lstat(dst)
                if not stat.S_ISDIR(existing.st_mode):
                    _remove(dst)
                    os.mkdir(dst, 0o700)
            except FileNotFoundError:
                os.mkdir(dst, 0o700)
            dirs.append((src, dst, st))
            continue
        _remove(dst)
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in links:
            os.link(links[key], dst)
            continue
        if stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(src), dst)
        elif stat.S_ISREG(st.st_mode):
            shutil.copyfile(src, dst, follow_symlinks=False)
        elif stat.S_ISFIFO(st.st_mode):
            os.mkfifo(dst, 0o600)
        else:
            try:
                os.mknod(dst, st.st_mode, st.st_rdev)
            except OSError as exc:
                if exc.errno != errno.EPERM:
                    raise
                continue  # device nodes cannot be made rootless: skipped, as in extract
        _copy_meta(src, dst, st)
        if st.st_nlink > 1:
            links[key] = dst
    for src, dst, st in dirs:
        _apply_dir(src, dst, links)
        _copy_meta(src, dst, st)  # after the contents: their writes change its mtime


def populate(layer_dirs: Sequence[str], dest: str) -> None:
    """Build a container's root filesystem in `dest` from its image's layers."""
    os.makedirs(dest, mode=0o755, exist_ok=True)
    for layer in layer_dirs:
        apply_layer(layer, dest)
