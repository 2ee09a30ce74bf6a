"""Run a function with a container's filesystem as `/`, for `sbx cp` and `sbx export`.

A running container is joined: the child process enters the container's user
namespace, then its mount namespace (setns(2) resets root and cwd to that
namespace's root, which pivot_root made the container's root), so every path,
absolute symlinks included, resolves inside the container, as the kernel resolves
them for the container itself; owners read as the container sees them. The user
owns the container's user namespace, so setns needs no privilege (user_namespaces(7)).

A stopped container gets its root mounted again in a fresh user and mount
namespace with the container's own id map (overlay, the fuse driver's mount
program, or the vfs/--rootfs folder as it is), its volumes and bind mounts on top
(`volumes=True`, as docker mounts them for cp), then chroot(2); the container's lock
is held meanwhile so that it cannot start on the same upper directory.

Nothing may be imported after entering: the container's files are now `/`, and an
import would read the container's copy of a module path. What the functions need
is imported here, at the top. Results and errors travel back pickled; an SbxError
keeps its message, hint and exit code.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import signal
import stat  # noqa: F401 - used by archive inside the container; imported before entering
import tarfile  # noqa: F401 - likewise
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from sandbox import paths
from sandbox.containers import (
    archive,  # noqa: F401 - imported before entering
    procfs,
)
from sandbox.containers.store import Container, ContainerError, ContainerStore
from sandbox.errors import SbxError
from sandbox.runtime import idmap, rootfs, userns
from sandbox.runtime import syscalls as sc
from sandbox.runtime.spec import Mount

T = TypeVar("T")


class Failure(SbxError):
    """An error raised on the other side of a fork; `kind` is its class's name."""

    def __init__(self, message: str, hint: str | None, exit_code: int, kind: str) -> None:
        super().__init__(message, hint)
        self.exit_code = exit_code
        self.kind = kind


def _guard(fn: Callable[[], T]) -> tuple[Any, ...]:
    """Run fn; its value, or its error as plain data (which always unpickles)."""
    try:
        return ("ok", fn())
    except SbxError as exc:
        return ("err", exc.message, exc.hint, exc.exit_code, type(exc).__name__)
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        return ("err", f"{exc.strerror or exc}{where}", None, 125, type(exc).__name__)
    except Exception as exc:  # anything else, as text: never a traceback from a child
        return ("err", f"{type(exc).__name__}: {exc}", None, 125, type(exc).__name__)


def _unwrap(result: tuple[Any, ...]) -> Any:
    if result[0] == "ok":
        return result[1]
    _tag, message, hint, code, kind = result
    raise Failure(message, hint, code, kind)


# -- a plain forked helper, for the host's side of a copy -----------------------------
class Forked:
    """A function running in a forked child (no namespaces): the host's side of a
    copy runs there while this process runs the container's side."""

    def __init__(self, fn: Callable[[], Any], close: Sequence[int] = ()) -> None:
        r, w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            os.close(r)
            code = 0
            try:
                for fd in close:
                    os.close(fd)
                data = pickle.dumps(_guard(fn))
                with os.fdopen(w, "wb") as f:
                    f.write(data)
            except BaseException:
                code = 125
            finally:
                os._exit(code)
        os.close(w)
        self.r = r

    def result(self) -> Any:
        with os.fdopen(self.r, "rb") as f:
            data = f.read()
        os.waitpid(self.pid, 0)
        if not data:
            raise SbxError("the copying helper process died without a result")
        return _unwrap(pickle.loads(data))


# -- entering a container ------------------------------------------------------------
def _live_pid(container: Container) -> int | None:
    st = container.raw_state
    pid = int(st.get("pid") or 0)
    if container.running and pid and procfs.exists(pid, st.get("pid_start", 0),
                                                   st.get("boot_id", "")):
        return pid
    return None


def _join(pid: int, fn: Callable[[], T]) -> T:
    """fn() in the running container's user and mount namespaces."""
    try:
        user_fd = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
        mnt_fd = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise ContainerError(f"can't open the namespaces of the container's process "
                             f"{pid}: {exc.strerror}",
                             hint="it may have just exited; try again") from None

    def child() -> Any:
        sys = sc.Syscalls()
        sys.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
        sys.setns(user_fd, sc.CLONE_NEWUSER)
        sys.setns(mnt_fd, sc.CLONE_NEWNS)
        os.chdir("/")
        # As the container's root (keep-id leaves this process at the user's own id):
        # new files belong to root unless told otherwise, as files `sbx cp` writes do.
        with contextlib.suppress(OSError):
            os.setgroups([])
        with contextlib.suppress(OSError):
            os.setresgid(0, 0, 0)
            os.setresuid(0, 0, 0)
        return fn()

    try:
        helper = Forked(child)
    finally:
        os.close(user_fd)
        os.close(mnt_fd)
    return helper.result()  # type: ignore[no-any-return]


def _user_binds(container: Container, mounts: Sequence[Mount]) -> list[Mount]:
    """The container's volumes and host bind mounts (not sbx's /etc files, devices
    or --init binary)."""
    run_dir = paths.container_run_dir(container.id)
    out = []
    for m in mounts:
        if not m.is_bind or not m.source:
            continue
        if m.source.startswith(run_dir + "/") or m.destination.startswith("/dev/"):
            continue
        if m.destination in ("/dev", "/proc", "/sys", "/run/sbx-init"):
            continue
        out.append(m)
    return out


def _run_mount_program(argv: list[str], target: str) -> None:
    """A root filesystem's mount program (sbx-fs): it daemonizes once mounted."""
    before = os.stat(target).st_dev
    pid = os.fork()
    if pid == 0:
        try:
            os.execv(argv[0], argv)
        finally:
            os._exit(127)
    _pid, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0 or os.stat(target).st_dev == before:
        raise SbxError(f"{os.path.basename(argv[0])} could not mount the container's root "
                       f"on {target}", hint="its message is above")


def _mounted(container: Container, fn: Callable[[], T], volumes: bool) -> T:
    """fn() chrooted into the stopped container's root, mounted in a new namespace."""
    from sandbox.containers import specjson

    config = container.config
    try:
        spec = specjson.from_json(config["spec"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ContainerError(f"the record of container {container.short_id} is damaged "
                             f"({type(exc).__name__}: {exc})") from None
    if config.get("layers"):
        from sandbox.storage import overlay

        overlay.ContainerLayer(paths.container_layer_dir(container.id)).create()
    uid, gid, username, _home = idmap.current_user()
    maps = idmap.plan(uid, gid, username, config.get("userns") == "keep-id")
    root = spec.root
    binds = _user_binds(container, spec.mounts) if volumes else []
    owner = (spec.process.user.uid, spec.process.user.gid)

    def inside() -> Any:
        sys = sc.Syscalls()
        ex = rootfs.Executor(root.path, sys, owner)
        if root.mount_program:
            sys.mount(None, "/", None, sc.MS_REC | sc.MS_SLAVE, None)
            _run_mount_program(list(root.mount_program), root.path)
        else:
            ex.prepare_root(root.mount, root.mount_cwd)
        for m in binds:
            ex.run(rootfs.Step("bind", m.destination, source=m.source,
                               options=tuple(m.options)))
        if root.readonly:
            ex.remount_readonly(ex.rootfs)
        old = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        os.chroot(ex.rootfs)
        os.chdir("/")
        try:
            return _guard(fn)
        finally:
            # Out of the chroot again to unmount: a FUSE daemon ends with its mount.
            os.fchdir(old)
            os.chroot(".")
            if root.mount_program:
                with contextlib.suppress(SbxError):
                    sys.umount2(ex.rootfs, sc.MNT_DETACH)

    return _unwrap(userns.call(inside, maps, mount_ns=True))  # type: ignore[no-any-return]


def mount_points(container: Container) -> frozenset[str]:
    """Where a running container has mounts (its /proc/PID/mountinfo, whose mount
    points are relative to that process's root: proc(5)); empty when stopped."""
    pid = _live_pid(container)
    if pid is None:
        return frozenset()
    points = set()
    try:
        with open(f"/proc/{pid}/mountinfo", "rb") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 4:
                    raw = fields[4].decode("utf-8", "surrogateescape")
                    # mountinfo escapes space, tab, newline and backslash as \ooo
                    points.add(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)),
                                      raw))
    except OSError:
        return frozenset()
    points.discard("/")
    return frozenset(points)


def call(store: ContainerStore, container: Container, fn: Callable[[], T], *,
         volumes: bool = True) -> T:
    """fn() with the container's filesystem as `/`: joined when it runs, mounted
    (with its volumes and binds, unless not `volumes`) when it does not."""
    pid = _live_pid(container)
    if pid is not None:
        return _join(pid, fn)
    with store.lock(container.id):
        current = store.load(container.id)
        if current is None:
            raise ContainerError(f"container {container.short_id} was removed")
        pid = _live_pid(current)
        if pid is not None:  # started meanwhile
            return _join(pid, fn)
        return _mounted(current, fn, volumes)
