"""The union: overlayfs semantics over a stack of layers, in plain Python types.

Owns: lookup through the layers, the merged directory listing, and every change to the
merged tree (create, mkdir, mknod, symlink, link, unlink, rmdir, rename, setattr,
xattrs), each deciding what to copy up and where to leave a whiteout; and the open
files. It knows nothing of FUSE: ops.py turns its results into pyfuse3 types and its
OSErrors into FUSEError. Imports nothing from `sandbox`.

The reference is the kernel's overlayfs (Documentation/filesystems/overlayfs.rst) as
mounted by an unprivileged user (`userxattr`, no `redirect_dir`, no `index`), and its
errno values, checked on Linux 6.18:
- a name is looked up top-down; a whiteout ends the search, a non-directory ends it
  and a directory merges with the directories below it until one is opaque;
- anything that changes a lower entry copies it up first (with its parent
  directories); unlink and rmdir of an entry with something below it leave a whiteout;
  a directory created where a whiteout was is opaque;
- renaming a directory that has lower parts is EXDEV (no redirect_dir: `mv` then
  copies), renaming an upper-only one into a merged directory makes it opaque;
- mknod of the whiteout device 0/0 is EPERM; a `.wh.` name is refused (EINVAL) as
  fuse-overlayfs does, since it would read back as a whiteout;
- a merged directory has st_nlink 1, like overlayfs's merge directories;
- the overlay's own xattrs (user.overlay.*, trusted.overlay.*, fuse-overlayfs's and
  containers/storage's) are hidden: get is ENODATA, set EPERM; `user.overlay.X`
  set through the mount is stored escaped as `user.overlay.overlay.X` and read back
  as `user.overlay.X`, as Linux >= 6.7 does for nested overlays.
Hard links of a lower file stay linked after copy-up: the inode table knows the
lower (st_dev, st_ino) of the copy (node.py), and any other name of it that is looked
up is linked to the upper copy (index=on does this in the kernel).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import stat
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fs import mapping, syscalls, whiteout
from fs.copyup import CopyUp, Meta, MetaWriter
from fs.layer import Layer, Path
from fs.mapping import IdMap
from fs.node import ROOT_INO, Inode, InodeTable
from fs.reaper import Reaper
from fs.whiteout import WhiteoutWriter, fd_path, proc_path

log = logging.getLogger(__name__)

UPPER = 0  # index of the upper layer when there is one
NAME_MAX = 255

# Xattrs of the union itself, hidden from the merged tree: overlayfs's own (both
# namespaces), fuse-overlayfs's, and the override_stat ones of mapping.py.
PRIVATE_XATTR_PREFIXES = (
    b"trusted.overlay.",
    b"user.overlay.",
    b"user.fuseoverlayfs.",
    b"security.fuseoverlayfs.",
    b"user.containers.",
)
_USER_OVERLAY = b"user.overlay."
_ESCAPED = b"user.overlay.overlay."

_LISTINGS_KEPT = 32
# Listings that readdir offsets may still name (an open directory stream each, at
# most; with no OPENDIR there is no close to free them, so a bound on memory too),
# and the parts of an offset: generation << 32 | index + 1.
_STREAMS_KEPT = 256
_GEN_MAX = (1 << 31) - 1
_INDEX_MASK = (1 << 32) - 1
_OPEN_KEEP = (os.O_ACCMODE | os.O_APPEND | os.O_NONBLOCK | os.O_SYNC | os.O_DSYNC | os.O_TRUNC)
_MISSING = (errno.ENOENT, errno.ENOTDIR)


def _err(code: int, what: object = None) -> OSError:
    if what is None:
        return OSError(code, os.strerror(code))
    return OSError(code, os.strerror(code), what)


def keep_xattr(name: bytes) -> bool:
    """Whether a layer's xattr belongs to the file (copied up, shown) rather than
    to the union."""
    return not name.startswith(PRIVATE_XATTR_PREFIXES)


def shown_xattr(real: bytes) -> bytes | None:
    if real.startswith(_ESCAPED):
        return _USER_OVERLAY + real[len(_ESCAPED):]
    return real if keep_xattr(real) else None


def stored_xattr(name: bytes) -> bytes | None:
    """The name to use in a layer for the xattr `name` of the merged tree; None for
    one of the union's own."""
    if name.startswith(_USER_OVERLAY):
        return _ESCAPED + name[len(_USER_OVERLAY):]
    return name if keep_xattr(name) else None


@dataclass(slots=True)
class Attr:
    """The attributes of an inode, as the mount presents them."""

    ino: int
    mode: int
    nlink: int
    uid: int
    gid: int
    rdev: int
    size: int
    blksize: int
    blocks: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int


def _dot_attr(inode: Inode) -> Attr:
    """What readdir gives for "." and "..": the number and the type, all the kernel
    reads of them."""
    return Attr(inode.ino, stat.S_IFDIR, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0)


@dataclass(slots=True)
class SetAttr:
    """What a setattr changes; None leaves a field alone. Ids are presented ones."""

    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    size: int | None = None
    atime_ns: int | None = None
    mtime_ns: int | None = None


class Found:
    """Where a name of a merged directory comes from."""

    __slots__ = ("bottom", "dir_layers", "layer", "st", "xwh")

    def __init__(self, layer: int, st: os.stat_result, dir_layers: tuple[int, ...] = (),
                 xwh: frozenset[int] = frozenset(), bottom: os.stat_result | None = None
                 ) -> None:
        self.layer = layer
        self.st = st
        self.dir_layers = dir_layers
        self.xwh = xwh
        self.bottom = bottom or st

    @property
    def is_dir(self) -> bool:
        return bool(self.dir_layers)


class FileHandle:
    __slots__ = ("fd", "inode", "kill_priv", "upper")

    def __init__(self, fd: int, inode: Inode, upper: bool, kill_priv: bool) -> None:
        self.fd = fd
        self.inode = inode
        self.upper = upper
        self.kill_priv = kill_priv


class DirHandle:
    __slots__ = ("inode",)

    def __init__(self, inode: Inode) -> None:
        self.inode = inode


class Listing:
    """The merged entries of a directory as readdir saw them at offset 0: (name,
    position in its dir_layers of the layer that provides it, whether it is a
    directory there), "." and ".." first. `gen` tags the offsets handed out for it
    (readdir), `version` is the directory's version when it was made."""

    __slots__ = ("entries", "gen", "inode", "key", "version")

    def __init__(self, inode: Inode, entries: list[tuple[bytes, int, bool]], gen: int) -> None:
        self.inode = inode
        self.entries = entries
        self.gen = gen
        self.version = inode.version
        self.key = (inode.version, inode.dir_layers)


class Overlay:
    """A mounted union of `lowers` (top first) under an optional `upper` layer."""

    def __init__(
        self,
        lowers: Sequence[str],
        upper: str | None = None,
        work: str | None = None,
        *,
        uids: IdMap | None = None,
        gids: IdMap | None = None,
        writeback: bool = False,
        fsync: bool = True,
        static_nlink: bool = False,
        xattrs: bool = True,
        xattr_permissions: int = 0,
        cache_size: int = 1024,
    ) -> None:
        if not lowers:
            raise _err(errno.EINVAL, "no lower directory")
        if upper is not None and work is None:
            raise _err(errno.EINVAL, "upperdir needs a workdir")
        self.uids = uids or IdMap()
        self.gids = gids or IdMap()
        self.writeback = writeback
        self.fsync_enabled = fsync
        self.static_nlink = static_nlink
        self.xattrs = xattrs
        per_layer = max(16, cache_size // (len(lowers) + 1))
        self.layers: list[Layer] = []
        self.workfd = -1
        self.reaper: Reaper | None = None
        # (parent inode, name) of entries whose times the kernel holds stale: for
        # the FUSE layer to expire and clear (ops.py, setattr).
        self.stale_times: list[tuple[int, bytes]] = []
        # The layers with directory descriptors to close at the end of a request.
        self.to_trim: set[Layer] = set()
        self._files: dict[int, FileHandle] = {}
        self._dirs: dict[int, DirHandle] = {}
        # The last listing made of each directory (readdir), by inode number, and
        # the listings that offsets handed out may still name, by generation.
        self._listings: OrderedDict[int, Listing] = OrderedDict()
        self._by_gen: OrderedDict[int, Listing] = OrderedDict()
        self._next_gen = 1
        self._next_fh = 1
        try:
            if upper is not None:
                self.layers.append(Layer(0, upper, upper=True, cache_size=per_layer))
            for path in lowers:
                self.layers.append(Layer(len(self.layers), path, upper=False,
                                         cache_size=per_layer))
            for layer in self.layers:
                layer.to_trim = self.to_trim
            self.upper: Layer | None = self.layers[0] if upper is not None else None
            self.whiteouts = WhiteoutWriter(False)
            if self.upper is not None:
                assert work is not None
                self._open_work(work)
                self.reaper = Reaper(self.workfd)
                self.whiteouts.chardev = whiteout.can_mknod_whiteout(
                    self.workfd, b"#sbx-fs-probe-%d" % os.getpid())
                if xattr_permissions:
                    self._init_xattr_permissions(xattr_permissions)
                squash = self.uids.squashed or self.gids.squashed
                self.writer = MetaWriter(self.upper, squash=squash)
                self.copyup = CopyUp(self.upper, self.workfd, self.writer, keep_xattr)
            self.table = InodeTable()
            for layer in self.layers:
                self.table.register_dev(layer.dev)
            self.root = self._make_root()
        except BaseException:
            self.close()
            raise

    # -- setup ---------------------------------------------------------------------

    def _open_work(self, work: str) -> None:
        """workdir/work, emptied: the kernel's layout (overlayfs.rst "workdir"), which
        fuse-overlayfs uses too, so one workdir serves either."""
        assert self.upper is not None
        with contextlib.suppress(FileExistsError):
            os.mkdir(work, 0o700)
        wfd = os.open(work, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            if os.fstat(wfd).st_dev != self.upper.dev:
                raise _err(errno.EXDEV, f"workdir {work} and upperdir {self.upper.path} "
                                        "must be on the same filesystem")
            with contextlib.suppress(FileExistsError):
                os.mkdir(b"work", 0o700, dir_fd=wfd)
            self.workfd = os.open(b"work", os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW
                                  | os.O_CLOEXEC, dir_fd=wfd)
        finally:
            os.close(wfd)
        for name in os.listdir(proc_path(self.workfd)):
            st = os.stat(name, dir_fd=self.workfd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(name, dir_fd=self.workfd)
            else:
                os.unlink(name, dir_fd=self.workfd)

    def _init_xattr_permissions(self, level: int) -> None:
        """fuse-overlayfs's xattr_permissions=1|2 (containers/storage force_mask):
        owners and modes of the upper layer live in an override_stat xattr; the
        upper root gets one, from a lower root or 0:0:0555 (fuse-overlayfs main)."""
        assert self.upper is not None
        if level not in (1, 2):
            raise _err(errno.EINVAL, f"invalid value for xattr_permissions: {level}")
        name = mapping.PRIVILEGED_OVERRIDE_XATTR if level == 1 else mapping.USER_OVERRIDE_XATTR
        root = proc_path(self.upper.root_fd)
        try:
            os.getxattr(root, name)
        except OSError as exc:
            if exc.errno != errno.ENODATA:
                raise
            value = mapping.format_override(0, 0, stat.S_IFDIR | 0o555)
            for layer in self.layers[1:]:
                for candidate in (name, mapping.CONTAINERS_OVERRIDE_XATTR):
                    try:
                        value = os.getxattr(proc_path(layer.root_fd), candidate)
                        break
                    except OSError:
                        continue
                else:
                    continue
                break
            os.setxattr(root, name, value)
        self.upper.override = name

    def _make_root(self) -> Inode:
        layers: list[int] = []
        xwh: set[int] = set()
        for layer in self.layers:
            layers.append(layer.index)
            marks = layer.marks(())
            if marks.xwhiteouts:
                xwh.add(layer.index)
            if marks.opaque:
                break
        bottom = os.fstat(self.layers[layers[-1]].root_fd)
        root = self.table.add_root((bottom.st_dev, bottom.st_ino), tuple(layers))
        root.xwh = frozenset(xwh)
        return root

    def close(self) -> None:
        for h in self._files.values():
            with contextlib.suppress(OSError):
                os.close(h.fd)
        self._files.clear()
        for layer in self.layers:
            with contextlib.suppress(OSError):
                layer.trim()
        if self.reaper is not None:
            self.reaper.close()  # the pending removals, before the work fd goes
        for layer in self.layers:
            with contextlib.suppress(OSError):
                layer.close()
        self.layers = []
        if self.workfd >= 0:
            os.close(self.workfd)
            self.workfd = -1

    def end_request(self) -> None:
        """Between requests: close the directory descriptors the caches let go."""
        if self.to_trim:
            for layer in self.to_trim:
                layer.trim()
            self.to_trim.clear()

    # -- lookup ----------------------------------------------------------------------

    def _found(self, parent: Inode, name: bytes, start: int = 0,
               upper_wh: list[str] | None = None) -> Found | None:
        """Look NAME up in the layers of the directory `parent`, top-down, from the
        `start`-th of them (readdir knows the layers above do not have it). With
        `upper_wh`, the whiteout of NAME in the upper layer, if any, is appended to
        it: "dev" or "file" (see WhiteoutWriter.find)."""
        ppath = parent.dir_path()
        layers = parent.dir_layers
        top: tuple[int, os.stat_result] | None = None
        bottom: os.stat_result | None = None
        merged: list[int] = []
        xwh: set[int] = set()
        last = len(layers) - 1
        for pos in range(start, last + 1):
            li = layers[pos]
            layer = self.layers[li]
            dfd = layer.dir_fd(ppath)
            try:
                st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            except OSError as exc:
                if exc.errno not in _MISSING:
                    raise
                # A `.wh.NAME` hides what is below; in the bottom layer, nothing.
                want = upper_wh is not None and layer.upper
                if (pos < last or want) and whiteout.has_wh_file(dfd, name):
                    if want:
                        upper_wh.append("file")  # type: ignore[union-attr]
                    break
                continue
            if whiteout.is_whiteout_dev(st):
                if upper_wh is not None and layer.upper:
                    upper_wh.append("dev")
                break
            if li in parent.xwh and whiteout.is_xattr_whiteout(dfd, name, st):
                break
            if not stat.S_ISDIR(st.st_mode):
                if top is None:
                    return Found(li, st)
                break  # a non-directory below a directory ends its merge
            if top is None:
                top = (li, st)
            merged.append(li)
            bottom = st
            marks = layer.marks((*ppath, name))
            if marks.xwhiteouts:
                xwh.add(li)
            if marks.opaque:
                break
        if top is None:
            return None
        return Found(top[0], top[1], tuple(merged), frozenset(xwh), bottom)

    def _inode_for(self, parent: Inode, name: bytes, found: Found) -> Inode:
        """The inode of a found entry, made or updated, with this name recorded."""
        table = self.table
        if found.is_dir:
            key = (found.bottom.st_dev, found.bottom.st_ino)
            inode = table.find(key)
            if inode is None or not inode.is_dir:
                inode = table.new(key, True, found.layer)
            inode.layer = found.layer
            inode.dir_layers = found.dir_layers
            inode.xwh = found.xwh
            if inode.links and inode.links[0] != (parent, name):
                old_parent, old_name = inode.links[0]
                table.rename(inode, old_parent, old_name, parent, name)
            elif not inode.links and inode.ino != ROOT_INO:
                table.link(inode, parent, name)
            return inode
        key = table.canonical((found.st.st_dev, found.st.st_ino))
        inode = table.find(key)
        if inode is None or inode.is_dir:
            inode = table.new(key, False, found.layer)
        elif not inode.links:
            inode.xattrs = None  # a removed file's number, taken by a new file
        elif self.upper is not None and inode.layer == UPPER and found.layer != UPPER:
            # Another name of a lower file that has been copied up: link it there.
            self._link_copied(inode, parent, name)
        table.link(inode, parent, name)
        return inode

    def _link_copied(self, inode: Inode, parent: Inode, name: bytes) -> None:
        try:
            sp, sn = inode.where()
            assert self.upper is not None
            sfd = self.upper.dir_fd(sp)
            dfd = self._upper_dir(parent)
            if whiteout.exists(dfd, name):
                return
            before = os.fstat(dfd)
            os.link(sn, name, src_dir_fd=sfd, dst_dir_fd=dfd, follow_symlinks=False)
            parent.version += 1  # NAME is the upper layer's now (readdir's listing)
            # Part of a copy-up: the directory's times stay as they were (the
            # kernel's ovl_copy_up_one puts them back too).
            self._restore_times(dfd, before)
        except OSError as exc:
            log.warning("cannot link %r to its copied-up hard link: %s", name, exc)

    def lookup(self, parent_ino: int, name: bytes) -> Attr | None:
        """The entry NAME of a directory, its lookup count taken; None if absent."""
        parent = self.table.get(parent_ino)
        if not parent.is_dir:
            raise _err(errno.ENOTDIR)
        if name == b".":
            inode = parent
            attr = self._attr(inode)
        elif name == b"..":
            inode = parent.links[0][0] if parent.links else self.root
            attr = self._attr(inode)
        else:
            if whiteout.is_whiteout_name(name):
                return None
            if len(name) > NAME_MAX:
                raise _err(errno.ENAMETOOLONG)
            found = self._found(parent, name)
            if found is None:
                return None
            inode = self._inode_for(parent, name, found)
            attr = self._attr(inode, found.st if found.is_dir or inode.layer == found.layer
                              else None)
        self.table.ref(inode)
        return attr

    def forget(self, items: Sequence[tuple[int, int]]) -> None:
        for ino, n in items:
            self.table.forget(ino, n)

    # -- attributes --------------------------------------------------------------------

    def _locate(self, inode: Inode) -> tuple[Layer, int, bytes | None]:
        """(layer, directory fd, name) of the real file behind an inode; for a
        directory the fd is its own and the name None."""
        if inode.is_dir:
            if not inode.dir_layers:
                raise _err(errno.ENOENT)
            layer = self.layers[inode.dir_layers[0]]
            return layer, layer.dir_fd(inode.dir_path()), None
        ppath, name = inode.where()
        layer = self.layers[inode.layer]
        return layer, layer.dir_fd(ppath), name

    def _open_fd(self, inode: Inode) -> int | None:
        for h in self._files.values():
            if h.inode is inode:
                return h.fd
        return None

    def _real_stat(self, inode: Inode) -> tuple[os.stat_result, Layer | None, bytes | None]:
        """The real stat of an inode, its layer and, where that layer stores owners in
        an override xattr (the one use of it), the /proc path of its file."""
        if not inode.is_dir and not inode.links:
            # A removed file: only an open handle still reaches it. The kernel flushes
            # the times of every file it unlinks (a SETATTR after the UNLINK, with the
            # writeback cache), so this is asked once per file of an `rm -rf`.
            fd = self._open_fd(inode) if inode.opened > 0 else None
            if fd is None:
                raise _err(errno.ENOENT)
            return os.fstat(fd), None, None
        layer, dfd, name = self._locate(inode)
        if name is None:
            return os.stat(dfd), layer, proc_path(dfd) if layer.override is not None else None
        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        return st, layer, proc_path(dfd, name) if layer.override is not None else None

    def _attr(self, inode: Inode, st: os.stat_result | None = None) -> Attr:
        if st is None:
            st, layer, path = self._real_stat(inode)
        else:
            layer = self.layers[inode.dir_layers[0] if inode.is_dir else inode.layer]
            path = None
        return self._make_attr(inode, st, layer, path)

    def _make_attr(self, inode: Inode, st: os.stat_result, layer: Layer | None,
                   path: bytes | None) -> Attr:
        """The presented attributes from the real stat and what _real_stat says."""
        mode, rdev, uid, gid = st.st_mode, st.st_rdev, st.st_uid, st.st_gid
        if layer is not None and layer.override is not None:
            if path is None:
                _, dfd, name = self._locate(inode)
                path = proc_path(dfd, name) if name is not None else proc_path(dfd)
            ov = mapping.read_override(path, layer.override)
            if ov is not None:
                uid, gid = ov.uid, ov.gid
                mode, rdev = mapping.apply_override(ov, mode, rdev)
        if inode.is_dir and (self.static_nlink or len(inode.dir_layers) > 1):
            nlink = 1
        else:
            nlink = st.st_nlink
        if not self.uids.identity:
            uid = self.uids.present(uid)
        if not self.gids.identity:
            gid = self.gids.present(gid)
        inode.kind = mode & 0o170000  # stat.S_IFMT, for readdir's emit_known
        return Attr(inode.ino, mode, nlink, uid, gid, rdev, st.st_size, st.st_blksize,
                    st.st_blocks, st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns)

    def getattr(self, ino: int) -> Attr:
        return self._attr(self.table.get(ino))

    def _meta(self, layer: Layer, dfd: int, name: bytes | None, real: os.stat_result) -> Meta:
        """Owner and mode as `layer` stores them (its override_stat applied)."""
        uid, gid, mode, rdev = real.st_uid, real.st_gid, real.st_mode, real.st_rdev
        if layer.override is not None:
            path = proc_path(dfd, name) if name is not None else proc_path(dfd)
            ov = mapping.read_override(path, layer.override)
            if ov is not None:
                uid, gid = ov.uid, ov.gid
                mode, rdev = mapping.apply_override(ov, mode, rdev)
        return Meta(uid, gid, mode, rdev, real.st_atime_ns, real.st_mtime_ns)

    def readlink(self, ino: int) -> bytes:
        inode = self.table.get(ino)
        if inode.is_dir:
            raise _err(errno.EINVAL)
        _, dfd, name = self._locate(inode)
        assert name is not None
        return os.readlink(name, dir_fd=dfd)

    def statfs(self) -> os.statvfs_result:
        """Of the upper layer (the top lower one for a read-only mount)."""
        return os.statvfs(proc_path(self.layers[0].root_fd))

    # -- copy-up -------------------------------------------------------------------------

    def _need_upper(self) -> Layer:
        if self.upper is None:
            raise _err(errno.EROFS)
        return self.upper

    def _upper_dir(self, inode: Inode) -> int:
        """The upper directory of a directory inode, copied up with its parents first
        if it is not there yet."""
        upper = self._need_upper()
        if not inode.dir_layers:
            raise _err(errno.ENOENT)  # removed (a deleted working directory)
        chain: list[Inode] = []
        node = inode
        while node.dir_layers[0] != UPPER:
            chain.append(node)
            if not node.links:
                raise _err(errno.ENOENT)
            node = node.links[0][0]
            if not node.dir_layers:
                raise _err(errno.ENOENT)
        for node in reversed(chain):
            parent, name = node.links[0]
            pfd = upper.dir_fd(parent.dir_path())
            path = node.dir_path()
            top = self.layers[node.dir_layers[0]]
            sfd = top.dir_fd(path)
            real = os.stat(sfd)
            before = os.fstat(pfd)
            self.copyup.directory(sfd, self._meta(top, sfd, None, real), pfd, name)
            self._restore_times(pfd, before)
            node.dir_layers = (UPPER, *node.dir_layers)
            parent.version += 1  # its listing said which layer has NAME (readdir)
        return upper.dir_fd(inode.dir_path())

    @staticmethod
    def _restore_times(dirfd: int, st: os.stat_result) -> None:
        os.utime(proc_path(dirfd), ns=(st.st_atime_ns, st.st_mtime_ns))

    def _copy_up(self, inode: Inode, *, data: bool = True) -> None:
        """Bring an inode into the upper layer (overlayfs.rst "Copy up")."""
        self._need_upper()
        if inode.is_dir:
            self._upper_dir(inode)
            return
        if inode.layer == UPPER:
            return
        ppath, name = inode.where()
        parent = inode.links[0][0]
        udfd = self._upper_dir(parent)
        layer = self.layers[inode.layer]
        sdfd = layer.dir_fd(ppath)
        real = os.stat(name, dir_fd=sdfd, follow_symlinks=False)
        meta = self._meta(layer, sdfd, name, real)
        before = os.fstat(udfd)
        ust = self.copyup.entry(sdfd, name, real, meta, udfd, name, data=data)
        self._restore_times(udfd, before)
        self.table.aliases[(ust.st_dev, ust.st_ino)] = inode.key
        inode.layer = UPPER
        inode.xattrs = None  # the copy's may differ (copied as far as permitted)
        for p, _ in inode.links:
            p.version += 1  # listings say which layer has a name (readdir)
        if real.st_nlink > 1 and not stat.S_ISDIR(real.st_mode):
            inode.pinned = True  # other names of it, looked up later, link to the copy
            for p, n in list(inode.links[1:]):
                self._link_copied(inode, p, n)

    def _lower_has(self, parent: Inode, name: bytes) -> bool:
        """Whether a lower layer of `parent` shows an entry NAME (and so removing or
        moving the upper one needs a whiteout)."""
        layers = parent.dir_layers
        if not layers or (len(layers) == 1 and self.upper is not None and layers[0] == UPPER):
            return False
        ppath = parent.dir_path()
        last = layers[-1]
        for li in layers:
            if self.upper is not None and li == UPPER:
                continue
            dfd = self.layers[li].dir_fd(ppath)
            try:
                st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
            except OSError as exc:
                if exc.errno not in _MISSING:
                    raise
                if li != last and whiteout.has_wh_file(dfd, name):
                    return False
                continue
            return not (whiteout.is_whiteout_dev(st) or (
                li in parent.xwh and whiteout.is_xattr_whiteout(dfd, name, st)))
        return False

    # -- directories ----------------------------------------------------------------------

    def _listing(self, inode: Inode) -> list[tuple[bytes, int, bool]]:
        """The merged entries of a directory: (name, position in its dir_layers of
        the layer that provides it, whether it is a directory there), upper names
        first."""
        if not inode.dir_layers:
            return []
        path = inode.dir_path()
        seen: dict[bytes, tuple[int, bool]] = {}
        hidden: set[bytes] = set()
        for pos, li in enumerate(inode.dir_layers):
            layer = self.layers[li]
            dfd = layer.dir_fd(path)
            here: set[bytes] = set()
            xwh = li in inode.xwh
            with os.scandir(proc_path(dfd)) as it:
                for e in it:
                    name: bytes = e.name  # type: ignore[assignment]
                    if name.startswith(whiteout.WH_PREFIX):
                        if not name.startswith(whiteout.META_PREFIX):
                            here.add(name[len(whiteout.WH_PREFIX):])
                        continue
                    if name in seen or name in hidden:
                        continue
                    is_dir = e.is_dir(follow_symlinks=False)
                    if not (is_dir or e.is_symlink()):
                        if e.is_file(follow_symlinks=False):
                            if xwh and whiteout.is_xattr_whiteout(
                                    dfd, name, e.stat(follow_symlinks=False)):
                                here.add(name)
                                continue
                        elif whiteout.is_whiteout_dev(e.stat(follow_symlinks=False)):
                            here.add(name)
                            continue
                    seen[name] = (pos, is_dir)
            hidden |= here
        return [(name, pos, is_dir) for name, (pos, is_dir) in seen.items()]

    def opendir(self, ino: int) -> int:
        inode = self.table.get(ino)
        if not inode.is_dir:
            raise _err(errno.ENOTDIR)
        fh = self._new_fh()
        self._dirs[fh] = DirHandle(inode)
        inode.opened += 1
        return fh

    def _listing_at_start(self, inode: Inode) -> Listing:
        """The listing a read from offset 0 uses: the last one made of the directory
        while the directory is as it was then (`rm -rf` and `find` read each
        directory twice), else a new one."""
        kept = self._listings.get(inode.ino)
        if kept is not None and kept.inode is inode and kept.key == (inode.version,
                                                                      inode.dir_layers):
            self._listings.move_to_end(inode.ino)
            self._by_gen.move_to_end(kept.gen)
            return kept
        gen = self._next_gen
        self._next_gen = gen + 1 if gen < _GEN_MAX else 1
        listing = Listing(inode, [(b".", 0, True), (b"..", 0, True), *self._listing(inode)],
                          gen)
        self._listings[inode.ino] = listing
        if len(self._listings) > _LISTINGS_KEPT:
            self._listings.popitem(last=False)
        self._by_gen[gen] = listing
        if len(self._by_gen) > _STREAMS_KEPT:
            self._by_gen.popitem(last=False)
        return listing

    def readdir(self, ref: int, start: int, emit: Callable[[bytes, Attr, int], bool],
                emit_known: Callable[[bytes, int, int, int], bool] | None = None, *,
                by_inode: bool = False) -> None:
        """Entries from offset `start` of the directory `ref` — a handle from
        opendir, or with `by_inode` the directory's inode number (the kernel opens
        directories itself: ops.py, no_opendir). `emit(name, attr, next_offset)`
        returns False when the reply is full.

        The listing is made at offset 0 and kept; an offset is its generation in the
        high 32 bits and an index into it in the low ones, so telldir/seekdir
        positions stay valid while the directory changes, and two streams reading
        one directory never mix listings, with no state per open directory. An
        offset whose listing has been evicted (_STREAMS_KEPT) reads on in a new one.

        With `emit_known(name, ino, kind, next_offset)`, an entry whose inode the
        kernel holds (a lookup reply it has not forgotten) goes out by number and
        type only, with no lookup counted: its dentry and attributes are cached
        already, and stat-ing it again is what made `rm -rf` and `ls` of a tree
        the kernel knows cost a stat per entry per read (ops.py)."""
        inode = self.table.get(ref) if by_inode else self._dirs[ref].inode
        if not inode.is_dir:
            raise _err(errno.ENOTDIR)
        listing: Listing | None = None
        index = 0
        if start:
            index = start & _INDEX_MASK
            listing = self._by_gen.get(start >> 32)
            if listing is not None and listing.inode is not inode:
                listing = None
        if listing is None:
            listing = self._listing_at_start(inode)
        entries = listing.entries
        gen = listing.gen << 32
        # While the directory is as listed, a non-directory is where the listing
        # saw it: one fstatat. Once it changed, every name is looked up again from
        # the top, so that no removed name comes back (readdirplus would hand the
        # kernel a dentry for it).
        fast = listing.version == inode.version
        dfds: list[int] | None = None
        table = self.table
        names = table.names if emit_known is not None and fast else None
        for i in range(index, len(entries)):
            name, pos, is_dir = entries[i]
            child: Inode | None = None
            if names is not None and i >= 2:
                known = names.get((inode.ino, name))
                if known is not None and known.lookups > 0 and known.kind:
                    if not emit_known(name, known.ino, known.kind, gen | (i + 1)):
                        return
                    continue
            if i < 2:
                # "." and "..": the kernel takes only the number and the type from
                # these two (fuse_direntplus_link skips them; readdir.c), so no stat.
                attr = _dot_attr(inode if i == 0 else
                                 inode.links[0][0] if inode.links else self.root)
            else:
                found: Found | None = None
                if fast and not is_dir:
                    if dfds is None:
                        path = inode.dir_path()
                        dfds = [self.layers[li].dir_fd(path) for li in inode.dir_layers]
                    try:
                        st = os.stat(name, dir_fd=dfds[pos], follow_symlinks=False)
                    except OSError as exc:
                        if exc.errno not in _MISSING:
                            raise
                    else:
                        if not stat.S_ISDIR(st.st_mode):
                            found = Found(inode.dir_layers[pos], st)
                if found is None:
                    try:
                        # A directory is looked up from the top: one listed from a
                        # lower layer may have been copied up since.
                        found = self._found(inode, name, pos if fast and not is_dir else 0)
                    except OSError as exc:
                        if exc.errno in _MISSING:
                            continue
                        raise
                    if found is None:
                        continue  # removed since the listing was made
                child = self._inode_for(inode, name, found)
                attr = self._attr(child, found.st if found.is_dir or child.layer == found.layer
                                  else None)
            if not emit(name, attr, gen | (i + 1)):
                if child is not None:
                    table.drop_unreferenced(child)
                return
            if child is not None:
                table.ref(child)

    def releasedir(self, fh: int) -> None:
        dh = self._dirs.pop(fh)
        self.table.release(dh.inode)

    def fsyncdir(self, ref: int, datasync: bool, *, by_inode: bool = False) -> None:
        inode = self.table.get(ref) if by_inode else self._dirs[ref].inode
        if not self.fsync_enabled or self.upper is None or not inode.dir_layers:
            return
        if inode.dir_layers[0] == UPPER:
            fd = os.open(b".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC,
                         dir_fd=self.upper.dir_fd(inode.dir_path()))
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    # -- creating --------------------------------------------------------------------------

    @staticmethod
    def _check_name(name: bytes) -> None:
        if len(name) > NAME_MAX:
            raise _err(errno.ENAMETOOLONG)
        if whiteout.is_whiteout_name(name):
            raise _err(errno.EINVAL, name)  # would read back as a whiteout

    def _new_owner(self, parent: Inode, uid: int, gid: int) -> tuple[int, int, bool]:
        """The stored owner of a new entry made by uid:gid (presented ids), and
        whether the parent's setgid bit passes on (the group, and for a directory
        the bit itself)."""
        st, layer, path = self._real_stat(parent)
        pmode, pgid = st.st_mode, st.st_gid
        if layer is not None and layer.override is not None and path is not None:
            ov = mapping.read_override(path, layer.override)
            if ov is not None:
                pmode, pgid = ov.mode, ov.gid
        setgid = bool(pmode & stat.S_ISGID)
        sgid = pgid if setgid else self.gids.store(gid)
        return self.uids.store(uid), sgid, setgid

    def _prepare(self, parent_ino: int, name: bytes) -> tuple[Inode, int, str | None]:
        """For a new entry NAME: the parent (copied up), its upper fd, and the
        whiteout NAME replaces ("dev", "file" or None); EEXIST if NAME exists."""
        self._need_upper()
        self._check_name(name)
        parent = self.table.get(parent_ino)
        if not parent.is_dir:
            raise _err(errno.ENOTDIR)
        wh: list[str] = []
        if self._found(parent, name, upper_wh=wh) is not None:
            raise _err(errno.EEXIST, name)
        udfd = self._upper_dir(parent)  # a directory copied up now holds no whiteout
        return parent, udfd, wh[0] if wh else None

    def _place(self, udfd: int, name: bytes, wh: str | None,
               make: Callable[[int, bytes], None]) -> None:
        """Create NAME with `make(dirfd, name)` where a whiteout may be: over a 0/0
        device, built in the work directory and renamed over it (the kernel's
        ovl_create_over_whiteout); over a `.wh.NAME` file, made then the file removed."""
        if wh == "dev":
            tmp = self.copyup.tmpname()
            make(self.workfd, tmp)
            try:
                os.rename(tmp, name, src_dir_fd=self.workfd, dst_dir_fd=udfd)
            except OSError:
                _remove(self.workfd, tmp)
                raise
            return
        make(udfd, name)
        if wh == "file":
            WhiteoutWriter.remove_file_form(udfd, name)

    def _entry(self, parent: Inode, name: bytes) -> Attr:
        """A fresh lookup of what was just made, its lookup count taken."""
        parent.version += 1
        attr = self.lookup(parent.ino, name)
        if attr is None:
            raise _err(errno.EIO, name)
        return attr

    def _backing_flags(self, flags: int) -> int:
        out = (flags & _OPEN_KEEP) | os.O_NOFOLLOW | os.O_CLOEXEC
        if self.writeback:
            # The kernel's writeback cache reads pages of a file open for writing
            # and computes O_APPEND offsets itself (libfuse passthrough_ll, lo_open).
            if out & os.O_ACCMODE == os.O_WRONLY:
                out = (out & ~os.O_ACCMODE) | os.O_RDWR
            out &= ~os.O_APPEND
        return out

    def create(self, parent_ino: int, name: bytes, mode: int, flags: int, uid: int,
               gid: int) -> tuple[int, Attr]:
        parent, udfd, wh = self._prepare(parent_ino, name)
        suid, sgid, _ = self._new_owner(parent, uid, gid)
        perm = stat.S_IMODE(mode)
        oflags = self._backing_flags(flags) | os.O_CREAT | os.O_EXCL
        if oflags & os.O_ACCMODE == os.O_RDONLY:
            oflags |= os.O_RDWR if self.writeback else 0
        fds: list[int] = []

        def make(dfd: int, n: bytes) -> None:
            fd = os.open(n, oflags, perm, dir_fd=dfd)
            fds.append(fd)
            try:
                self.writer.set(dfd, n, suid, sgid, stat.S_IFREG | perm, real=os.fstat(fd))
            except BaseException:
                os.close(fd)
                fds.clear()
                os.unlink(n, dir_fd=dfd)
                raise

        self._place(udfd, name, wh, make)
        fd = fds[0]
        try:
            attr = self._entry(parent, name)
        except BaseException:
            os.close(fd)
            raise
        inode = self.table.get(attr.ino)
        # Its xattr names, from the descriptor at hand (getxattr asks for them at the
        # first write: see there); none but what a default ACL or an LSM adds.
        inode.xattrs = frozenset(os.fsencode(n) for n in os.listxattr(fd))
        return self._add_file(fd, inode, True, uid != 0), attr

    def mkdir(self, parent_ino: int, name: bytes, mode: int, uid: int, gid: int) -> Attr:
        parent, udfd, wh = self._prepare(parent_ino, name)
        suid, sgid, setgid = self._new_owner(parent, uid, gid)
        perm = stat.S_IMODE(mode) | (stat.S_ISGID if setgid else 0)

        def make(dfd: int, n: bytes) -> None:
            os.mkdir(n, 0o700, dir_fd=dfd)
            try:
                self.writer.set(dfd, n, suid, sgid, stat.S_IFDIR | perm)
                if wh is not None:
                    # Where a whiteout was, the lower directories must stay hidden.
                    sub = os.open(n, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                                  dir_fd=dfd)
                    try:
                        self.whiteouts.set_opaque(sub)
                    finally:
                        os.close(sub)
            except BaseException:
                shutil.rmtree(n, dir_fd=dfd)
                raise

        if wh == "dev":
            # A directory cannot be renamed over the device: build it in the work
            # directory and exchange the two, then drop the whiteout.
            tmp = self.copyup.tmpname()
            make(self.workfd, tmp)
            try:
                syscalls.renameat2(self.workfd, tmp, udfd, name, syscalls.RENAME_EXCHANGE)
            except OSError:
                shutil.rmtree(tmp, dir_fd=self.workfd)
                raise
            os.unlink(tmp, dir_fd=self.workfd)
        else:
            self._place(udfd, name, wh, make)
        return self._entry(parent, name)

    def mknod(self, parent_ino: int, name: bytes, mode: int, rdev: int, uid: int,
              gid: int) -> Attr:
        if stat.S_ISCHR(mode) and rdev == 0:
            raise _err(errno.EPERM, name)  # the whiteout device (ovl_mknod)
        parent, udfd, wh = self._prepare(parent_ino, name)
        suid, sgid, _ = self._new_owner(parent, uid, gid)
        kind = stat.S_IFMT(mode) or stat.S_IFREG

        def make(dfd: int, n: bytes) -> None:
            if kind == stat.S_IFREG:
                os.close(os.open(n, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC,
                                 0o600, dir_fd=dfd))
            else:
                os.mknod(n, kind | 0o600, rdev, dir_fd=dfd)
            try:
                self.writer.set(dfd, n, suid, sgid, kind | stat.S_IMODE(mode), rdev)
            except BaseException:
                os.unlink(n, dir_fd=dfd)
                raise

        self._place(udfd, name, wh, make)
        return self._entry(parent, name)

    def symlink(self, parent_ino: int, name: bytes, target: bytes, uid: int,
                gid: int) -> Attr:
        parent, udfd, wh = self._prepare(parent_ino, name)
        suid, sgid, _ = self._new_owner(parent, uid, gid)

        def make(dfd: int, n: bytes) -> None:
            os.symlink(target, n, dir_fd=dfd)
            try:
                self.writer.set(dfd, n, suid, sgid, -1)
            except BaseException:
                os.unlink(n, dir_fd=dfd)
                raise

        self._place(udfd, name, wh, make)
        return self._entry(parent, name)

    def link(self, ino: int, parent_ino: int, name: bytes) -> Attr:
        inode = self.table.get(ino)
        if inode.is_dir:
            raise _err(errno.EPERM)
        parent, udfd, wh = self._prepare(parent_ino, name)
        self._copy_up(inode)
        assert self.upper is not None
        sp, sn = inode.where()
        sfd = self.upper.dir_fd(sp)
        udfd = self.upper.dir_fd(parent.dir_path())

        def make(dfd: int, n: bytes) -> None:
            os.link(sn, n, src_dir_fd=sfd, dst_dir_fd=dfd, follow_symlinks=False)

        self._place(udfd, name, wh, make)
        return self._entry(parent, name)

    # -- removing --------------------------------------------------------------------------

    def _existing(self, parent_ino: int, name: bytes) -> tuple[Inode, Found]:
        parent = self.table.get(parent_ino)
        if not parent.is_dir:
            raise _err(errno.ENOTDIR)
        if whiteout.is_whiteout_name(name):
            raise _err(errno.ENOENT, name)
        found = self._found(parent, name)
        if found is None:
            raise _err(errno.ENOENT, name)
        return parent, found

    def unlink(self, parent_ino: int, name: bytes) -> None:
        self._need_upper()
        parent, found = self._existing(parent_ino, name)
        if found.is_dir:
            raise _err(errno.EISDIR, name)
        inode = self._inode_for(parent, name, found)
        need_wh = self._lower_has(parent, name)
        udfd = self._upper_dir(parent)
        if found.layer == UPPER:
            if found.st.st_blocks and found.st.st_nlink == 1:
                # Its blocks are freed by the reaper, not while the caller waits.
                need_wh = not self._take_out(udfd, name, need_wh) and need_wh
            else:
                os.unlink(name, dir_fd=udfd)  # frees nothing: as fast as a rename
        if need_wh:
            self.whiteouts.make(udfd, name)
        parent.version += 1
        self.table.unlink(inode, parent, name)

    def rmdir(self, parent_ino: int, name: bytes) -> None:
        upper = self._need_upper()
        parent, found = self._existing(parent_ino, name)
        if not found.is_dir:
            raise _err(errno.ENOTDIR, name)
        inode = self._inode_for(parent, name, found)
        if self._listing(inode):
            raise _err(errno.ENOTEMPTY, name)
        need_wh = self._lower_has(parent, name)
        udfd = self._upper_dir(parent)
        path = (*parent.dir_path(), name)
        if found.layer == UPPER:
            # Empty through the mount: only whiteouts and opaque markers are left in
            # it, and nothing below it is cached (its subdirectories went first).
            upper.drop(path)
            try:
                need_wh = not self._take_out(udfd, name, need_wh) and need_wh
            except PermissionError:
                # Moving a directory writes its "..": not where it is read-only to a
                # server that is not root. Remove it in place.
                _empty_dir(upper.dir_fd(path))
                os.rmdir(name, dir_fd=udfd)
                upper.forget(path, subtree=False)
        if need_wh:
            self.whiteouts.make(udfd, name)
        parent.version += 1
        inode.dir_layers = ()
        self.table.detach(inode)

    def _take_out(self, udfd: int, name: bytes, whiteout: bool) -> bool:
        """Remove NAME (a file, or a directory tree) from the upper directory `udfd`
        by moving it into the work directory, where the reaper deletes it (reaper.py);
        with `whiteout`, atomically leave a whiteout in its place where the host
        permits (RENAME_WHITEOUT, as fuse-overlayfs's hide_node). Whether it did."""
        tmp = self.copyup.tmpname()
        assert self.reaper is not None
        if whiteout and self.whiteouts.chardev:
            try:
                syscalls.renameat2(udfd, name, self.workfd, tmp, syscalls.RENAME_WHITEOUT)
            except OSError as exc:
                if exc.errno not in (errno.EINVAL, errno.EPERM, errno.ENOSYS,
                                     errno.EOPNOTSUPP):
                    raise
            else:
                self.reaper.put(tmp)
                return True
        os.rename(name, tmp, src_dir_fd=udfd, dst_dir_fd=self.workfd)
        self.reaper.put(tmp)
        return False

    # -- rename ---------------------------------------------------------------------------

    def _has_lower(self, found: Found) -> bool:
        return any(li != UPPER for li in found.dir_layers) if self.upper else True

    def rename(self, parent_ino: int, name: bytes, new_parent_ino: int, new_name: bytes,
               flags: int) -> None:
        upper = self._need_upper()
        if flags & ~(syscalls.RENAME_NOREPLACE | syscalls.RENAME_EXCHANGE):
            raise _err(errno.EINVAL)
        exchange = bool(flags & syscalls.RENAME_EXCHANGE)
        self._check_name(new_name)
        parent, src = self._existing(parent_ino, name)
        nparent = self.table.get(new_parent_ino)
        if not nparent.is_dir:
            raise _err(errno.ENOTDIR)
        dst = self._found(nparent, new_name)
        if dst is not None and flags & syscalls.RENAME_NOREPLACE:
            raise _err(errno.EEXIST, new_name)
        if dst is None and exchange:
            raise _err(errno.ENOENT, new_name)
        sinode = self._inode_for(parent, name, src)
        dinode = self._inode_for(nparent, new_name, dst) if dst is not None else None
        if dinode is sinode:
            return  # two names of one file: rename(2) does nothing
        if dst is not None and not exchange:
            if src.is_dir and not dst.is_dir:
                raise _err(errno.ENOTDIR, new_name)
            if dst.is_dir and not src.is_dir:
                raise _err(errno.EISDIR, new_name)
        # Without redirect_dir a directory with lower parts cannot move (ovl_rename).
        if src.is_dir and self._has_lower(src):
            raise _err(errno.EXDEV, name)
        if exchange and dst is not None and dst.is_dir and self._has_lower(dst):
            raise _err(errno.EXDEV, new_name)
        if dst is not None and dst.is_dir and not exchange:
            assert dinode is not None
            if self._listing(dinode):
                raise _err(errno.ENOTEMPTY, new_name)
        if not src.is_dir:
            self._copy_up(sinode)
        if exchange and dinode is not None and not dinode.is_dir:
            self._copy_up(dinode)
        sdfd = self._upper_dir(parent)
        ddfd = self._upper_dir(nparent)
        ppath = parent.dir_path()
        npath = nparent.dir_path()
        parent.version += 1
        nparent.version += 1
        if exchange:
            assert dinode is not None
            # A directory landing where a lower one is must hide it (opaque).
            opaque_at_new = src.is_dir and self._lower_has(nparent, new_name)
            opaque_at_old = dinode.is_dir and self._lower_has(parent, name)
            syscalls.renameat2(sdfd, name, ddfd, new_name, syscalls.RENAME_EXCHANGE)
            upper.forget((*ppath, name))
            upper.forget((*npath, new_name))
            if opaque_at_new:
                self._set_opaque((*npath, new_name))
            if opaque_at_old:
                self._set_opaque((*ppath, name))
            self.table.rename(sinode, parent, name, nparent, b"\0")
            self.table.rename(dinode, nparent, new_name, parent, name)
            self.table.rename(sinode, nparent, b"\0", nparent, new_name)
            return
        src_wh = self._lower_has(parent, name)
        opaque = src.is_dir and self._lower_has(nparent, new_name) and not \
            upper.marks((*ppath, name)).opaque
        dwh = WhiteoutWriter.find(ddfd, new_name) if dst is None or dst.layer != UPPER else None
        if dst is not None and dst.is_dir and dst.layer == UPPER:
            _empty_dir(upper.dir_fd((*npath, new_name)))
        if src.is_dir and dwh == "dev":
            os.unlink(new_name, dir_fd=ddfd)  # a directory cannot replace a device
        moved = False
        if src_wh and self.whiteouts.chardev:
            try:
                syscalls.renameat2(sdfd, name, ddfd, new_name, syscalls.RENAME_WHITEOUT)
                moved = True
                src_wh = False
            except OSError as exc:
                if exc.errno not in (errno.EINVAL, errno.EPERM, errno.ENOSYS,
                                     errno.EOPNOTSUPP):
                    raise
        if not moved:
            os.rename(name, new_name, src_dir_fd=sdfd, dst_dir_fd=ddfd)
        upper.forget((*ppath, name))
        upper.forget((*npath, new_name))
        if dwh == "file":
            WhiteoutWriter.remove_file_form(ddfd, new_name)
        if src_wh:
            self.whiteouts.make(sdfd, name)
        if opaque:
            self._set_opaque((*npath, new_name))
        if dinode is not None:
            if dinode.is_dir:
                dinode.dir_layers = ()
                self.table.detach(dinode)
            else:
                self.table.unlink(dinode, nparent, new_name)
        self.table.rename(sinode, parent, name, nparent, new_name)

    def _set_opaque(self, path: Path) -> None:
        assert self.upper is not None
        self.whiteouts.set_opaque(self.upper.dir_fd(path))
        self.upper.forget(path)

    # -- attributes: changes ------------------------------------------------------------------

    def setattr(self, ino: int, change: SetAttr, fh: int | None, uid: int) -> Attr:
        inode = self.table.get(ino)
        known: os.stat_result | None = None  # the real stat, where no copy-up follows
        if change.mode is None and change.uid is None and change.gid is None \
                and change.size is None:
            st, layer, path = self._real_stat(inode)
            if change.atime_ns in (None, st.st_atime_ns) and change.mtime_ns in (
                    None, st.st_mtime_ns):
                # ctime only, or times as they are: the writeback cache flushes an
                # inode's times after an unlink or rename of it (fuse_flush_times).
                # No copy-up.
                return self._make_attr(inode, st, layer, path)
            if layer is not None and layer.upper:
                known = st
        self._need_upper()
        if not inode.is_dir and not inode.links:
            return self._setattr_open(inode, change, fh)
        if inode.is_dir:
            self._upper_dir(inode)
        else:
            self._copy_up(inode, data=change.size != 0)
        assert self.upper is not None
        _, dfd, name = self._locate(inode)
        target = name if name is not None else b"."
        real = known or os.stat(target, dir_fd=dfd, follow_symlinks=False)
        meta = self._meta(self.upper, dfd, name, real)
        mode = meta.mode
        if change.uid is not None or change.gid is not None:
            suid = meta.uid if change.uid is None else self.uids.store(change.uid)
            sgid = meta.gid if change.gid is None else self.gids.store(change.gid)
            if not stat.S_ISDIR(mode):
                mode = _kill_suid(mode)  # chown clears them (chown(2)); the fs must, as
                # libfuse's default FUSE_CAP_HANDLE_KILLPRIV leaves it to us
            if change.mode is not None:
                mode = stat.S_IFMT(mode) | stat.S_IMODE(change.mode)
            written = self.writer.set(dfd, target, suid, sgid, mode, meta.rdev, real=real)
        elif change.mode is not None:
            mode = stat.S_IFMT(mode) | stat.S_IMODE(change.mode)
            written = self.writer.set(dfd, target, -1, -1, mode, meta.rdev, real=real)
        else:
            written = False
        if not written and change.size is None and change.atime_ns is None \
                and change.mtime_ns is None:
            # The owner and mode it had (tar's fchown to the owner it made the file
            # with): nothing changed, not even ctime.
            return self._make_attr(inode, real, self.upper, None)
        if change.size is not None:
            if stat.S_ISDIR(real.st_mode):
                raise _err(errno.EISDIR)
            if self.writeback and change.mtime_ns is None and change.size == real.st_size:
                # truncate(2) to the size the file has: the file's times move (ext4,
                # as under the kernel's overlayfs), but a writeback-cache client keeps
                # its own and moves them only for a new size (fuse_do_setattr).
                self.stale_times.extend(
                    (p.ino, n) for p, n in inode.links)
            h = self._files.get(fh) if fh is not None else None
            if h is not None and h.upper:
                os.ftruncate(h.fd, change.size)
            else:
                fd = os.open(target, os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                             dir_fd=dfd)
                try:
                    os.ftruncate(fd, change.size)
                finally:
                    os.close(fd)
            if uid != 0 and mode & (stat.S_ISUID | stat.S_ISGID) and change.mode is None:
                killed = _kill_suid(mode)
                if killed != mode:
                    self.writer.set(dfd, target, -1, -1, killed, meta.rdev)
        if change.atime_ns is not None or change.mtime_ns is not None:
            now = real
            if change.size is not None and change.mtime_ns is None:
                now = os.stat(target, dir_fd=dfd, follow_symlinks=False)  # truncated
            times = (now.st_atime_ns if change.atime_ns is None else change.atime_ns,
                     now.st_mtime_ns if change.mtime_ns is None else change.mtime_ns)
            os.utime(target, ns=times, dir_fd=dfd, follow_symlinks=False)
        return self._attr(inode)

    def _setattr_open(self, inode: Inode, change: SetAttr, fh: int | None) -> Attr:
        """setattr of a file removed from the tree but still open: through its
        descriptor, where it is an upper file (a lower one cannot change)."""
        h = self._files.get(fh) if fh is not None else None
        if h is None:
            h = next((x for x in self._files.values() if x.inode is inode), None)
        if h is None:
            raise _err(errno.ENOENT)
        if not h.upper:
            if change.mode is None and change.uid is None and change.gid is None \
                    and change.size is None:
                # The kernel's writeback cache flushes times of every open inode
                # (fuse_flush_times): a lower file cannot take them, and need not.
                return self._attr(inode)
            raise _err(errno.ENOENT)
        fd = h.fd
        if change.uid is not None or change.gid is not None:
            os.fchown(fd, -1 if change.uid is None else self.uids.store(change.uid),
                      -1 if change.gid is None else self.gids.store(change.gid))
        if change.mode is not None:
            os.fchmod(fd, stat.S_IMODE(change.mode))
        if change.size is not None:
            wfd = os.open(fd_path(fd), os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.ftruncate(wfd, change.size)
            finally:
                os.close(wfd)
        if change.atime_ns is not None or change.mtime_ns is not None:
            now = os.fstat(fd)
            os.utime(fd, ns=(now.st_atime_ns if change.atime_ns is None else change.atime_ns,
                             now.st_mtime_ns if change.mtime_ns is None else change.mtime_ns))
        return self._attr(inode)

    # -- xattrs -----------------------------------------------------------------------

    def _xattr_target(self, inode: Inode) -> bytes | int:
        """A /proc path (not to be followed) of the inode's real file, or the fd of a
        file removed from the tree but still open."""
        if not inode.is_dir and not inode.links:
            fd = self._open_fd(inode)
            if fd is None:
                raise _err(errno.ENOENT)
            return fd
        _, dfd, name = self._locate(inode)
        return proc_path(dfd, name) if name is not None else proc_path(dfd)

    def _check_xattrs(self) -> None:
        if not self.xattrs:
            raise _err(errno.ENOSYS)  # noxattrs=1: the kernel then answers EOPNOTSUPP

    def getxattr(self, ino: int, name: bytes) -> bytes | None:
        """The value of the xattr NAME; None where there is none (ENODATA)."""
        self._check_xattrs()
        real = stored_xattr(name)
        if real is None:
            return None
        inode = self.table.get(ino)
        if not inode.is_dir and inode.links:
            # The kernel asks for security.capability before every write(2) and
            # chown (file_remove_privs; FUSE has no S_NOSEC), almost always of a
            # file that has none. A file's names change only through fs/ (setxattr,
            # copy-up, which forget them) or lose one (a write or chown drops
            # security.capability): a name not listed is absent without a syscall,
            # a listed one is read for real.
            names = inode.xattrs
            if names is None:
                target = self._xattr_target(inode)
                assert isinstance(target, bytes)
                names = inode.xattrs = frozenset(
                    os.fsencode(n) for n in os.listxattr(target, follow_symlinks=False))
            if real not in names:
                return None
        try:
            return _getxattr(self._xattr_target(inode), real)
        except OSError as exc:
            if exc.errno == errno.ENODATA:
                return None
            raise

    def listxattr(self, ino: int) -> list[bytes]:
        self._check_xattrs()
        target = self._xattr_target(self.table.get(ino))
        names = (os.listxattr(target) if isinstance(target, int)
                 else os.listxattr(target, follow_symlinks=False))
        out = []
        for n in names:
            shown = shown_xattr(os.fsencode(n))
            if shown is not None:
                out.append(shown)
        return out

    def setxattr(self, ino: int, name: bytes, value: bytes) -> None:
        self._check_xattrs()
        real = stored_xattr(name)
        if real is None:
            raise _err(errno.EPERM)
        inode = self.table.get(ino)
        self._need_upper()
        if inode.links or inode.is_dir:
            self._copy_up(inode)
        inode.xattrs = None
        target = self._xattr_target(inode)
        if isinstance(target, int):
            os.setxattr(target, real, value)
        else:
            os.setxattr(target, real, value, follow_symlinks=False)

    def removexattr(self, ino: int, name: bytes) -> None:
        self._check_xattrs()
        real = stored_xattr(name)
        if real is None:
            raise _err(errno.ENODATA)
        inode = self.table.get(ino)
        self._need_upper()
        # Nothing to remove: no copy-up (ovl_xattr_set checks the lower first).
        _getxattr(self._xattr_target(inode), real)
        if inode.links or inode.is_dir:
            self._copy_up(inode)
        inode.xattrs = None
        target = self._xattr_target(inode)
        if isinstance(target, int):
            os.removexattr(target, real)
        else:
            os.removexattr(target, real, follow_symlinks=False)

    # -- files -----------------------------------------------------------------------------

    def _new_fh(self) -> int:
        fh = self._next_fh
        self._next_fh += 1
        return fh

    def _add_file(self, fd: int, inode: Inode, upper: bool, kill_priv: bool) -> int:
        fh = self._new_fh()
        self._files[fh] = FileHandle(fd, inode, upper, kill_priv)
        inode.opened += 1
        return fh

    def _open_backing(self, inode: Inode, flags: int) -> tuple[int, bool]:
        oflags = self._backing_flags(flags)
        if not inode.links:
            fd = self._open_fd(inode)
            if fd is None:
                raise _err(errno.ENOENT)
            h = next(x for x in self._files.values() if x.inode is inode)
            if not h.upper and oflags & os.O_ACCMODE != os.O_RDONLY:
                raise _err(errno.ENOENT)  # never write to a lower layer
            return os.open(fd_path(fd), oflags & ~os.O_NOFOLLOW), h.upper
        layer, dfd, name = self._locate(inode)
        assert name is not None
        return os.open(name, oflags, dir_fd=dfd), layer.upper

    def open(self, ino: int, flags: int, uid: int) -> int:
        inode = self.table.get(ino)
        if inode.is_dir:
            raise _err(errno.EISDIR)
        writing = flags & os.O_ACCMODE != os.O_RDONLY or flags & os.O_TRUNC
        if writing and inode.links:
            self._copy_up(inode, data=not flags & os.O_TRUNC)
        fd, upper = self._open_backing(inode, flags)
        return self._add_file(fd, inode, upper, bool(writing) and uid != 0)

    def read(self, fh: int, off: int, size: int) -> bytes:
        h = self._files[fh]
        if not h.upper and h.inode.layer == UPPER and self.upper is not None \
                and h.inode.links:
            # Copied up since it was opened: read the copy (overlayfs does so since
            # Linux 4.19, "ovl_real_fdget").
            fd, upper = self._open_backing(h.inode, os.O_RDONLY)
            os.close(h.fd)
            h.fd, h.upper = fd, upper
        return os.pread(h.fd, size, off)

    def _remove_privs(self, h: FileHandle) -> None:
        """An unprivileged writer clears setuid/setgid (file_remove_privs); with
        FUSE_CAP_HANDLE_KILLPRIV on, the kernel leaves it to the filesystem. Once per
        open file."""
        h.kill_priv = False
        st = os.fstat(h.fd)
        killed = _kill_suid(st.st_mode)
        if killed != st.st_mode:
            os.fchmod(h.fd, stat.S_IMODE(killed))

    def write(self, fh: int, off: int, data: bytes) -> int:
        h = self._files[fh]
        if h.kill_priv:
            self._remove_privs(h)
        view = memoryview(data)
        total = 0
        while view:
            n = os.pwrite(h.fd, view, off + total)
            if n == 0:
                break
            total += n
            view = view[n:]
        return total

    def release(self, fh: int) -> None:
        h = self._files.pop(fh)
        os.close(h.fd)
        self.table.release(h.inode)

    def fsync(self, fh: int, datasync: bool) -> None:
        if not self.fsync_enabled:
            return
        h = self._files[fh]
        if datasync:
            os.fdatasync(h.fd)
        else:
            os.fsync(h.fd)

    def fallocate(self, fh: int, mode: int, off: int, length: int) -> None:
        """fallocate(2) of the upper file, `mode` passed through: the kernel's
        overlayfs calls the upper file's (ovl_fallocate), so the upper filesystem's
        answer, errno included, is the answer. A file open for writing was copied up
        at open, and the kernel sends fallocate for no other (vfs_fallocate: EBADF)."""
        h = self._files[fh]
        if not h.upper:
            raise _err(errno.EBADF)
        if h.kill_priv:
            self._remove_privs(h)  # ext4 and xfs do, at fallocate (file_modified)
        syscalls.fallocate(h.fd, mode, off, length)


def _getxattr(target: bytes | int, name: bytes) -> bytes:
    if isinstance(target, int):
        return os.getxattr(target, name)
    return os.getxattr(target, name, follow_symlinks=False)


def _kill_suid(mode: int) -> int:
    """mode without setuid, and without setgid where group-executable (chown(2))."""
    mode &= ~stat.S_ISUID
    if mode & stat.S_IXGRP:
        mode &= ~stat.S_ISGID
    return mode


def _remove(dirfd: int, name: bytes) -> None:
    try:
        st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(name, dir_fd=dirfd)
    else:
        os.unlink(name, dir_fd=dirfd)


def _empty_dir(dirfd: int) -> None:
    """Remove what is left in an upper directory that looks empty through the mount:
    whiteouts, opaque markers (and anything hidden by them)."""
    for name in os.listdir(proc_path(dirfd)):
        _remove(dirfd, name)
