"""The pyfuse3 adapter: FUSE requests in, overlay.py calls, FUSE replies out.

Owns: the pyfuse3.Operations subclass and the translation between pyfuse3's types
(EntryAttributes, FileInfo, SetattrFields, StatvfsData) and overlay.py's. Every handler
turns an OSError into pyfuse3.FUSEError(errno), as pyfuse3's own passthroughfs example
does, and anything else into EIO after logging it: an exception that escapes a handler
can end pyfuse3's main loop (STYLE.md). Imports nothing from `sandbox`.

The handlers are coroutines that never await: each request runs to completion before
the next starts, so overlay.py needs no locks (fuse-overlayfs likewise runs
single-threaded by default, `threaded=0`).

Caching (libfuse fuse_common.h; pyfuse3 docs "Operations"): entries and attributes
are cached by the kernel for `timeout` seconds (fuse-overlayfs's `timeout=`), negative
lookups included; every open sets keep_cache, since every change to a file goes
through this filesystem (lower layers never change, overlayfs.rst "Changes to
underlying filesystems") and the page cache stays valid; direct_io is never set, so
the kernel serves mmap, shared writable mappings included, from its page cache.
"""

from __future__ import annotations

import errno
import functools
import inspect
import logging
import signal
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ParamSpec, TypeVar

import pyfuse3

from fs.overlay import Attr, Overlay, SetAttr

log = logging.getLogger(__name__)

EXPIRE_WAIT = 0.2  # seconds a reply waits for an entry invalidation (_expire)
_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}

# readdir_reply(..., lookup=False): an entry the kernel already holds is sent by
# number and type alone, not stat-ed again for its attributes (overlay.readdir).
# Added by third_party/pyfuse3/0002-readdir-reply-without-lookup.patch; a stock
# pyfuse3 sends full attributes for every entry, as before.
try:
    _BARE_ENTRIES = "lookup" in inspect.signature(pyfuse3.readdir_reply).parameters
except (TypeError, ValueError):  # no signature to read: a stock build
    _BARE_ENTRIES = False

P = ParamSpec("P")
R = TypeVar("R")


def handler(fn: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    """Run a synchronous handler body as a pyfuse3 coroutine, translating errors."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        fs = args[0].fs  # type: ignore[attr-defined]
        try:
            return fn(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except OSError as exc:
            raise pyfuse3.FUSEError(exc.errno or errno.EIO) from None
        except Exception:
            log.exception("%s failed", fn.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None
        finally:
            if fs.to_trim:  # descriptors to close: rarely (layer.py)
                fs.end_request()

    return wrapper


class Operations(pyfuse3.Operations):
    """sbx-fs's FUSE operations over an Overlay."""

    supports_dot_lookup = True
    # The kernel opens and releases directories without asking (Linux >= 5.1,
    # FUSE_NO_OPENDIR_SUPPORT): two round trips saved per directory opened, and
    # `rm -rf` opens each twice. readdir and fsyncdir then get the inode number;
    # overlay.readdir keeps no state per open directory. Added to pyfuse3 by
    # third_party/pyfuse3/0003-no-opendir.patch, which resets this to False where
    # the kernel cannot; a stock pyfuse3 never reads it (opendir as before).
    no_opendir = hasattr(pyfuse3.Operations, "no_opendir")

    def __init__(self, fs: Overlay, *, timeout: float = 1.0, writeback: bool = False) -> None:
        super().__init__()
        self.fs = fs
        self.timeout = timeout
        # Read by pyfuse3's init handler (handlers.pxi, fuse_init) to ask for
        # FUSE_CAP_WRITEBACK_CACHE.
        self.enable_writeback_cache = writeback
        self._bare = pyfuse3.EntryAttributes()  # readdir's number-and-type entries

    def _entry(self, a: Attr) -> pyfuse3.EntryAttributes:
        e = pyfuse3.EntryAttributes()
        e.st_ino = pyfuse3.InodeT(a.ino)
        e.generation = 0
        e.entry_timeout = self.timeout
        e.attr_timeout = self.timeout
        e.st_mode = pyfuse3.ModeT(a.mode)
        e.st_nlink = a.nlink
        e.st_uid = a.uid
        e.st_gid = a.gid
        e.st_rdev = a.rdev
        e.st_size = a.size
        e.st_blksize = a.blksize
        e.st_blocks = a.blocks
        e.st_atime_ns = a.atime_ns
        e.st_mtime_ns = a.mtime_ns
        e.st_ctime_ns = a.ctime_ns
        return e

    def _negative(self) -> pyfuse3.EntryAttributes:
        e = pyfuse3.EntryAttributes()
        e.st_ino = pyfuse3.InodeT(0)  # cached as absent for entry_timeout
        e.entry_timeout = self.timeout
        e.attr_timeout = self.timeout
        return e

    def _fi(self, fh: int) -> pyfuse3.FileInfo:
        return pyfuse3.FileInfo(fh=pyfuse3.FileHandleT(fh), direct_io=False, keep_cache=True)

    # -- namespace -----------------------------------------------------------------

    @handler
    def lookup(self, parent_inode: int, name: bytes, ctx: Any) -> pyfuse3.EntryAttributes:
        attr = self.fs.lookup(parent_inode, name)
        return self._negative() if attr is None else self._entry(attr)

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        try:
            self.fs.forget(inode_list)
        except Exception:
            log.exception("forget failed")

    @handler
    def getattr(self, inode: int, ctx: Any) -> pyfuse3.EntryAttributes:
        return self._entry(self.fs.getattr(inode))

    @handler
    def setattr(self, inode: int, attr: pyfuse3.EntryAttributes, fields: pyfuse3.SetattrFields,
                fh: int | None, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        change = SetAttr(
            mode=attr.st_mode if fields.update_mode else None,
            uid=attr.st_uid if fields.update_uid else None,
            gid=attr.st_gid if fields.update_gid else None,
            size=attr.st_size if fields.update_size else None,
            atime_ns=attr.st_atime_ns if fields.update_atime else None,
            mtime_ns=attr.st_mtime_ns if fields.update_mtime else None,
        )
        entry = self._entry(self.fs.setattr(inode, change, fh, ctx.uid))
        if self.fs.stale_times:
            stale, self.fs.stale_times = self.fs.stale_times, []
            self._expire(stale)
        return entry

    def _expire(self, entries: list[tuple[int, bytes]]) -> None:
        """Make the kernel drop its dentries for `entries` (parent inode, name), so
        that an inode nobody holds is evicted and its next lookup reads the times of
        the upper file (overlay.py, setattr: the writeback cache keeps a regular
        file's mtime and ctime in the kernel, and FUSE has no notification that
        updates them). pyfuse3.invalidate_entry must not run in the thread that
        answers requests (its docs: it may wait for one), so a thread sends it while
        the reply waits, at most EXPIRE_WAIT seconds: long enough for the caller's
        next stat to see the new times, and no deadlock where a request queued
        behind this one holds the directory's lock."""
        done = threading.Event()

        def run() -> None:
            try:
                for parent, name in entries:
                    try:
                        pyfuse3.invalidate_entry(pyfuse3.InodeT(parent), name)
                    except OSError as exc:  # ENOENT: the kernel had no such entry
                        log.debug("invalidate_entry %r: %s", name, exc)
            finally:
                done.set()

        thread = threading.Thread(target=run, name="sbx-fs-expire", daemon=True)
        old = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)  # they go to the loop
        try:
            thread.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        done.wait(EXPIRE_WAIT)

    @handler
    def readlink(self, inode: int, ctx: Any) -> bytes:
        return self.fs.readlink(inode)

    @handler
    def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int,
              ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self._entry(self.fs.mknod(parent_inode, name, mode, rdev, ctx.uid, ctx.gid))

    @handler
    def mkdir(self, parent_inode: int, name: bytes, mode: int,
              ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self._entry(self.fs.mkdir(parent_inode, name, mode, ctx.uid, ctx.gid))

    @handler
    def unlink(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        self.fs.unlink(parent_inode, name)

    @handler
    def rmdir(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        self.fs.rmdir(parent_inode, name)

    @handler
    def symlink(self, parent_inode: int, name: bytes, target: bytes,
                ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self._entry(self.fs.symlink(parent_inode, name, target, ctx.uid, ctx.gid))

    @handler
    def rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int,
               name_new: bytes, flags: int, ctx: Any) -> None:
        self.fs.rename(parent_inode_old, name_old, parent_inode_new, name_new, flags)

    @handler
    def link(self, inode: int, new_parent_inode: int, new_name: bytes,
             ctx: Any) -> pyfuse3.EntryAttributes:
        return self._entry(self.fs.link(inode, new_parent_inode, new_name))

    # -- files -----------------------------------------------------------------------

    @handler
    def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        return self._fi(self.fs.open(inode, flags, ctx.uid))

    @handler
    def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
               ctx: pyfuse3.RequestContext) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        fh, attr = self.fs.create(parent_inode, name, mode, flags, ctx.uid, ctx.gid)
        return self._fi(fh), self._entry(attr)

    @handler
    def read(self, fh: int, off: int, size: int) -> bytes:
        return self.fs.read(fh, off, size)

    @handler
    def write(self, fh: int, off: int, buf: bytes) -> int:
        return self.fs.write(fh, off, buf)

    @handler
    def release(self, fh: int) -> None:
        self.fs.release(fh)

    @handler
    def fsync(self, fh: int, datasync: bool) -> None:
        self.fs.fsync(fh, datasync)

    @handler
    def fallocate(self, fh: int, mode: int, off: int, length: int) -> None:
        """fallocate(2), every mode the kernel passes on, to the upper file.

        Called only by a pyfuse3 that has the handler (third_party/pyfuse3's patch);
        a stock pyfuse3 registers none, never calls this, and the kernel answers
        fallocate(2) with EOPNOTSUPP itself. The kernel's cached attributes stay
        right without help: fuse_file_fallocate grows its i_size to off + length
        unless FALLOC_FL_KEEP_SIZE, drops the page cache of a punched or zeroed range
        and marks size and blocks stale, so the next stat asks getattr.
        """
        self.fs.fallocate(fh, mode, off, length)

    # -- directories -------------------------------------------------------------------

    @handler
    def opendir(self, inode: int, ctx: Any) -> int:
        return self.fs.opendir(inode)

    @handler
    def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        def emit(name: bytes, attr: Attr, next_id: int) -> bool:
            return pyfuse3.readdir_reply(token, pyfuse3.FileNameT(name), self._entry(attr),
                                         next_id)

        by_inode = self.no_opendir
        if not _BARE_ENTRIES:
            self.fs.readdir(fh, start_id, emit, by_inode=by_inode)
            return
        bare = self._bare

        def emit_known(name: bytes, ino: int, kind: int, next_id: int) -> bool:
            bare.st_ino = pyfuse3.InodeT(ino)
            bare.st_mode = pyfuse3.ModeT(kind)
            return pyfuse3.readdir_reply(token, pyfuse3.FileNameT(name), bare, next_id,
                                         lookup=False)  # type: ignore[call-arg]

        self.fs.readdir(fh, start_id, emit, emit_known, by_inode=by_inode)

    @handler
    def releasedir(self, fh: int) -> None:
        self.fs.releasedir(fh)

    @handler
    def fsyncdir(self, fh: int, datasync: bool) -> None:
        self.fs.fsyncdir(fh, datasync, by_inode=self.no_opendir)

    # -- the rest ---------------------------------------------------------------------

    @handler
    def statfs(self, ctx: Any) -> pyfuse3.StatvfsData:
        st = self.fs.statfs()
        out = pyfuse3.StatvfsData()
        out.f_bsize = st.f_bsize
        out.f_frsize = st.f_frsize
        out.f_blocks = st.f_blocks
        out.f_bfree = st.f_bfree
        out.f_bavail = st.f_bavail
        out.f_files = st.f_files
        out.f_ffree = st.f_ffree
        out.f_favail = st.f_favail
        out.f_namemax = st.f_namemax
        return out

    @handler
    def getxattr(self, inode: int, name: bytes, ctx: Any) -> bytes:
        value = self.fs.getxattr(inode, name)
        if value is None:
            raise pyfuse3.FUSEError(errno.ENODATA)  # the common answer: no OSError made
        return value

    @handler
    def listxattr(self, inode: int, ctx: Any) -> list[bytes]:
        return self.fs.listxattr(inode)

    @handler
    def setxattr(self, inode: int, name: bytes, value: bytes, ctx: Any) -> None:
        self.fs.setxattr(inode, name, value)

    @handler
    def removexattr(self, inode: int, name: bytes, ctx: Any) -> None:
        self.fs.removexattr(inode, name)


def fuse_errno(exc: BaseException) -> int:
    """The errno a handler replies for an exception (for tests)."""
    if isinstance(exc, pyfuse3.FUSEError):
        return exc.errno
    if isinstance(exc, OSError):
        return exc.errno or errno.EIO
    return errno.EIO

