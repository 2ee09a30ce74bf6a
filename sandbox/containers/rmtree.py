"""Remove a container's directory, its writable layer included.

Most layers can go as the user: overlayfs makes upper/ and work/ as the container's
root, which is the user on the host, and its work/work directory with mode 000 (the
user owns it, so a chmod makes it listable). Files the container made as another
user (uid 1000 inside is a subordinate id outside) can only be removed as root of
the user's namespace, as podman does with `podman unshare rm`; `remove_tree` tries
the fast way first and the caller falls back to the namespace on PermissionError
(lifecycle.remove_tree). Symlinks are never followed: everything is done relative
to directory descriptors opened with O_NOFOLLOW. Stdlib only.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _open_dir(parent: int, name: str) -> int:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent)
    except PermissionError:
        # A directory we own but may not read (overlayfs's work/work is mode 000):
        # chmod it through an O_PATH descriptor, which follows no link.
        path_fd = os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                          dir_fd=parent)
        try:
            if os.fstat(path_fd).st_uid != os.geteuid():
                raise
            os.chmod(f"/proc/self/fd/{path_fd}", 0o700)
        finally:
            os.close(path_fd)
        return os.open(name, _DIR_FLAGS, dir_fd=parent)


def _remove_at(parent: int, name: str, tries: int = 3) -> None:
    try:
        st = os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=parent)
        return
    try:
        fd = _open_dir(parent, name)
    except FileNotFoundError:
        return
    try:
        try:
            entries = [e.name for e in os.scandir(fd)]
        except PermissionError:
            if os.fstat(fd).st_uid != os.geteuid():
                raise
            os.chmod(fd, 0o700)
            entries = [e.name for e in os.scandir(fd)]
        for entry in entries:
            try:
                _remove_at(fd, entry)
            except PermissionError:
                # An entry we may not unlink because we cannot write the directory
                # (mode 0555, or 000 for overlayfs's work dir): make it writable.
                if os.fstat(fd).st_uid != os.geteuid():
                    raise
                os.chmod(fd, 0o700)
                _remove_at(fd, entry)
    finally:
        os.close(fd)
    try:
        os.rmdir(name, dir_fd=parent)
    except FileNotFoundError:
        pass
    except OSError as exc:
        if exc.errno != errno.ENOTEMPTY or tries <= 1:
            raise
        _remove_at(parent, name, tries - 1)  # someone wrote into it meanwhile


def remove_tree(path: str) -> None:
    """Remove `path` and everything under it, not following symlinks; a missing path
    is fine. Raises PermissionError when something belongs to another user."""
    parent_path, name = os.path.split(os.path.abspath(path))
    try:
        parent = os.open(parent_path, _DIR_FLAGS)
    except FileNotFoundError:
        return
    try:
        _remove_at(parent, name)
    finally:
        os.close(parent)


__all__ = ["remove_tree"]
