"""Differential harness for union filesystems: kernel overlayfs against a FUSE one.

The same lower layers are mounted twice, by the kernel's overlayfs (the reference,
"ref") and by the filesystem under test ("sut": sbx-fs, or fuse-overlayfs to
validate the harness), the same operations are applied to both, and what a
program can observe is compared: each operation's errno, then the whole tree.

Mounting overlayfs and FUSE, making 0/0 character-device whiteouts and chowning
to subordinate ids all need root of a user namespace, and pytest runs as real
root. So the harness is two processes:

- the *worker* (this file run as a script, `python fs_harness.py worker ROOT`)
  runs as the test user under `sbx unshare` (root of a user and mount namespace
  with the user's full subordinate map). It builds the layers, mounts both
  filesystems and forks one *executor* per mount, chrooted into it, so that
  absolute and `..` symlink targets resolve inside the mount and never reach the
  host (the chroot is the containment, not the paths the test draws);
- the *driver* (`Worker`, `Session`, in pytest) talks to the worker over its
  stdin and stdout, one JSON object a line, and compares the answers.

The worker half uses the standard library only: it is copied next to its data
(the checkout may be unreadable to the test user) and runs on the venv's python
without the tests directory on its path. Nothing here imports sbx.

Layer specs (JSON, lowest layer first) and operations (JSON objects with an "op"
key) are plain data, so a shrunk failure can be saved and replayed as is
(tests/regressions/fs/*.json).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import os
import select
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:  # the worker half runs without the tests directory on its path
    from helpers import User

JSON = dict[str, Any]
Tree = dict[str, JSON]

# The sbx-fs installed beside the Python that runs the tests (fs_rig.py does the same):
# a worktree's own venv tests its own fs/.
SBX_FS = str(Path(sys.executable).parent / "sbx-fs")
# The reason every differential test skips with until fs/ is installed.
SBX_FS_MISSING = f"fs under test missing: no {SBX_FS} (set SBX_FS_CMD to test another)"

# Timestamps below this are ones the test set (layer entries, utime); anything
# newer is "now" on one side or the other and compared only as "recent".
OLD_TIME_LIMIT = 1_500_000_000
LAYER_MTIME = 1_000_000_000

# Names overlayfs keeps to itself. With `userxattr` the kernel hides user.overlay.*
# from listxattr and refuses to set it ("Permission model" and "Non-standard
# behavior" in Documentation/filesystems/overlayfs.rst); fuse-overlayfs keeps its
# own state in user.fuseoverlayfs.* and in the containers' override_stat xattr.
PRIVATE_XATTR_PREFIXES = ("user.overlay.", "user.fuseoverlayfs.", "user.containers.")

WH_PREFIX = ".wh."
WH_OPAQUE = ".wh..wh..opq"


# --------------------------------------------------------------------------
# Layer specs: pure data, normalised so that every spec can be built as given.
# --------------------------------------------------------------------------

def _parents(path: str) -> list[str]:
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


def normalize_layer(entries: Iterable[JSON]) -> list[JSON]:
    """The entries of one layer that can be built as written, in build order.

    The first entry at a path wins; an entry under a non-directory of the same
    layer (a file, a whiteout...) is dropped, as a tar cannot hold both; a hard
    link must name a regular file of the same layer. Directories come first
    (parents before children), then files, symlinks, fifos and whiteouts, then
    hard links.
    """
    by_path: dict[str, JSON] = {}
    for entry in entries:
        path = entry["path"].strip("/")
        if not path or path in by_path:
            continue
        by_path[path] = {**entry, "path": path}
    kept: dict[str, JSON] = {}
    for path in sorted(by_path, key=lambda p: (p.count("/"), p)):
        entry = by_path[path]
        if any(p in kept and kept[p]["type"] != "dir" for p in _parents(path)):
            continue
        if any(p in by_path and p not in kept for p in _parents(path)):
            continue  # its parent was dropped
        kept[path] = entry
    links = [e for e in kept.values() if e["type"] == "link"]
    for link in links:
        target = kept.get(link["target"].strip("/"))
        if target is None or target["type"] != "file":
            del kept[link["path"]]
    order = {"dir": 0, "file": 1, "symlink": 1, "fifo": 1, "whiteout": 1, "link": 2}
    return sorted(kept.values(), key=lambda e: (order[e["type"]], e["path"].count("/"), e["path"]))


def normalize_layers(layers: Iterable[Iterable[JSON]]) -> list[list[JSON]]:
    """normalize_layer for each layer (lowest first)."""
    return [normalize_layer(layer) for layer in layers]


# --------------------------------------------------------------------------
# Worker half: runs as root of the test user's namespace.
# --------------------------------------------------------------------------

MNT_DETACH = 2


def _libc() -> ctypes.CDLL:
    # Loaded on first use, in the worker only (the driver never mounts).
    return ctypes.CDLL(None, use_errno=True)


def _die_with_parent() -> None:
    """prctl(PR_SET_PDEATHSIG, SIGKILL): a FUSE daemon or an executor must not
    outlive a worker that was killed; the namespace then goes with them."""
    _libc().prctl(1, signal.SIGKILL, 0, 0, 0)


def _libc_mount(source: str, target: str, fstype: str, flags: int, data: str) -> None:
    if _libc().mount(source.encode(), target.encode(), fstype.encode(), ctypes.c_ulong(flags),
                     data.encode()) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {fstype} ({data}): {os.strerror(err)}", target)


def _libc_umount(target: str, flags: int = 0) -> int:
    """umount2(2); the errno, 0 when it worked."""
    if _libc().umount2(target.encode(), flags) != 0:
        return ctypes.get_errno()
    return 0


def _data(spec: Mapping[str, Any]) -> bytes:
    """The bytes of a file entry or a write op: text repeated `repeat` times."""
    return spec.get("data", "").encode() * int(spec.get("repeat", 1))


def _set_meta(path: str, entry: Mapping[str, Any]) -> None:
    os.chown(path, entry.get("uid", 0), entry.get("gid", 0), follow_symlinks=False)
    if entry["type"] != "symlink":
        # chown clears setuid/setgid: the mode goes after it.
        os.chmod(path, entry.get("mode", 0o755 if entry["type"] == "dir" else 0o644))
        for name, value in entry.get("xattrs", {}).items():
            os.setxattr(path, name, value.encode(), follow_symlinks=False)


def build_layer(root: str, entries: Sequence[JSON], *, aufs_whiteouts: bool) -> None:
    """Make one layer directory from normalised entries.

    With aufs_whiteouts, whiteouts and opaque markers that the spec writes in the
    `.wh.` form (the OCI image-spec's layer format) are made as such; without, as
    overlayfs's own: a 0/0 character device and the `user.overlay.opaque=y` xattr
    ("whiteouts and opaque directories" in overlayfs.rst, user.* with userxattr).
    The reference layers are built without, since the kernel reads only its own form.
    """
    os.mkdir(root, 0o755)
    os.chmod(root, 0o755)
    dirs = [root]
    for entry in entries:
        path = os.path.join(root, entry["path"])
        for parent in _parents(entry["path"]):
            full = os.path.join(root, parent)
            if not os.path.lexists(full):
                os.mkdir(full)
                os.chmod(full, 0o755)
                dirs.append(full)
        kind = entry["type"]
        if kind == "dir":
            os.mkdir(path)
            _set_meta(path, entry)
            dirs.append(path)
            opaque = entry.get("opaque")
            if opaque == "wh" and aufs_whiteouts:
                with open(os.path.join(path, WH_OPAQUE), "wb"):
                    pass
            elif opaque:
                os.setxattr(path, "user.overlay.opaque", b"y")
        elif kind == "file":
            with open(path, "wb") as f:
                f.write(_data(entry))
            _set_meta(path, entry)
        elif kind == "symlink":
            os.symlink(entry["target"], path)
            _set_meta(path, entry)
        elif kind == "fifo":
            os.mkfifo(path)
            _set_meta(path, entry)
        elif kind == "whiteout":
            if entry.get("form") == "wh" and aufs_whiteouts:
                head, name = os.path.split(path)
                with open(os.path.join(head, WH_PREFIX + name), "wb"):
                    pass
            else:
                os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(0, 0))
        elif kind == "link":
            os.link(os.path.join(root, entry["target"]), path)
        else:
            raise ValueError(f"unknown layer entry type {kind!r}")
    # Fixed times, set last: making the children moved the directories' mtimes.
    # Counted over every entry, so that both builds of a spec (one with `.wh.`
    # files where the other has devices) give each path the same time; the
    # directories then get LAYER_MTIME (setting a time never moves a parent's).
    for when, entry in enumerate(entries, start=LAYER_MTIME + 1):
        path = os.path.join(root, entry["path"])
        if entry["type"] != "link" and os.path.lexists(path):
            os.utime(path, ns=(when * 10**9, when * 10**9), follow_symlinks=False)
    for d in sorted(dirs, key=len, reverse=True):
        os.utime(d, ns=(LAYER_MTIME * 10**9,) * 2, follow_symlinks=False)


def _errno_name(err: OSError) -> str:
    return errno.errorcode.get(err.errno or 0, str(err.errno))


def _xattrs(path: str) -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as err:
        return {"!error": _errno_name(err)}
    for name in sorted(names):
        if not name.startswith("user.") or name.startswith(PRIVATE_XATTR_PREFIXES):
            continue
        try:
            out[name] = os.getxattr(path, name, follow_symlinks=False).decode(errors="replace")
        except OSError as err:
            out[name] = "!" + _errno_name(err)
    return out


def _describe(path: str, st: os.stat_result) -> JSON:
    mode = st.st_mode
    mtime = st.st_mtime_ns // 10**9
    info: JSON = {
        "type": stat.filemode(mode)[0],
        "mode": oct(stat.S_IMODE(mode)),
        "uid": st.st_uid,
        "gid": st.st_gid,
        "nlink": st.st_nlink,
        "mtime": mtime if mtime < OLD_TIME_LIMIT else "recent",
        "ino": st.st_ino,
        "xattrs": _xattrs(path),
    }
    if stat.S_ISREG(mode):
        info["size"] = st.st_size
        h = hashlib.sha256()
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            try:
                while chunk := os.read(fd, 1 << 20):
                    h.update(chunk)
            finally:
                os.close(fd)
            info["sha256"] = h.hexdigest()[:16]
        except OSError as err:
            info["sha256"] = "!" + _errno_name(err)
    elif stat.S_ISLNK(mode):
        info["size"] = st.st_size
        info["target"] = os.readlink(path)
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        info["rdev"] = [os.major(st.st_rdev), os.minor(st.st_rdev)]
    return info


def snapshot(top: str = ".") -> Tree:
    """Everything observable below `top`, by path ("." is the root)."""
    tree: Tree = {}

    def walk(rel: str) -> None:
        path = top if rel == "." else os.path.join(top, rel)
        try:
            st = os.lstat(path)
        except OSError as err:
            tree[rel] = {"type": "!", "error": _errno_name(err)}
            return
        tree[rel] = _describe(path, st)
        if stat.S_ISDIR(st.st_mode):
            try:
                names = sorted(os.listdir(path))
            except OSError as err:
                tree[rel]["listdir"] = _errno_name(err)
                return
            for name in names:
                walk(name if rel == "." else f"{rel}/{name}")

    walk(".")
    return tree


def _open_write(path: str, flags: int, mode: int = 0o644) -> int:
    return os.open(path, os.O_WRONLY | os.O_NONBLOCK | flags, mode)


def _write_all(fd: int, data: bytes, offset: int | None = None) -> None:
    try:
        view = memoryview(data)
        pos = 0
        while pos < len(view):
            if offset is None:
                n = os.write(fd, view[pos:])
            else:
                n = os.pwrite(fd, view[pos:], offset + pos)
            pos += n
    finally:
        os.close(fd)


def apply_op(op: Mapping[str, Any]) -> None:
    """Run one operation on the filesystem the process is chrooted into.

    Paths are relative to the root and resolved by the kernel as a program's
    would be, through symlinks; the chroot keeps that inside the mount.
    """
    kind = op["op"]
    p = op.get("path", "")
    if kind == "write":  # open(O_CREAT|O_TRUNC) and write: copy-up, or create
        _write_all(_open_write(p, os.O_CREAT | os.O_TRUNC, op.get("mode", 0o644)), _data(op))
    elif kind == "create_excl":
        os.close(_open_write(p, os.O_CREAT | os.O_EXCL, op.get("mode", 0o644)))
    elif kind == "append":
        _write_all(_open_write(p, os.O_APPEND), _data(op))
    elif kind == "pwrite":  # a write into the middle: the copy-up must keep the rest
        _write_all(_open_write(p, 0), _data(op), offset=op["offset"])
    elif kind == "truncate":
        os.truncate(p, op["size"])
    elif kind == "mkdir":
        os.mkdir(p, op.get("mode", 0o755))
    elif kind == "rmdir":
        os.rmdir(p)
    elif kind == "unlink":
        os.unlink(p)
    elif kind == "rename":
        os.rename(op["src"], op["dst"])
    elif kind == "symlink":
        os.symlink(op["target"], p)
    elif kind == "link":
        os.link(op["src"], op["dst"], follow_symlinks=False)
    elif kind == "chmod":
        os.chmod(p, op["mode"])
    elif kind == "chown":
        os.chown(p, op["uid"], op["gid"], follow_symlinks=False)
    elif kind == "setxattr":
        os.setxattr(p, op["name"], op["value"].encode(), follow_symlinks=False)
    elif kind == "removexattr":
        os.removexattr(p, op["name"], follow_symlinks=False)
    elif kind == "utime":
        ns = op["mtime"] * 10**9
        os.utime(p, ns=(ns, ns), follow_symlinks=False)
    elif kind == "mkfifo":
        os.mkfifo(p, op.get("mode", 0o644))
    else:
        raise ValueError(f"unknown op {kind!r}")


def op_paths(op: Mapping[str, Any]) -> list[str]:
    """The paths an operation names (source first)."""
    return [op[k] for k in ("path", "src", "dst") if k in op]


def _realpath(path: str, follow_last: bool) -> str:
    """path with symlinks resolved, relative to "/" (the chroot), "." for the root.

    os.path.realpath of Python 3.11 recurses without end on a link such as
    `a -> ../a` at the root; this gives up after 40 links, as the kernel does
    (ELOOP), and leaves the rest unresolved."""
    todo = [c for c in path.split("/") if c not in ("", ".")]
    done: list[str] = []
    links = 0
    while todo:
        part = todo.pop(0)
        if part == "..":
            if done:
                done.pop()
            continue
        if not todo and not follow_last:
            done.append(part)
            break
        try:
            target = os.readlink("/" + "/".join([*done, part]))
        except OSError:
            done.append(part)
            continue
        links += 1
        if links > 40:
            return "/".join([*done, part, *todo])
        if target.startswith("/"):
            done = []
        todo = [c for c in target.split("/") if c not in ("", ".")] + todo
    return "/".join(done) or "."


def _resolve(paths: Iterable[str]) -> list[str]:
    """Where each path leads: with its last component followed (open, chmod) and
    not (rename, unlink, lchown)."""
    return [r for p in paths for r in (_realpath(p, False), _realpath(p, True))]


def _serve(req: JSON) -> JSON:
    """One executor request: an op (its errno), a snapshot, or path resolution."""
    if req["cmd"] == "tree":
        return {"tree": snapshot(".")}
    if req["cmd"] == "resolve":
        return {"paths": _resolve(req["paths"])}
    try:
        apply_op(req["op"])
    except OSError as err:
        return {"errno": _errno_name(err)}
    return {"ok": True}


def _executor(mountpoint: str, requests: int, replies: int) -> None:
    """Serve ops and snapshots from inside a chroot at mountpoint, until EOF."""
    os.chroot(mountpoint)
    os.chdir("/")
    os.umask(0)  # modes as the ops give them: nothing hidden by the umask
    with os.fdopen(requests, "r") as rx, os.fdopen(replies, "w") as tx:
        for line in rx:
            try:
                reply = _serve(json.loads(line))
            except Exception as exc:  # a harness bug: say so, do not die
                reply = {"crash": f"{type(exc).__name__}: {exc}"}
            tx.write(json.dumps(reply) + "\n")
            tx.flush()


class Executor:
    """A forked process chrooted into one mount; the worker's handle on it."""

    def __init__(self, mountpoint: str) -> None:
        req_r, req_w = os.pipe()
        rep_r, rep_w = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                _die_with_parent()
                # Only its own two pipe ends: an inherited copy of another
                # executor's request pipe, or of the driver's, would keep it from
                # ever seeing EOF.
                devnull = os.open(os.devnull, os.O_RDONLY)
                os.dup2(devnull, 0)
                keep = sorted({req_r, rep_w})
                os.closerange(3, keep[0])
                os.closerange(keep[0] + 1, keep[1])
                os.closerange(keep[1] + 1, 65536)
                _executor(mountpoint, req_r, rep_w)
            except BaseException as exc:
                print(f"executor {mountpoint}: {exc!r}", file=sys.stderr)
                code = 1
            finally:
                os._exit(code)
        os.close(req_r)
        os.close(rep_w)
        self.pid = pid
        self.tx: IO[str] = os.fdopen(req_w, "w")
        self.rx: IO[str] = os.fdopen(rep_r, "r")

    def send(self, req: JSON) -> None:
        self.tx.write(json.dumps(req) + "\n")
        self.tx.flush()

    def receive(self) -> JSON:
        line = self.rx.readline()
        if not line:
            raise RuntimeError("executor died (see the worker log)")
        reply: JSON = json.loads(line)
        if "crash" in reply:
            raise RuntimeError(f"executor: {reply['crash']}")
        return reply

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.tx.close()
        with contextlib.suppress(OSError):
            self.rx.close()
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)


def _mounted(path: str) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


@dataclass
class Mount:
    """One of the two filesystems of a case: its layers, dirs and executor."""

    name: str
    base: str
    lowers: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    executor: Executor | None = None

    @property
    def upper(self) -> str:
        return os.path.join(self.base, "upper")

    @property
    def work(self) -> str:
        return os.path.join(self.base, "work")

    @property
    def mnt(self) -> str:
        return os.path.join(self.base, "mnt")

    def options(self) -> str:
        # lowerdir lists the top layer first (overlayfs.rst, "Multiple lower layers").
        lowers = ":".join(reversed(self.lowers))
        return f"lowerdir={lowers},upperdir={self.upper},workdir={self.work}"


class Case:
    """One test case in the worker: layers built twice, mounted twice."""

    def __init__(self, base: str, layers: Sequence[Sequence[JSON]], sut_cmd: Sequence[str],
                 aufs: bool = True) -> None:
        """aufs: build the sut's layers with `.wh.` whiteouts where the spec has them
        (off only for the harness's self-test, kernel overlayfs against itself)."""
        self.base = base
        self.sut_cmd = list(sut_cmd)
        self.ref = Mount("ref", os.path.join(base, "ref"))
        self.sut = Mount("sut", os.path.join(base, "sut"))
        os.mkdir(base, 0o755)
        for m, aufs_here in ((self.ref, False), (self.sut, aufs)):
            os.mkdir(m.base, 0o755)
            for i, entries in enumerate(layers):
                lower = os.path.join(m.base, f"l{i}")
                build_layer(lower, entries, aufs_whiteouts=aufs_here)
                m.lowers.append(lower)
            for d in (m.upper, m.work, m.mnt):
                os.mkdir(d, 0o755)
                os.chmod(d, 0o755)
        self.mount()

    def mount(self) -> None:
        """Mount both over their layers (again, after unmount) and start the executors."""
        # The kernel in the user namespace: userxattr ("Permission model" in
        # overlayfs.rst) keeps overlay's metadata in user.overlay.* and turns
        # redirect_dir to nofollow, so renaming a lower directory is EXDEV.
        _libc_mount("overlay", self.ref.mnt, "overlay", 0, self.ref.options() + ",userxattr")
        self._start_sut()
        self.ref.executor = Executor(self.ref.mnt)
        self.sut.executor = Executor(self.sut.mnt)

    def _start_sut(self) -> None:
        log = open(os.path.join(self.base, "sut.log"), "ab")  # noqa: SIM115 - kept by Popen
        # -f: in the foreground, so the worker owns the daemon and can wait for it.
        argv = [*self.sut_cmd, "-f", "-o", self.sut.options(), self.sut.mnt]
        self.sut.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=log, close_fds=True,
                                            preexec_fn=_die_with_parent)
        log.close()
        deadline = time.monotonic() + 20
        while not _mounted(self.sut.mnt):
            if self.sut.process.poll() is not None or time.monotonic() > deadline:
                self.sut.process.kill()
                self.sut.process.wait()
                raise RuntimeError(f"{shlex.join(argv)} did not mount "
                                   f"(exit {self.sut.process.returncode}): {self.sut_log()}")
            time.sleep(0.005)

    def sut_log(self) -> str:
        try:
            with open(os.path.join(self.base, "sut.log"), "rb") as f:
                return f.read()[-4000:].decode(errors="replace")
        except OSError:
            return ""

    def both(self, req: JSON) -> tuple[JSON, JSON]:
        """Send req to both executors (they run at once) and return (ref, sut)."""
        assert self.ref.executor and self.sut.executor
        self.ref.executor.send(req)
        self.sut.executor.send(req)
        return self.ref.executor.receive(), self.sut.executor.receive()

    def resolve(self, paths: list[str]) -> list[str]:
        """Where paths lead in the reference mount, through symlinks (for taints)."""
        assert self.ref.executor
        self.ref.executor.send({"cmd": "resolve", "paths": paths})
        resolved: list[str] = self.ref.executor.receive()["paths"]
        return resolved

    def unmount(self) -> list[str]:
        """Stop the executors and unmount both; what went wrong, if anything."""
        problems: list[str] = []
        for m in (self.ref, self.sut):
            if m.executor:
                m.executor.close()
                m.executor = None
        if _mounted(self.ref.mnt) and (err := _libc_umount(self.ref.mnt)):
            problems.append(f"umount ref: {os.strerror(err)}")
            _libc_umount(self.ref.mnt, MNT_DETACH)
        proc, self.sut.process = self.sut.process, None
        if _mounted(self.sut.mnt) and (err := _libc_umount(self.sut.mnt)):
            problems.append(f"umount sut: {os.strerror(err)}")
            _libc_umount(self.sut.mnt, MNT_DETACH)
        if proc is not None:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                problems.append("the fs under test did not exit after umount")
                proc.kill()
                proc.wait()
            if proc.returncode != 0:
                problems.append(f"the fs under test exited {proc.returncode}: {self.sut_log()}")
        return problems

    def remount(self) -> None:
        """Unmount and mount again over the same upper: what was written must persist."""
        problems = self.unmount()
        if problems:
            raise RuntimeError("; ".join(problems))
        self.mount()

    def close(self) -> JSON:
        """Unmount both and remove the case."""
        problems = self.unmount()
        shutil.rmtree(self.base, ignore_errors=True)
        return {"ok": not problems, "problems": problems}


def _handle(case: Case | None, req: JSON, base: str) -> tuple[Case | None, JSON]:
    """One driver request; the case afterwards and the reply. base: where a new
    case goes."""
    cmd = req["cmd"]
    if cmd == "setup":
        if case is not None:
            case.close()
        return Case(base, req["layers"], req["sut"], aufs=req.get("aufs", True)), {"ok": True}
    if cmd == "teardown":
        return None, case.close() if case else {"ok": True, "problems": []}
    if case is None:
        return None, {"error": f"{cmd} before setup"}
    if cmd == "op" and req["op"]["op"] == "remount":
        case.remount()
        return case, {"ref": {"ok": True}, "sut": {"ok": True}, "resolved": []}
    if cmd == "op":
        resolved = case.resolve(op_paths(req["op"]))
        ref, sut = case.both({"cmd": "op", "op": req["op"]})
        return case, {"ref": ref, "sut": sut, "resolved": resolved}
    if cmd == "tree":
        ref, sut = case.both({"cmd": "tree"})
        return case, {"ref": ref["tree"], "sut": sut["tree"]}
    return case, {"error": f"unknown command {cmd!r}"}


def worker_main(root: str) -> int:
    """Serve the driver: one JSON request a line on stdin, one reply a line out,
    until EOF; then, or if the driver goes away, unmount and remove what is left."""
    # The protocol owns the original stdout; anything else printed goes to stderr.
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    case: Case | None = None
    count = 0
    try:
        for line in sys.stdin:
            req = json.loads(line)
            if req["cmd"] == "setup":
                count += 1
            try:
                case, reply = _handle(case, req, os.path.join(root, f"case{os.getpid()}-{count}"))
            except Exception as exc:
                reply = {"error": f"{type(exc).__name__}: {exc}",
                         "sut_log": case.sut_log() if case else ""}
            out.write(json.dumps(reply) + "\n")
            out.flush()
    finally:
        if case is not None:
            case.close()
    return 0


# --------------------------------------------------------------------------
# Driver half: runs in pytest, as real root.
# --------------------------------------------------------------------------

def sut_command() -> list[str]:
    """The filesystem under test: $SBX_FS_CMD (split like a shell), or sbx-fs."""
    return shlex.split(os.environ.get("SBX_FS_CMD", "")) or [SBX_FS]


def sut_missing_reason(cmd: Sequence[str]) -> str | None:
    """Why the differential tests cannot run with cmd, or None when they can."""
    if list(cmd) == [SBX_FS] and not os.access(SBX_FS, os.X_OK):
        return SBX_FS_MISSING
    if shutil.which(cmd[0]) is None:
        return f"fs under test missing: {cmd[0]} is not installed"
    return None


def is_fuse_overlayfs(cmd: Sequence[str]) -> bool:
    return os.path.basename(cmd[0]) == "fuse-overlayfs"


class WorkerError(RuntimeError):
    """The worker failed or stopped answering; carries the tail of its log."""


class Worker:
    """The worker process, started as the test user under `sbx unshare`.

    A worker that died or hung (killed after `timeout`) is started again on the
    next request, so that one broken case does not fail every case after it."""

    def __init__(self, user: User, sbx: Path, root: Path, timeout: float = 60) -> None:
        self.user = user
        self.sbx = sbx
        self.root = root
        self.timeout = timeout
        self.starts = 0
        self.script = root / "fs_harness.py"
        shutil.copyfile(__file__, self.script)
        self.script.chmod(0o644)
        self.log_path = root / "worker.log"
        self.cases = root / "cases"
        self.cases.mkdir(mode=0o755, exist_ok=True)
        os.chown(self.cases, user.uid, user.gid)
        self.proc = self._start()

    def _start(self) -> subprocess.Popen[bytes]:
        self.starts += 1
        with open(self.log_path, "ab") as log:
            return subprocess.Popen(
                [str(self.sbx), "unshare", sys.executable, str(self.script), "worker",
                 str(self.cases)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                cwd=str(self.root), env=self.user.env(), user=self.user.uid,
                group=self.user.gid, extra_groups=[],
                # Its own process group: a stuck FUSE mount ends with the group.
                start_new_session=True,
            )

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def request(self, req: JSON, timeout: float | None = None) -> JSON:
        """Send one request and wait for its reply."""
        if self.proc.poll() is not None:
            self.kill()  # what it left behind
            self.proc = self._start()
        assert self.proc.stdin and self.proc.stdout
        try:
            self.proc.stdin.write((json.dumps(req) + "\n").encode())
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise WorkerError(f"the worker is gone: {self.log_tail()}") from None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout or self.timeout)
        if not ready:
            self.kill()
            raise WorkerError(f"no answer to {req['cmd']} in {timeout or self.timeout} s "
                              f"(a hung mount?); worker log: {self.log_tail()}")
        line = self.proc.stdout.readline()
        if not line:
            raise WorkerError(f"the worker exited ({self.proc.wait()}): {self.log_tail()}")
        reply: JSON = json.loads(line)
        if "error" in reply:
            raise WorkerError(f"{req['cmd']}: {reply['error']}\n{reply.get('sut_log', '')}")
        return reply

    def kill(self) -> None:
        """Kill the worker's process group: it, the fs daemons, the executors."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def close(self) -> None:
        """Stop the worker: EOF makes it unmount what is left and exit."""
        if self.proc.poll() is None:
            assert self.proc.stdin
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=30)
        # Whatever it started (a FUSE daemon that outlived it) goes with the group.
        self.kill()


# --------------------------------------------------------------------------
# Comparison: what may differ, and why.
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class View:
    """What a rule sees: both trees now, the reference tree before the last op,
    and the case's layer specs (lowest first)."""

    ref: Tree
    sut: Tree
    layers: Sequence[Sequence[JSON]]


# (op, ref_result, sut_result) -> whether the op may end so on the two
ResultRule = Callable[[JSON, JSON, JSON], bool]
# (path, key, ref_info, sut_info, view) -> whether this attribute may differ here
AttrRule = Callable[[str, str, JSON, JSON, View], bool]
# (op, touched, ref_tree_before_op, layers) -> whether the op may end differently;
# touched: the paths it names, and where they lead through symlinks
OpRule = Callable[[JSON, Sequence[str], Tree, Sequence[Sequence[JSON]]], bool]
# (path, info) -> whether to leave this entry out of both trees
EntryRule = Callable[[str, JSON], bool]


@dataclass(frozen=True)
class Known:
    """A known difference between the reference and the fs under test, excluded.

    attr: this attribute may differ (key "links": which paths share an inode);
    result: the op may end differently, and leave the trees the same;
    diverges: this op may end differently, and what it names (and where that
    leads; with subtree, everything below it too) is not compared from then on;
    frees + marks: after an op marks matches, the attributes in frees of what it
    names are not compared (where they go, they go along);
    at_mount: the trees under these paths are not compared at all;
    hidden: this entry is left out.
    """

    key: str
    why: str
    seen: str = ""  # the shrunk case that showed it (layers lowest first; ops)
    attr: AttrRule | None = None
    result: ResultRule | None = None
    diverges: OpRule | None = None
    subtree: bool = False
    frees: tuple[str, ...] = ()
    marks: OpRule | None = None
    at_mount: Callable[[Sequence[Sequence[JSON]]], Iterable[str]] | None = None
    hidden: EntryRule | None = None


def _mode(info: JSON | None) -> int:
    return int(info["mode"], 8) if info and "mode" in info else 0


SUID_SGID = stat.S_ISUID | stat.S_ISGID


# Differences allowed for every fs under test: choices of the kernel that no
# program may rely on, or that a FUSE filesystem cannot reproduce.
ALWAYS: tuple[Known, ...] = (
    Known("dir-nlink",
          "overlayfs reports st_nlink 1 for a merged directory (it cannot count the "
          "union cheaply; find(1) takes 1 to mean 'unknown') and the real directory's "
          "count otherwise; no program may rely on either, so a directory's st_nlink "
          "is not compared",
          attr=lambda path, key, a, b, v: key == "nlink" and a["type"] == "d"),
    Known("lower-hardlink",
          "overlayfs in a user namespace has no inode index (index=on needs trusted.* "
          "xattrs and is off with userxattr: 'Inode index' in overlayfs.rst), so a "
          "lower hard link is broken on copy-up, and st_nlink of a lower file is the "
          "lower inode's, aliases hidden by whiteouts included. The issue asks the fs "
          "under test to keep such links linked instead. So the paths of a lower "
          "hard-link set are never compared by st_nlink, and once an op touches one of "
          "them, all of them (and where they are renamed to) only by type, and the "
          "results of xattr changes on them not at all. A rename between two of them "
          "replaces one in the kernel and does nothing under the fs under test (one "
          "file: POSIX rename(2)); both names are left out from then on "
          "(Tolerance.rename_between_links)",
          seen="l1: file b, link c -> b; write b; rename b c: b stays (kernel: gone)"),
    Known("unfiltered-whiteout",
          "the kernel lists a whiteout by name in readdir of a directory that exists "
          "in one layer only (it reads such a directory straight through, "
          "fs/overlayfs/readdir.c: ovl_dir_is_real), though lookup of the name fails "
          "with ENOENT. Real image layers never whiteout inside a directory no lower "
          "layer has. An entry that readdir lists and lstat cannot find is dropped "
          "from both trees",
          hidden=lambda path, info: info["type"] == "!" and info.get("error") == "ENOENT"),
    Known("rename-onto-own-link",
          "rename(2) of a name onto another hard link of the same file does nothing "
          "and succeeds (POSIX); overlayfs fails it with ESTALE when the file was "
          "copied up and linked (its two names resolve to different overlay dentries "
          "of one upper inode). Either answer leaves the tree as it was",
          seen="l0: file f; link f g; rename g f: ESTALE (sbx-fs, fuse-overlayfs: success)",
          result=lambda op, ref, sut: op["op"] == "rename" and ref.get("errno") == "ESTALE"
          and sut.get("ok", False)),
)


def hidden_lower_dirs(layers: Sequence[Sequence[JSON]]) -> set[str]:
    """Paths where a layer has a directory and a higher one a file, symlink or fifo."""
    dirs: set[str] = set()
    hidden: set[str] = set()
    for entries in layers:
        for e in entries:
            if e["type"] not in ("dir", "whiteout") and e["path"] in dirs:
                hidden.add(e["path"])
        for e in entries:
            dirs.update(_parents(e["path"]))
            if e["type"] == "dir":
                dirs.add(e["path"])
    return hidden


def looping_symlinks_under_dirs(layers: Sequence[Sequence[JSON]]) -> set[str]:
    """Paths where a layer has a symlink through itself (`a -> a`, `a -> /a`,
    `a -> a/b`) and a higher one a directory."""
    loops: set[str] = set()
    out: set[str] = set()
    for entries in layers:
        for e in entries:
            implied = _parents(e["path"])
            for p in [*implied, e["path"] if e["type"] == "dir" else None]:
                if p in loops:
                    out.add(p)
        for e in entries:
            if e["type"] == "symlink":
                base = "" if e["target"].startswith("/") else os.path.dirname(e["path"])
                goes = os.path.normpath(os.path.join("/", base, e["target"]))
                if goes == "/" + e["path"] or goes.startswith("/" + e["path"] + "/"):
                    loops.add(e["path"])
    return out


def _under(paths: Iterable[str], roots: Iterable[str]) -> bool:
    """Whether any of paths is one of roots or below one ("." is above all)."""
    roots = list(roots)
    return any(r == "." or p == r or p.startswith(r + "/") for p in paths for r in roots)


# The ops that can make a new entry.
CREATES = ("write", "create_excl", "mkdir", "mkfifo", "symlink", "link", "rename")


def stacked_aufs_opaque(layers: Sequence[Sequence[JSON]]) -> set[str]:
    """Directories opaque by a `.wh..wh..opq` file in one layer, below a directory
    opaque the same way in a lower layer."""
    seen: set[str] = set()
    out: set[str] = set()
    for entries in layers:
        marked = {e["path"] for e in entries if e["type"] == "dir" and e.get("opaque") == "wh"}
        out.update(p for p in marked if any(a in seen for a in _parents(p)))
        seen |= marked
    return out


def _names_fifo(touched: Iterable[str], tree: Tree) -> bool:
    return any(tree.get(p, {}).get("type") == "p" for p in touched)


# Differences of fuse-overlayfs 1.10 from the kernel, found by this harness, each
# with the shrunk case that showed it; they are excluded only when fuse-overlayfs
# is the fs under test (SBX_FS_CMD), to check the harness itself, never for sbx-fs.
FUSE_OVERLAYFS: tuple[Known, ...] = (
    Known("fo-parent-mtime",
          "fuse-overlayfs copies a child up into its parent's upper directory and leaves "
          "the parent with the time of that; the kernel puts the parent's times back "
          "after a copy-up (ovl_copy_up_one: ovl_set_timestamps), so copy-up alone "
          "never changes what a directory's mtime reads. Through the attribute cache "
          "the new time shows up a step or more later",
          seen="l0: dir c/d with c/d/a; unlink c/d/a: c reads a new mtime (kernel: the old)",
          attr=lambda path, key, a, b, v: key == "mtime" and a["type"] == "d"
          and isinstance(a["mtime"], int) and b["mtime"] == "recent"),
    Known("fo-copyup-suid",
          "fuse-overlayfs loses S_ISUID and S_ISGID on copy-up: a directory is made "
          "with mkdir(2), which ignores S_ISGID, and a file's owner is set after its "
          "mode, which clears both bits. Overlayfs keeps them (a copy-up keeps the "
          "attributes, 'Non-directories' in overlayfs.rst)",
          seen="l1: file b 02755 1000:1000; setxattr b user.a: b is 0755 (kernel: 02755)",
          attr=lambda path, key, a, b, v: key == "mode" and _mode(a) & ~SUID_SGID == _mode(b)),
    Known("fo-setgid-dir",
          "fuse-overlayfs gives what is made in a setgid directory the creator's "
          "group (it chowns every new entry to the caller's ids) and a new "
          "subdirectory no S_ISGID; the kernel gives the directory's group and "
          "the bit, as for any setgid directory",
          seen="l1: dir a/d/c 02775 0:1000; chmod a/d/c 02775; mkfifo a/d/c/d: gid 0 "
               "(kernel: 1000)",
          frees=("gid", "mode"), marks=lambda op, touched, tree, layers: op["op"] in CREATES
          and any(_mode(tree.get(os.path.dirname(p) or ".")) & stat.S_ISGID for p in touched)),
    Known("fo-write-keeps-suid",
          "a write clears S_ISUID and S_ISGID (group-executable) even for root in a "
          "user namespace, on ext4 and through overlayfs alike; through "
          "fuse-overlayfs the bits stay",
          seen="l2: file b 02755 0:0; pwrite b: b stays 02755 (kernel: 0755)",
          attr=lambda path, key, a, b, v: key == "mode" and a["type"] == "-"
          and _mode(b) & ~SUID_SGID == _mode(a)),
    Known("fo-truncate-mtime",
          "truncate(2) to the size a file already has sets its mtime in the kernel "
          "(do_truncate always passes ATTR_MTIME); fuse-overlayfs leaves the old time",
          seen="l1: empty file a; truncate a 0: the old mtime stays (kernel: now)",
          attr=lambda path, key, a, b, v: key == "mtime" and a["type"] == "-"
          and a["mtime"] == "recent" and isinstance(b["mtime"], int)),
    Known("fo-symlink-copyup",
          "fuse-overlayfs copies a symlink up (for a rename, say) without its owner "
          "and times: the copy belongs to the daemon's user and has the time of the "
          "copy. The kernel keeps both",
          seen="l1: symlink c (1000:1000); rename c b/c/d: owner 0:0, mtime now",
          attr=lambda path, key, a, b, v: a["type"] == "l" and key in ("uid", "gid", "mtime")),
    Known("fo-fifo-copyup",
          "fuse-overlayfs copies a lower fifo up wrongly: chmod, chown, utimes and "
          "xattr calls on it fail with EIO, or succeed and leave an empty regular file "
          "where the fifo was; so do a rename or link of it and an open for write. "
          "The kernel copies the node up as a fifo",
          seen="l0: fifo b; utime b: EIO, or b becomes an empty regular file",
          diverges=lambda op, touched, tree, layers: op["op"] not in ("unlink", "rmdir")
          and _names_fifo(touched, tree)),
    Known("fo-stacked-aufs-opaque",
          "a directory made opaque by a `.wh..wh..opq` file is not opaque for "
          "lookups in fuse-overlayfs when a parent of it was made opaque the same "
          "way in a lower layer: names of the layers below are found in it (rmdir "
          "succeeds) though readdir does not list them. With the xattr on either "
          "one it works",
          seen="l0: dir d with .wh..wh..opq, dir d/c/c; l1: dir d/c with .wh..wh..opq; "
               "rmdir d/c/c: succeeds (kernel: ENOENT)",
          diverges=lambda op, touched, tree, layers: _under(touched, stacked_aufs_opaque(layers)),
          subtree=True),
    Known("fo-hidden-dir-lookup",
          "where a lower directory is hidden by a higher layer's file, symlink or "
          "fifo, and a directory is at that path again (a higher layer's, or one "
          "made after the file was removed), lookups in fuse-overlayfs go past the "
          "file into the old directory: its entries are found (EEXIST on create, "
          "utimes succeeds) though readdir does not list them. In the kernel a "
          "non-directory ends the merge, and a new directory is opaque "
          "(overlayfs.rst: 'whiteouts and opaque directories')",
          seen="l0: dir c/a/a; l1: file c/a; l2: .wh.d in dir c/a; utime c/a/a: succeeds "
               "(kernel: ENOENT)",
          diverges=lambda op, touched, tree, layers: _under(touched, hidden_lower_dirs(layers)),
          subtree=True),
    Known("fo-looping-symlink",
          "a lower symlink that points through itself (`a -> a`, `a -> a/b`) under a "
          "higher layer's "
          "directory of the same name (with a subdirectory) makes fuse-overlayfs fail "
          "readdir of the parent, and lookups in the directory, with ENOMEM; the "
          "kernel never follows it",
          seen="l0: symlink a -> a; l1: file a/c/c; readdir of /: ENOMEM",
          at_mount=lambda layers: {os.path.dirname(p) or "."
                                   for p in looping_symlinks_under_dirs(layers)}),
    Known("fo-links-after-remount",
          "after a remount fuse-overlayfs counts one link too few for an upper hard "
          "link made of a copied-up lower file (st_nlink 1 for two names, 2 for "
          "three), and with two names shows them as two inodes",
          seen="l1: file d; mkdir a/e; link d a/e/e; remount: two inodes, st_nlink 1 "
               "(kernel: one, 2)",
          attr=lambda path, key, a, b, v: key in ("nlink", "links") and a["type"] != "d"
          and b["nlink"] < a["nlink"]),
)


# Known differences of sbx-fs itself, each an open bug of fs/ (issue 4), excluded so
# that the rest keeps being checked. Remove an entry when its bug is fixed: its
# regression case in tests/regressions/fs then guards the fix.
SBX_FS_KNOWN: tuple[Known, ...] = ()


@dataclass
class Tolerance:
    """What comparisons leave out; grows as a case goes on (paths that diverged)."""

    known: tuple[Known, ...]
    layers: Sequence[Sequence[JSON]] = ()
    lower_links: list[set[str]] = field(default_factory=list)
    # The current names of each lower hard-link set (index into lower_links), kept
    # through renames and links (moved, linked).
    link_names: dict[str, int] = field(default_factory=dict)
    # Compared by type only (lower hard links once touched).
    tainted: set[str] = field(default_factory=set)
    # Not compared at all (an op a known difference covers), or all below them.
    diverged: set[str] = field(default_factory=set)
    diverged_trees: set[str] = field(default_factory=set)
    # Attributes not compared, by path: mtimes of the parents of what diverged,
    # and what Known.frees says.
    freed: dict[str, set[str]] = field(default_factory=dict)

    def has(self, key: str) -> bool:
        return any(k.key == key for k in self.known)

    def is_diverged(self, path: str) -> bool:
        return path in self.diverged or _under([path], self.diverged_trees)

    def is_tainted(self, path: str) -> bool:
        return path in self.tainted or self.is_diverged(path)

    def touch(self, paths: Sequence[str]) -> None:
        """Note the paths an op touched: a lower hard-link set they meet is tainted,
        and anything a tainted or diverged path goes to (a rename, a link) is too."""
        for path in paths:
            if self.is_diverged(path):
                self.diverged.update(paths)
            elif path in self.tainted:
                self.tainted.update(paths)
            for key in list(self.freed.get(path, ())):
                self.free(paths, key)
            for group in self.lower_links:
                if path in group:
                    self.tainted.update(group)
                    self.tainted.update(paths)

    def diverges(self, op: JSON, tree: Tree, touched: Sequence[str]) -> bool:
        """Whether a known difference covers op, or op touches what diverged
        already; if so, what it touched diverged (too)."""
        for k in self.known:
            if k.marks and k.marks(op, touched, tree, self.layers):
                for key in k.frees:
                    self.free(touched, key)
        hit = [k for k in self.known
               if k.diverges and k.diverges(op, touched, tree, self.layers)]
        if not hit and not any(self.is_diverged(p) for p in touched):
            return False
        (self.diverged_trees if any(k.subtree for k in hit) else self.diverged).update(touched)
        self.free((os.path.dirname(p) or "." for p in touched), "mtime")
        return True

    def set_lower_links(self, groups: list[set[str]]) -> None:
        self.lower_links = groups
        self.link_names = {p: i for i, g in enumerate(groups) for p in g}

    def linked(self, src: str, dst: str) -> None:
        """A link(2): dst is one more name of src's lower hard-link set, if any."""
        if src in self.link_names:
            self.link_names[dst] = self.link_names[src]

    def rename_between_links(self, src: str, dst: str, touched: Sequence[str]) -> None:
        """lower-hardlink (ALWAYS), for rename(2): between two names of one lower
        hard-link set, once one was copied up, the kernel has two files and the
        rename replaces dst, while the fs under test keeps one file and, as POSIX
        says for two links of one file, does nothing. Both names diverge."""
        group = self.link_names.get(src)
        if group is not None and self.link_names.get(dst) == group and src != dst:
            self.diverged.update(touched)

    def moved(self, src: str, dst: str) -> None:
        """A rename: what is noted for src and below it is noted for dst too."""
        def under(p: str) -> str | None:
            if p == src:
                return dst
            return dst + p[len(src):] if p.startswith(src + "/") else None
        for noted in (self.tainted, self.diverged, self.diverged_trees):
            noted.update(d for p in list(noted) if (d := under(p)) is not None)
        for p, group in list(self.link_names.items()):
            if (d := under(p)) is not None:
                self.link_names[d] = group
        for p, keys in list(self.freed.items()):
            if (d := under(p)) is not None:
                self.freed.setdefault(d, set()).update(keys)

    def free(self, paths: Iterable[str], key: str) -> None:
        for p in paths:
            self.freed.setdefault(p, set()).add(key)

    def result_allowed(self, op: JSON, ref: JSON, sut: JSON) -> bool:
        if (op["op"] in ("setxattr", "removexattr") and self.has("lower-hardlink")
                and any(p in self.tainted for p in op_paths(op))):
            # The xattrs of a touched lower hard link are not compared (its names
            # share one inode in the fs under test, not in the kernel), so neither
            # is what an xattr change of one of its names finds.
            return True
        return any(k.result and k.result(op, ref, sut) for k in self.known)

    def hidden(self, path: str, info: JSON) -> bool:
        return any(k.hidden and k.hidden(path, info) for k in self.known)

    def attr_allowed(self, path: str, key: str, a: JSON, b: JSON, view: View) -> bool:
        if key == "nlink" and self.has("lower-hardlink") and any(
                path in g for g in self.lower_links):
            return True
        if key in self.freed.get(path, ()):
            return True
        return any(k.attr and k.attr(path, key, a, b, view) for k in self.known)


def lower_link_sets(tree: Tree) -> list[set[str]]:
    """Paths of the reference tree that share a lower inode, right after mounting.

    Taken from the reference mount before any op: every non-directory there is a
    lower file, and overlayfs reports the lower inode number for it."""
    groups: dict[int, set[str]] = {}
    for path, info in tree.items():
        if info["type"] not in ("d", "!") and info["nlink"] > 1:
            groups.setdefault(info["ino"], set()).add(path)
    return list(groups.values())


def _link_partners(tree: Tree) -> dict[str, tuple[str, ...]]:
    """For each non-directory, the other paths of the tree with its inode."""
    by_ino: dict[int, list[str]] = {}
    for path, info in tree.items():
        if info["type"] not in ("d", "!"):
            by_ino.setdefault(info["ino"], []).append(path)
    return {p: tuple(sorted(set(paths) - {p})) for paths in by_ino.values() for p in paths}


def compare_trees(ref: Tree, sut: Tree, tol: Tolerance) -> list[str]:
    """The differences between the two trees that tol does not allow, one a line.

    Inode numbers are not compared, but which paths share one (hard links) is."""
    ref = {p: i for p, i in ref.items() if not tol.hidden(p, i)}
    sut = {p: i for p, i in sut.items() if not tol.hidden(p, i)}
    view = View(ref, sut, tol.layers)
    diffs: list[str] = []
    ref_links, sut_links = _link_partners(ref), _link_partners(sut)
    for path in sorted(set(ref) | set(sut)):
        if tol.is_diverged(path):
            continue
        a, b = ref.get(path), sut.get(path)
        if a is None or b is None:
            info = a or b or {}
            diffs.append(f"{path}: only in {'sut' if a is None else 'ref'} ({info.get('type')}"
                         f"{' ' + info['error'] if 'error' in info else ''})")
            continue
        tainted = tol.is_tainted(path)
        keys = ["type"] if tainted else sorted((set(a) | set(b)) - {"ino"})
        for key in keys:
            if a.get(key) != b.get(key) and not tol.attr_allowed(path, key, a, b, view):
                diffs.append(f"{path}: {key} ref={a.get(key)!r} sut={b.get(key)!r}")
        if a["type"] != "d" and not tainted and not tol.attr_allowed(path, "links", a, b, view):
            diffs.extend(_compare_links(path, ref, ref_links, sut_links, tol))
    return diffs


def _compare_links(path: str, ref: Tree, ref_links: Mapping[str, tuple[str, ...]],
                   sut_links: Mapping[str, tuple[str, ...]], tol: Tolerance) -> list[str]:
    """Hard links: what shares an inode with path in the reference must in the fs
    under test; what shares one only in the fs under test must be a hard link the
    kernel reports under two numbers. Overlayfs without an index gives the name a
    copy-up went through its lower origin's st_ino and a later link of it the upper
    one (ovl_getattr in fs/overlayfs/inode.c; "Non-standard behavior" in
    overlayfs.rst), so st_ino alone cannot say two of its names are one file."""
    la = {p for p in ref_links.get(path, ()) if not tol.is_tainted(p)}
    lb = {p for p in sut_links.get(path, ()) if not tol.is_tainted(p)}
    diffs = []
    if la - lb:
        diffs.append(f"{path}: not a hard link of {sorted(la - lb)} in sut")
    for other in sorted(lb - la):
        if not (ref[path]["nlink"] > 1 and ref.get(other, {}).get("nlink", 0) > 1):
            diffs.append(f"{path}: shares an inode with {other} in sut only")
    return diffs


def compare_results(op: JSON, ref: JSON, sut: JSON, tol: Tolerance) -> str | None:
    """How one op ended differently on the two (errno by name, EXDEV included), or
    None if it did not, or tol allows it."""
    if ref == sut or tol.result_allowed(op, ref, sut):
        return None
    return f"ref {ref.get('errno', 'ok')}, sut {sut.get('errno', 'ok')}"


# --------------------------------------------------------------------------
# A case seen from the driver: apply ops, compare, keep the trace.
# --------------------------------------------------------------------------

class Mismatch(AssertionError):
    """The two filesystems answered differently."""


@dataclass
class Session:
    """One case, driven from pytest; the trace is what a regression file keeps."""

    worker: Worker
    layers: list[list[JSON]]
    sut_cmd: list[str]
    aufs: bool = True  # `.wh.` whiteouts in the sut's layers where the spec has them
    ops: list[JSON] = field(default_factory=list)
    tol: Tolerance = field(default_factory=lambda: Tolerance(()))
    ref_tree: Tree = field(default_factory=dict)

    def start(self) -> None:
        known = ALWAYS + (FUSE_OVERLAYFS if is_fuse_overlayfs(self.sut_cmd) else SBX_FS_KNOWN)
        self.tol = Tolerance(known, self.layers)
        for k in known:
            if k.at_mount:
                self.tol.diverged_trees.update(k.at_mount(self.layers))
        self.worker.request({"cmd": "setup", "layers": self.layers, "sut": self.sut_cmd,
                             "aufs": self.aufs})
        self.check_trees(initial=True)

    def apply(self, op: JSON) -> tuple[JSON, JSON]:
        """Apply op to both, then compare its results and the trees; raise Mismatch."""
        self.ops.append(op)
        reply = self.worker.request({"cmd": "op", "op": op})
        touched = [*op_paths(op), *reply["resolved"]]
        self.tol.touch(touched)
        if op["op"] == "rename":
            self.tol.rename_between_links(op["src"], op["dst"], touched)
            self.tol.rename_between_links(reply["resolved"][0], reply["resolved"][2], touched)
        if op["op"] == "link" and reply["ref"].get("ok"):
            self.tol.linked(op["src"], op["dst"])
        if op["op"] == "rename" and reply["ref"].get("ok"):
            self.tol.moved(op["src"], op["dst"])
            self.tol.moved(reply["resolved"][0], reply["resolved"][2])
        if not self.tol.diverges(op, self.ref_tree, touched):
            problem = compare_results(op, reply["ref"], reply["sut"], self.tol)
            if problem:
                raise Mismatch(f"{json.dumps(op)}: {problem}")
        self.check_trees()
        return reply["ref"], reply["sut"]

    def check_trees(self, initial: bool = False) -> None:
        reply = self.worker.request({"cmd": "tree"})
        ref, sut = reply["ref"], reply["sut"]
        if initial:
            self.tol.set_lower_links(lower_link_sets(ref))
        self.ref_tree = ref
        diffs = compare_trees(ref, sut, self.tol)
        if diffs:
            what = "after mounting" if initial else f"after {json.dumps(self.ops[-1])}"
            raise Mismatch(f"trees differ {what}:\n  " + "\n  ".join(diffs[:40]))

    def stop(self) -> None:
        reply = self.worker.request({"cmd": "teardown"})
        if reply["problems"]:
            raise Mismatch("teardown: " + "; ".join(reply["problems"]))

    def record(self, note: str = "") -> JSON:
        """The case as a regression file holds it."""
        return {"note": note, "found_with": shlex.join(self.sut_cmd),
                "layers": self.layers, "ops": self.ops}


def save_regression(directory: Path, case: Mapping[str, Any]) -> Path:
    """Write a shrunk failing case as DIR/<digest>.json; the same case, the same name."""
    body = {"layers": case["layers"], "ops": case["ops"]}
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:12]
    path = directory / f"{digest}.json"
    directory.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(case, indent=1, sort_keys=True) + "\n")
    return path


def replay(worker: Worker, sut_cmd: list[str], case: Mapping[str, Any], *, aufs: bool = True,
           on_step: Callable[[int], None] | None = None) -> None:
    """Run a saved case from the start; raises Mismatch where it differs."""
    session = Session(worker, normalize_layers(case["layers"]), sut_cmd, aufs)
    try:
        session.start()
        for i, op in enumerate(case["ops"]):
            if on_step:
                on_step(i)
            session.apply(op)
    except BaseException:
        with contextlib.suppress(Exception):  # the first failure is the one to report
            session.stop()
        raise
    session.stop()


def iter_regressions(directory: Path) -> Iterator[Path]:
    """The saved cases in directory, by name."""
    yield from sorted(directory.glob("*.json"))


# Kernel overlayfs behind fuse-overlayfs's command line, for the harness's
# self-test: compared with itself it must show no difference at all, and with
# its lower layers stacked upside down (--reverse, a broken fs) it must.
KERNEL_SUT = """#!/bin/sh
# usage: kernel-overlay [--reverse] -f -o lowerdir=...,upperdir=...,workdir=... MNT
set -eu
reverse=no
if [ "$1" = --reverse ]; then reverse=yes; shift; fi
if [ "$1" = -f ]; then shift; fi
[ "$1" = -o ] || { echo "usage: $0 [--reverse] -f -o OPTIONS MOUNTPOINT" >&2; exit 2; }
opts=$2 mnt=$3
if [ "$reverse" = yes ]; then
    lowers=${opts%%,upperdir=*}
    lowers=${lowers#lowerdir=}
    rev=$(printf '%s\n' "$lowers" | tr ':' '\n' | tac | paste -sd: -)
    opts="lowerdir=$rev,upperdir=${opts#*,upperdir=}"
fi
mount -t overlay overlay -o "$opts,userxattr" "$mnt"
# In the foreground, as the harness runs a FUSE filesystem: until unmounted.
while grep -q " $mnt " /proc/self/mountinfo; do sleep 0.02; done
"""


def write_kernel_sut(directory: Path) -> Path:
    """KERNEL_SUT as an executable in directory (which the test user can read)."""
    path = directory / "kernel-overlay"
    path.write_text(KERNEL_SUT)
    path.chmod(0o755)
    return path


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "worker":
        sys.exit(worker_main(sys.argv[2]))
    print("usage: fs_harness.py worker ROOT (run by tests/fs_harness.Worker)", file=sys.stderr)
    sys.exit(2)
