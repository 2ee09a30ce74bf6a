"""The few system calls fs/ needs that Python's os module lacks: renameat2(2),
fallocate(2) (os has only posix_fallocate, without a mode) and the FICLONE ioctl.
Owns their ctypes bindings and nothing else.

Like sandbox/runtime/syscalls.py for the runtime (which fs/ must not import), a failed
call raises OSError(errno, strerror, path) naming the operation's path.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import os

# linux/fs.h
RENAME_NOREPLACE = 1 << 0
RENAME_EXCHANGE = 1 << 1
RENAME_WHITEOUT = 1 << 2
# _IOW(0x94, 9, int), linux/fs.h: share the extents of a whole file (reflink).
FICLONE = 0x40049409
# linux/falloc.h: the modes FUSE passes on (fuse_file_fallocate refuses the others)
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_ZERO_RANGE = 0x10

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_renameat2 = getattr(_libc, "renameat2", None)
if _renameat2 is not None:
    _renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                           ctypes.c_uint]
    _renameat2.restype = ctypes.c_int
# fallocate64 takes 64-bit offsets on every ABI (fallocate's off_t is 32 bits on
# 32-bit ones without _FILE_OFFSET_BITS=64).
_fallocate = getattr(_libc, "fallocate64", None) or getattr(_libc, "fallocate", None)
if _fallocate is not None:
    _fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    _fallocate.restype = ctypes.c_int


def renameat2(olddirfd: int, old: bytes, newdirfd: int, new: bytes, flags: int) -> None:
    """renameat2(2); ENOSYS where glibc (< 2.28) lacks the wrapper."""
    if _renameat2 is None:
        raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS), old)
    if _renameat2(olddirfd, old, newdirfd, new, flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), old, None, new)


def fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    """fallocate(2) of `fd`; the OSError carries the call's errno (ENOSYS where glibc
    (< 2.10) lacks the wrapper)."""
    if _fallocate is None:
        raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))
    if _fallocate(fd, mode, offset, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def ficlone(dst_fd: int, src_fd: int) -> bool:
    """Share src's extents with dst (btrfs, xfs); False where the filesystem cannot."""
    try:
        fcntl.ioctl(dst_fd, FICLONE, src_fd)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.ENOTTY, errno.EINVAL, errno.EXDEV,
                         errno.EBADF, errno.ENOSYS):
            return False
        raise
    return True
