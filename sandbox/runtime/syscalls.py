"""The one door to the kernel: unshare, setns, mount, umount2, pivot_root, prctl, capset.

On Python 3.12+ `os.unshare`/`os.setns` are used; below that, and for the calls the
standard library lacks, ctypes with `use_errno=True`. (PyPI's python-unshare uses the
Python 2 C API and fails to import on Python 3.)

Every failure raises `SyscallError`, which names the operation, the path and the
errno text, as crun's `crun_make_error` and runc's `mountError` do.

`Syscalls` is a class so that tests can hand the runtime a `RecordingSyscalls` fake
(youki's `TestHelperSyscall`) and assert which calls would be made.
"""

from __future__ import annotations

import ctypes
import os
from typing import Any

from sandbox.errors import SyscallError

# <linux/sched.h>
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# <linux/mount.h>
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_SYNCHRONOUS = 16
MS_REMOUNT = 32
MS_MANDLOCK = 64
MS_DIRSYNC = 128
MS_NOSYMFOLLOW = 256
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_SILENT = 32768
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MNT_DETACH = 2

# <linux/prctl.h>
PR_SET_PDEATHSIG = 1
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_KEEPCAPS = 8
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4

# <linux/capability.h>
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


_libc: ctypes.CDLL | None = None


def libc() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        try:
            # The glibc soname; find_library would fork /sbin/ldconfig on every run.
            _libc = ctypes.CDLL("libc.so.6", use_errno=True)
        except OSError:  # musl and others
            from ctypes.util import find_library

            _libc = ctypes.CDLL(find_library("c"), use_errno=True)
    return _libc


def _check(ret: int, op: str, path: str | None = None) -> int:
    if ret < 0:
        raise SyscallError(op, ctypes.get_errno(), path)
    return ret


def _b(path: str | None) -> bytes | None:
    return None if path is None else os.fsencode(path)


class Syscalls:
    """Real system calls. One instance is enough; it holds no state."""

    def unshare(self, flags: int) -> None:
        if hasattr(os, "unshare"):  # Python 3.12+
            try:
                os.unshare(flags)
            except OSError as exc:
                raise SyscallError("unshare", exc.errno or 0) from None
            return
        _check(libc().unshare(ctypes.c_int(flags)), "unshare")

    def setns(self, fd: int, nstype: int = 0) -> None:
        if hasattr(os, "setns"):  # Python 3.12+
            try:
                os.setns(fd, nstype)
            except OSError as exc:
                raise SyscallError("setns", exc.errno or 0) from None
            return
        _check(libc().setns(ctypes.c_int(fd), ctypes.c_int(nstype)), "setns")

    def mount(
        self,
        source: str | None,
        target: str,
        fstype: str | None,
        flags: int = 0,
        data: str | None = None,
    ) -> None:
        ret = libc().mount(
            _b(source), _b(target), _b(fstype), ctypes.c_ulong(flags), _b(data)
        )
        if ret < 0:
            err = ctypes.get_errno()
            what = f"mount {fstype or 'bind'} {source or ''} on".replace("  ", " ")
            raise SyscallError(what, err, target)

    def umount2(self, target: str, flags: int = 0) -> None:
        _check(libc().umount2(_b(target), ctypes.c_int(flags)), "umount", target)

    def pivot_root(self, new_root: str, put_old: str) -> None:
        # glibc has no wrapper: syscall(SYS_pivot_root); 155 on x86_64, 41 on aarch64.
        nr = {"x86_64": 155, "aarch64": 41, "ppc64le": 203, "s390x": 217}.get(
            os.uname().machine, 155
        )
        _check(libc().syscall(ctypes.c_long(nr), _b(new_root), _b(put_old)),
               "pivot_root", new_root)

    def prctl(self, option: int, arg2: int = 0, arg3: int = 0) -> int:
        return _check(
            libc().prctl(ctypes.c_int(option), ctypes.c_ulong(arg2), ctypes.c_ulong(arg3),
                         ctypes.c_ulong(0), ctypes.c_ulong(0)),
            f"prctl({option})",
        )

    def capset(self, effective: int, permitted: int, inheritable: int) -> None:
        header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
        data = (_CapData * 2)()
        for i in range(2):
            shift = 32 * i
            data[i].effective = (effective >> shift) & 0xFFFFFFFF
            data[i].permitted = (permitted >> shift) & 0xFFFFFFFF
            data[i].inheritable = (inheritable >> shift) & 0xFFFFFFFF
        _check(libc().capset(ctypes.byref(header), data), "capset")

    def sethostname(self, name: str) -> None:
        raw = name.encode()
        _check(libc().sethostname(raw, ctypes.c_size_t(len(raw))), "sethostname", name)


class RecordingSyscalls(Syscalls):
    """A fake that records every call instead of making it, for unit tests."""

    def __init__(self, fail: dict[str, int] | None = None) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.fail = fail or {}  # op name -> errno to raise

    def _record(self, name: str, *args: Any) -> None:
        self.calls.append((name, args))
        if name in self.fail:
            raise SyscallError(name, self.fail[name], str(args[1]) if len(args) > 1 else None)

    def unshare(self, flags: int) -> None:
        self._record("unshare", flags)

    def setns(self, fd: int, nstype: int = 0) -> None:
        self._record("setns", fd, nstype)

    def mount(self, source: str | None, target: str, fstype: str | None, flags: int = 0,
              data: str | None = None) -> None:
        self._record("mount", source, target, fstype, flags, data)

    def umount2(self, target: str, flags: int = 0) -> None:
        self._record("umount2", target, flags)

    def pivot_root(self, new_root: str, put_old: str) -> None:
        self._record("pivot_root", new_root, put_old)

    def prctl(self, option: int, arg2: int = 0, arg3: int = 0) -> int:
        self._record("prctl", option, arg2, arg3)
        return 0

    def capset(self, effective: int, permitted: int, inheritable: int) -> None:
        self._record("capset", effective, permitted, inheritable)

    def sethostname(self, name: str) -> None:
        self._record("sethostname", name)
