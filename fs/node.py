"""The inode table: FUSE inode numbers, the names each inode is known by, lookup
counts and forget.

Owns: which FUSE inode a file of the merged tree is, and for how long fs/ remembers it.
Imports nothing from `sandbox`.

Numbers are stable across lookups and forgets: an inode's number is derived from the
identity of the real file behind it, (st_dev, st_ino) — for a non-directory the file
that provides it (its lower origin once it has been copied up, kept in `aliases`), for
a directory the lowest layer's directory in its merge (copy-up only ever adds layers
on top). The real inode number is used as is for the first device seen and offset by
the device's index in the top 16 bits for the others, as overlayfs's `xino` does
(overlayfs.rst, "Inode properties"), so a tree on one filesystem shows the same
st_ino through the mount as in its layers, and a copied-up file keeps the number of
its origin, as on the kernel's overlayfs. Numbers that do not fit are handed out from
a counter above 2**63 and remembered.

pyfuse3 reports `EntryAttributes.st_ino` both as the FUSE node id and as st_ino, so the
root must be 1 (pyfuse3.ROOT_INODE), which no derived number can be.

Lookup counts follow the FUSE protocol (pyfuse3 Operations.lookup/forget, libfuse
fuse_lowlevel.h): every reply that hands the kernel an inode (lookup, create, mknod,
mkdir, symlink, link, and each readdirplus entry) adds one, FORGET subtracts. An inode
leaves the table when the kernel has forgotten it, no open file uses it, and no other
live inode names it as its parent (the dentry tree keeps parents alive the same way).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator

Path = tuple[bytes, ...]
Key = tuple[int, int]  # (st_dev, st_ino) of a real file

ROOT_INO = 1
_INO_BITS = 48
_DEV_LIMIT = 1 << 15
_FALLBACK_BASE = 1 << 63


class Inode:
    """A file of the merged tree, as the kernel knows it.

    `links` are the (parent, name) pairs it is known by, primary first: one for a
    directory, one or more for a non-directory (hard links), none once it has been
    removed from the tree (it may still be open). `layer` is the index of the layer
    that provides a non-directory; `dir_layers` the layers a directory is merged
    from, top first, and `xwh` those in which it may hold xattr whiteouts.
    """

    __slots__ = ("_path", "_path_gen", "children", "dir_layers", "ino", "is_dir", "key",
                 "kind", "layer", "links", "lookups", "opened", "pinned", "version", "xattrs",
                 "xwh")

    def __init__(self, ino: int, key: Key, is_dir: bool, layer: int) -> None:
        self.ino = ino
        self.key = key
        self.is_dir = is_dir
        self.layer = layer
        self.dir_layers: tuple[int, ...] = (layer,) if is_dir else ()
        self.xwh: frozenset[int] = frozenset()
        self.links: list[tuple[Inode, bytes]] = []
        self.lookups = 0
        self.children = 0  # links of live inodes that name this one as their parent
        self.opened = 0  # open file and directory handles
        self.pinned = False
        self.version = 0  # of a directory's entries: bumped by every change to them
        # The xattr names of a non-directory's real file, as stored, once listed
        # (overlay.getxattr); None when not known.
        self.xattrs: frozenset[bytes] | None = None
        # path(), remembered while no directory has moved (_PATHS_GEN) and this
        # inode's own names are as they were (_moved).
        self._path: Path | None = None
        self._path_gen = -1
        # The file type (S_IFMT bits) the mount last presented; 0 until then.
        self.kind = 0

    def __repr__(self) -> str:
        return f"Inode({self.ino}, {self.path()!r}, dir={self.is_dir}, layer={self.layer})"

    @property
    def attached(self) -> bool:
        return self.ino == ROOT_INO or bool(self.links)

    def path(self) -> Path | None:
        """The path of the primary name from the root; None once removed.

        Every request resolves paths, most of them of the same few directories, so
        the answer is kept: valid until a directory's names change anywhere (a
        global generation, _PATHS_GEN: rare) or this inode's own (_moved)."""
        gen = _PATHS_GEN[0]
        if self._path_gen == gen:
            return self._path
        names: list[bytes] = []
        node = self
        while node.ino != ROOT_INO:
            if not node.links:
                return None
            node, name = node.links[0]
            names.append(name)
        names.reverse()
        path = tuple(names)
        self._path, self._path_gen = path, gen
        return path

    def where(self) -> tuple[Path, bytes]:
        """(parent path, name) of the primary name; ENOENT once removed."""
        if self.links:
            parent, name = self.links[0]
            ppath = parent.path()
            if ppath is not None:
                return ppath, name
        raise OSError(errno.ENOENT, os.strerror(errno.ENOENT))

    def dir_path(self) -> Path:
        """The path of a directory; ENOENT once removed."""
        path = self.path()
        if path is None:
            raise OSError(errno.ENOENT, os.strerror(errno.ENOENT))
        return path


# The generation of every cached Inode.path(): bumped whenever the names of a
# directory change, since the paths of everything below it change with them. A list,
# so that it is one shared cell.
_PATHS_GEN = [0]


def _moved(inode: Inode) -> None:
    """The names of `inode` changed: its cached path, and for a directory every
    cached path, are stale."""
    if inode.is_dir:
        _PATHS_GEN[0] += 1
    else:
        inode._path_gen = -1


class InodeTable:
    """The live inodes by number, and the numbering."""

    def __init__(self) -> None:
        self._by_ino: dict[int, Inode] = {}
        self._by_key: dict[Key, Inode] = {}
        self._devs: dict[int, int] = {}
        self._fallback: dict[Key, int] = {}
        self.aliases: dict[Key, Key] = {}  # upper copy -> lower origin
        # Every recorded name: (parent number, name) -> the inode it names.
        self.names: dict[tuple[int, bytes], Inode] = {}

    def __len__(self) -> int:
        return len(self._by_ino)

    def __iter__(self) -> Iterator[Inode]:
        return iter(list(self._by_ino.values()))

    def register_dev(self, dev: int) -> None:
        """Give devices their index in layer order (the upper layer's first)."""
        self._devs.setdefault(dev, len(self._devs))

    def number(self, key: Key) -> int:
        dev, ino = key
        idx = self._devs.get(dev)
        if idx is None:
            idx = self._devs[dev] = len(self._devs)
        if idx < _DEV_LIMIT and ino < (1 << _INO_BITS):
            n = (idx << _INO_BITS) | ino
            if n > ROOT_INO:
                return n
        n = self._fallback.get(key)
        if n is None:
            n = self._fallback[key] = _FALLBACK_BASE | (len(self._fallback) + 1)
        return n

    def canonical(self, key: Key) -> Key:
        return self.aliases.get(key, key)

    def get(self, ino: int) -> Inode:
        try:
            return self._by_ino[ino]
        except KeyError:
            raise OSError(errno.ESTALE, os.strerror(errno.ESTALE)) from None

    def find(self, key: Key) -> Inode | None:
        return self._by_key.get(key)

    def add_root(self, key: Key, dir_layers: tuple[int, ...]) -> Inode:
        root = Inode(ROOT_INO, key, True, dir_layers[0] if dir_layers else 0)
        root.dir_layers = dir_layers
        root.pinned = True
        root.lookups = 1
        self._by_ino[ROOT_INO] = root
        self._by_key[key] = root
        return root

    def new(self, key: Key, is_dir: bool, layer: int) -> Inode:
        inode = Inode(self.number(key), key, is_dir, layer)
        self._by_ino[inode.ino] = inode
        self._by_key[key] = inode
        return inode

    def rekey(self, inode: Inode, key: Key) -> None:
        """A directory's identity changed (it became the only layer of its merge)."""
        if self._by_key.get(inode.key) is inode:
            del self._by_key[inode.key]
        inode.key = key
        self._by_key[key] = inode

    # -- names -----------------------------------------------------------------

    def link(self, inode: Inode, parent: Inode, name: bytes) -> None:
        """Record that `inode` is known as `name` in `parent`."""
        for p, n in inode.links:
            if p is parent and n == name:
                return
        inode.links.append((parent, name))
        parent.children += 1
        self.names[(parent.ino, name)] = inode
        _moved(inode)

    def unlink(self, inode: Inode, parent: Inode, name: bytes) -> None:
        """Forget the name `name` in `parent` for `inode` (unlink, rename away)."""
        for i, (p, n) in enumerate(inode.links):
            if p is parent and n == name:
                del inode.links[i]
                _moved(inode)
                self._unname(inode, p, n)
                parent.children -= 1
                self._maybe_drop(parent)
                break
        self._maybe_drop(inode)

    def detach(self, inode: Inode) -> None:
        """Remove every name of `inode` (it left the tree)."""
        links, inode.links = inode.links, []
        _moved(inode)
        for parent, name in links:
            self._unname(inode, parent, name)
            parent.children -= 1
        for parent, _ in links:
            self._maybe_drop(parent)
        if self._by_key.get(inode.key) is inode:
            del self._by_key[inode.key]  # a new file may get its number's real inode
        self._maybe_drop(inode)

    def rename(self, inode: Inode, old_parent: Inode, old: bytes, parent: Inode,
               new: bytes) -> None:
        for i, (p, n) in enumerate(inode.links):
            if p is old_parent and n == old:
                inode.links[i] = (parent, new)
                _moved(inode)
                self._unname(inode, p, n)
                self.names[(parent.ino, new)] = inode
                parent.children += 1
                old_parent.children -= 1
                self._maybe_drop(old_parent)
                return
        self.link(inode, parent, new)

    def _unname(self, inode: Inode, parent: Inode, name: bytes) -> None:
        key = (parent.ino, name)
        if self.names.get(key) is inode:  # a rename over it may have named another
            del self.names[key]

    def named(self, parent: Inode, name: bytes) -> Inode | None:
        """The inode recorded for NAME in `parent`, if any."""
        return self.names.get((parent.ino, name))

    # -- lookup counts ---------------------------------------------------------

    def ref(self, inode: Inode) -> None:
        inode.lookups += 1

    def forget(self, ino: int, n: int) -> None:
        inode = self._by_ino.get(ino)
        if inode is None or ino == ROOT_INO:
            return
        inode.lookups = max(0, inode.lookups - n)
        self._maybe_drop(inode)

    def release(self, inode: Inode) -> None:
        """A handle on `inode` was closed."""
        inode.opened -= 1
        self._maybe_drop(inode)

    def drop_unreferenced(self, inode: Inode) -> None:
        """Drop an inode made for a reply the kernel did not take."""
        self._maybe_drop(inode)

    def _maybe_drop(self, inode: Inode) -> None:
        while (inode.lookups <= 0 and inode.children <= 0 and inode.opened <= 0
               and not inode.pinned and self._by_ino.get(inode.ino) is inode):
            del self._by_ino[inode.ino]
            if self._by_key.get(inode.key) is inode:
                del self._by_key[inode.key]
            links, inode.links = inode.links, []
            _moved(inode)
            for parent, name in links:
                self._unname(inode, parent, name)
            for parent, _ in links[1:]:
                parent.children -= 1
                self._maybe_drop(parent)
            if not links:
                return
            parent = links[0][0]
            parent.children -= 1
            inode = parent
