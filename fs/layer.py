"""One layer directory: its root descriptor, and the resolution of paths under it.

Owns: every open of a directory inside a layer. A path is a tuple of names, resolved
one component at a time with openat(2) and O_NOFOLLOW from the layer's root
descriptor, so a symlink inside a layer is never followed by the filesystem itself —
a lower layer's `etc -> /` or `x -> ../..` is only ever returned as a link, to be
resolved by the kernel in the container's view (fuse-overlayfs does the same with its
safe_openat; the kernel's overlayfs never follows a link in a layer either). The
layer root itself is the one path the command line names: it is opened once, at
mount, and may be a symlink (containers/storage passes its `l/ID` links).

Directory descriptors are O_PATH and kept in a small LRU cache keyed by path, which
turns a lookup into one fstatat(2) per layer. Lower layers are immutable (overlayfs.rst,
"Changes to underlying filesystems"), so their entries never go stale; the upper
layer's are dropped by forget() whenever fs/ renames or removes a directory there.
Descriptors are never closed in the middle of a request: eviction waits for trim(),
which the FUSE layer calls between requests, and only for the layers that have
something to close (`to_trim`). The one exception is drop(), for a directory about
to be removed. Imports nothing from `sandbox`.
"""

from __future__ import annotations

import errno
import os
from collections import OrderedDict

from fs import mapping, whiteout

Path = tuple[bytes, ...]

DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class Layer:
    """A layer root and a cache of directory descriptors under it."""

    __slots__ = ("_closing", "_dirs", "_marks", "cache_size", "dev", "index", "override",
                 "path", "root_fd", "to_trim", "upper")

    def __init__(self, index: int, path: str, *, upper: bool, cache_size: int = 256) -> None:
        self.index = index
        self.path = path
        self.upper = upper
        self.cache_size = cache_size
        self.root_fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            self.dev = os.fstat(self.root_fd).st_dev
            self.override = self._find_override()
        except BaseException:
            os.close(self.root_fd)
            raise
        self._dirs: OrderedDict[Path, int] = OrderedDict()
        self._closing: list[int] = []
        # The set of layers with something for trim() to do, shared by a union's
        # layers so that the end of a request costs nothing when there is none.
        self.to_trim: set[Layer] | None = None
        # whiteout.dir_marks of directories (marks()), dropped by forget().
        self._marks: dict[Path, whiteout.DirMarks] = {}

    def __repr__(self) -> str:
        return f"Layer({self.index}, {self.path!r}, upper={self.upper})"

    def _find_override(self) -> bytes | None:
        """The override_stat xattr this layer's root carries, if any (mapping.py)."""
        root = whiteout.proc_path(self.root_fd)
        for name in mapping.OVERRIDE_XATTRS:
            try:
                os.getxattr(root, name)
            except OSError as exc:
                if exc.errno in (errno.ENODATA, errno.EOPNOTSUPP, errno.EPERM, errno.EACCES):
                    continue
                raise
            return name
        return None

    def dir_fd(self, path: Path) -> int:
        """An O_PATH descriptor of the directory at `path` in this layer.

        Raises ENOENT or ENOTDIR (a component is missing, or is not a directory — a
        symlink included) as openat(2) does."""
        if not path:
            return self.root_fd
        fd = self._dirs.get(path)
        if fd is not None:
            self._dirs.move_to_end(path)
            return fd
        i = len(path) - 1
        while i > 0 and path[:i] not in self._dirs:
            i -= 1
        base = self._dirs[path[:i]] if i else self.root_fd
        for j in range(i, len(path)):
            try:
                fd = os.open(path[j], DIR_FLAGS, dir_fd=base)
            except OSError as exc:
                if exc.errno == errno.ELOOP:  # a symlink where a directory was expected
                    raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path[j]) from None
                raise
            self._dirs[path[: j + 1]] = fd
            base = fd
        if self.to_trim is not None and len(self._dirs) > self.cache_size:
            self.to_trim.add(self)
        return base

    def lstat(self, parent: Path, name: bytes) -> os.stat_result:
        return os.stat(name, dir_fd=self.dir_fd(parent), follow_symlinks=False)

    def stat_dir(self, path: Path) -> os.stat_result:
        return os.stat(self.dir_fd(path))

    def marks(self, path: Path) -> whiteout.DirMarks:
        """whiteout.dir_marks of the directory at `path`, cached: a lower layer never
        changes, and the upper one only through fs/, which calls forget() for a
        directory it makes opaque, moves or removes."""
        marks = self._marks.get(path)
        if marks is None:
            marks = whiteout.dir_marks(self.dir_fd(path))
            if not self.upper and not marks.opaque and path and whiteout.has_wh_file(
                    self.dir_fd(path[:-1]), path[-1]):
                # `.wh.X` beside a directory X of the same layer: a tar that deleted X
                # and made it anew; X replaces the lower ones, as if opaque.
                marks = whiteout.DirMarks(True, marks.xwhiteouts)
            self._marks[path] = marks
        return marks

    def forget(self, prefix: Path, *, subtree: bool = True) -> None:
        """Drop the cached descriptors at and below `prefix` (a directory there was
        renamed or removed); `subtree=False` where nothing below can be cached (an
        empty directory removed: its subdirectories went first, each forgotten). They
        are closed at the next trim()."""
        n = len(prefix)
        if subtree:
            stale = [p for p in self._dirs if p[:n] == prefix]
        else:
            stale = [prefix] if prefix in self._dirs else []
        for p in stale:
            self._closing.append(self._dirs.pop(p))
        if stale and self.to_trim is not None:
            self.to_trim.add(self)
        if subtree:
            for p in [p for p in self._marks if p[:n] == prefix]:
                del self._marks[p]
        else:
            self._marks.pop(prefix, None)

    def drop(self, path: Path) -> None:
        """Forget the directory at `path` (nothing below it cached) and close its
        descriptor now: it is about to be removed, and the last close of a removed
        directory frees its blocks, which should happen in the reaper (reaper.py),
        not here after it."""
        fd = self._dirs.pop(path, None)
        if fd is not None:
            os.close(fd)
        self._marks.pop(path, None)

    def trim(self) -> None:
        """Close what forget() dropped and what the LRU bound evicts."""
        while len(self._dirs) > self.cache_size:
            _, fd = self._dirs.popitem(last=False)
            self._closing.append(fd)
        for fd in self._closing:
            os.close(fd)
        self._closing.clear()

    def close(self) -> None:
        self.forget(())
        self.trim()
        os.close(self.root_fd)
