"""File locks for the image store: flock(2) on small lock files and on temp entries.

The store is shared by every sbx process of a user, with no daemon to serialise
them, so each process takes advisory locks the way containers/storage and
charliecloud do: a lock file per resource, locked with flock(2). The kernel drops a
flock lock when the last descriptor of its open file description closes, so a
process killed with SIGKILL never leaves a lock held; that is what lets the store
tell a stale temp entry (its owner's lock is free) from one still being written.

Owns only the locking primitive. It must not import the rest of sbx beyond
`sandbox.errors`, and never touches namespaces.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from pathlib import Path
from types import TracebackType

from sandbox.errors import SbxError, SyscallError

_POLL_S = 0.02


class LockTimeout(SbxError):
    """A lock was not acquired within its timeout."""

    def __init__(self, path: Path, timeout: float) -> None:
        self.path = path
        super().__init__(
            f"timed out after {timeout:g}s waiting for lock {path}",
            hint="another sbx process is using the image store; wait for it or stop it",
        )


def _flock(fd: int, op: int) -> bool:
    """flock(fd, op); False when a LOCK_NB request would block."""
    while True:
        try:
            fcntl.flock(fd, op)
            return True
        except InterruptedError:
            continue
        except BlockingIOError:
            return False
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                return False
            raise


class FileLock:
    """An flock(2) lock on `path`, created (mode 0600) if missing.

    Exclusive by default; `shared=True` takes a shared (reader) lock. Not reentrant:
    flock locks belong to the open file description, so a second FileLock on the same
    path in the same process is a different lock and an exclusive one would deadlock
    against the first. Use it as a context manager, or acquire()/release().
    """

    def __init__(self, path: Path, *, shared: bool = False) -> None:
        self.path = path
        self.shared = shared
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, *, blocking: bool = True, timeout: float | None = None) -> bool:
        """Take the lock: wait for it (forever, or `timeout` seconds and then raise
        LockTimeout), or with blocking=False try once and return False if it is taken."""
        if self._fd is not None:
            raise RuntimeError(f"lock {self.path} is already held by this object")
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise SyscallError.from_oserror("open lock file", exc) from None
        op = fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX
        try:
            if not blocking:
                got = _flock(fd, op | fcntl.LOCK_NB)
            elif timeout is None:
                got = _flock(fd, op)
            else:
                deadline = time.monotonic() + timeout
                while not (got := _flock(fd, op | fcntl.LOCK_NB)):
                    if time.monotonic() >= deadline:
                        raise LockTimeout(self.path, timeout)
                    time.sleep(_POLL_S)
        except BaseException:
            os.close(fd)
            raise
        if not got:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        # Closing the only descriptor releases the flock; no explicit LOCK_UN needed.
        os.close(fd)

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def lock_fd(fd: int) -> None:
    """Take an exclusive flock on an already-open descriptor (a temp file or dir the
    caller is writing), held until the descriptor is closed."""
    _flock(fd, fcntl.LOCK_EX)


def try_lock_fd(fd: int) -> bool:
    """Try an exclusive flock on `fd` without blocking: True when it was free."""
    return _flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
