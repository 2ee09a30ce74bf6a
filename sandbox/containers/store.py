"""Container records: what each container is, what it is doing, and its name.

Layout (the paths come from sandbox/paths.py, which owns them):

    DATA/containers/<id>/config.json   written once at create (and by rename): the
                                       runtime spec as OCI JSON plus sbx's fields
    DATA/containers/<id>/state.json    status, pids with start times, exit code,
                                       started/finished times; rewritten as it changes
    DATA/containers/<id>/lock          flock(2)ed by whoever changes the state
    DATA/container-names/<name>        a symlink to <id>: the name's one owner
    DATA/containers.lock               flock(2)ed while names are taken or given back

Records live in the data directory, not the runtime one, so that `ps -a` after a
reboot still lists every container (podman keeps them in its database under the
graph root for the same reason); what a reboot must wipe (generated /etc files) is
under the runtime directory. A record's status says "running" only as long as the
process watching the container (its monitor) is alive: a monitor killed with
SIGKILL, or a reboot, is seen by pid plus start time plus boot id (procfs.py), and
the container reads as exited with exit code -1, which is what podman's libpod
records when conmon left no exit file ("No exit file for container ... found",
oci_conmon_linux.go). (Tried here with podman 4.3.1: after `kill -9` of conmon the
container kept running and `podman ps` said "Up"; once the container was killed
too, `ps` still said "Up", and `podman stop` left it "Stopping". sbx's container
cannot outlive its monitor, so the record can always be settled.)

Crash safety and concurrency, with no daemon to serialise sbx processes:
- every file is replaced whole: written to a temp file in the same directory,
  fsynced (unless the container is --rm: it will not outlive the run), renamed over;
  readers (`ps`) take no lock and never see half a record;
- a new record is written in DATA/containers/.tmp-<id>/ and renamed into place, and a
  removed one is renamed to .trash-<id>/ before its files go, so a record appears and
  disappears at once;
- a name is taken with symlink(2), which fails if the name exists: of two racing
  `sbx run --name x`, exactly one gets it. Under containers.lock, a link whose
  container is gone is stale and taken over;
- state changes happen under the container's own lock (flock(2): the kernel drops it
  when its holder dies, so a SIGKILLed sbx never leaves it held).

The lock helper is a few lines of fcntl rather than sandbox/images/locks.py, whose
import pulls in the whole image package (~15 ms on the `sbx run` path). Nothing here
touches namespaces or imports the registry; removing a writable layer that holds
files of subordinate ids is done by a callable the caller passes (lifecycle.py).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

from sandbox import paths
from sandbox.containers import names as namegen
from sandbox.containers import procfs
from sandbox.errors import SbxError

# Record statuses (podman's define.ContainerStatus names): created (never started, or
# a start that failed), running, exited. "stopping" is not kept: `stop` only sends
# signals, and the monitor records the exit.
CREATED = "created"
RUNNING = "running"
EXITED = "exited"

STORE_VERSION = 1
UNKNOWN_EXIT = -1  # libpod's exit code when no exit status was recorded
MONITOR_DIED = ("the container's monitor is gone (killed, or the machine rebooted) and "
                "left no exit status")


class ContainerError(SbxError):
    """A container operation was refused or failed."""


class NoSuchContainer(ContainerError):
    def __init__(self, text: str) -> None:
        self.text = text
        super().__init__(f"no container with name or ID {text!r} found",
                         hint="`sbx ps -a` lists the containers")


class AmbiguousContainer(ContainerError):
    def __init__(self, text: str, ids: list[str]) -> None:
        shown = ", ".join(i[:12] for i in ids[:5])
        super().__init__(f"{text!r} matches {len(ids)} containers ({shown})",
                         hint="give more of the id, or the container's name")


class NameInUse(ContainerError):
    def __init__(self, name: str, owner: str) -> None:
        self.name = name
        self.owner = owner
        super().__init__(
            f'the container name "{name}" is already in use by {owner[:12]}',
            hint=f"remove that container (sbx rm {name}), rename it, or choose "
            "another --name",
        )


def now_ns() -> int:
    return time.time_ns()


def format_time(ns: int) -> str:
    """RFC 3339 in UTC with nanoseconds, as podman prints times
    (2024-01-01T00:00:00.000000000Z)."""
    secs, frac = divmod(ns, 1_000_000_000)
    t = time.gmtime(secs)
    return (f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T{t.tm_hour:02d}:"
            f"{t.tm_min:02d}:{t.tm_sec:02d}.{frac:09d}Z")


def parse_time(text: str) -> int | None:
    """Nanoseconds since the epoch from format_time's text (also without fraction,
    or with +00:00); None for "" or anything else."""
    if not text or len(text) < 20:
        return None
    try:
        import calendar

        secs = calendar.timegm((int(text[0:4]), int(text[5:7]), int(text[8:10]),
                                int(text[11:13]), int(text[14:16]), int(text[17:19]),
                                0, 0, 0))
        rest = text[19:]
        frac = 0
        if rest.startswith("."):
            digits = ""
            for c in rest[1:]:
                if not c.isdigit():
                    break
                digits += c
            frac = int((digits + "000000000")[:9]) if digits else 0
        return secs * 1_000_000_000 + frac
    except ValueError:
        return None


def new_id() -> str:
    """64 hex digits, as docker's and podman's ids."""
    return os.urandom(32).hex()


def initial_state() -> dict[str, Any]:
    return {
        "version": STORE_VERSION,
        "status": CREATED,
        "pid": 0,
        "pid_start": 0,
        "monitor_pid": 0,
        "monitor_start": 0,
        "boot_id": "",
        "exit_code": None,
        "oom_killed": False,
        "error": "",
        "started_at": "",
        "finished_at": "",
        "restart_count": 0,
    }


def effective_state(state: dict[str, Any]) -> dict[str, Any]:
    """The state as it really is: a "running" record whose monitor is no longer
    alive (or whose boot is over) is an exited container with an unknown status."""
    if state.get("status") != RUNNING:
        return state
    if procfs.is_running(state.get("monitor_pid", 0), state.get("monitor_start", 0),
                         state.get("boot_id", "")):
        return state
    out = dict(state)
    out["status"] = EXITED
    if out.get("exit_code") is None:
        out["exit_code"] = UNKNOWN_EXIT
        out["error"] = out.get("error") or MONITOR_DIED
    out["pid"] = 0
    return out


class Container:
    """One record as read from disk: its config and (effective) state."""

    __slots__ = ("config", "id", "raw_state", "state")

    def __init__(self, cid: str, config: dict[str, Any], state: dict[str, Any]) -> None:
        self.id = cid
        self.config = config
        self.raw_state = state
        self.state = effective_state(state)

    @property
    def name(self) -> str:
        return str(self.config.get("name", ""))

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def status(self) -> str:
        return str(self.state.get("status", CREATED))

    @property
    def running(self) -> bool:
        return self.status == RUNNING

    @property
    def pid(self) -> int:
        """The host pid of the container's pid 1 while it runs, else 0."""
        return int(self.state.get("pid") or 0) if self.running else 0

    def pid_alive(self) -> bool:
        """The recorded pid 1 still exists (a zombie counts: not reaped yet)."""
        st = self.raw_state
        return procfs.exists(st.get("pid", 0), st.get("pid_start", 0), st.get("boot_id", ""))

    def __repr__(self) -> str:
        return f"Container({self.short_id}, {self.name!r}, {self.status})"


# -- files ---------------------------------------------------------------------------
def _write_file(path: str, data: bytes, durable: bool) -> None:
    """Replace `path` whole: temp file in the same directory, fsync, rename."""
    tmp = f"{path}.tmp-{os.getpid()}-{os.urandom(4).hex()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if durable:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.close(fd)
    try:
        os.rename(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _dump(data: dict[str, Any]) -> bytes:
    return (json.dumps(data, indent=1, sort_keys=True) + "\n").encode()


def _read_json(path: str) -> dict[str, Any] | None:
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read())
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


class Lock:
    """An exclusive flock(2) on a lock file, held until release() or the end of the
    `with` block. The kernel drops it when the holder dies."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = -1

    def acquire(self) -> Lock:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
                         0o600)
        except (FileNotFoundError, NotADirectoryError):
            raise  # the directory is gone: the caller decides what that means
        except OSError as exc:
            raise ContainerError(f"can't open lock file {self.path}: {exc.strerror}") from None
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                break
            except InterruptedError:
                continue
            except BaseException:
                os.close(fd)
                raise
        self.fd = fd
        return self

    def try_acquire(self) -> bool:
        """Take the lock if it is free, without creating the file; False if taken."""
        fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        return True

    def release(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)  # closing the last descriptor drops the flock

    def __enter__(self) -> Lock:
        return self.acquire()

    def __exit__(self, *_exc: object) -> None:
        self.release()


# -- the store ---------------------------------------------------------------------------
class ContainerStore:
    """The user's container records. Cheap to make; every method reads the disk."""

    def __init__(self) -> None:
        self.root = paths.containers_dir()
        self.names_dir = paths.container_names_dir()

    def _ensure_dirs(self) -> None:
        for d in (self.root, self.names_dir):
            os.makedirs(d, mode=0o700, exist_ok=True)

    # -- reading -------------------------------------------------------------------
    def ids(self) -> list[str]:
        try:
            entries = os.listdir(self.root)
        except FileNotFoundError:
            return []
        return [e for e in entries if namegen.is_full_id(e)]

    def exists(self, cid: str) -> bool:
        return namegen.is_full_id(cid) and os.path.exists(paths.container_config_file(cid))

    def load(self, cid: str) -> Container | None:
        """The record of `cid`, or None when it does not exist (or is being removed)."""
        config = _read_json(paths.container_config_file(cid))
        if config is None:
            return None
        state = _read_json(paths.container_state_file(cid)) or initial_state()
        return Container(cid, config, state)

    def list(self) -> list[Container]:
        """Every readable record, oldest first (as podman's ps sorts)."""
        out = [c for c in (self.load(i) for i in self.ids()) if c is not None]
        out.sort(key=lambda c: str(c.config.get("created", "")))
        return out

    def lookup(self, text: str) -> Container:
        """The container `text` names: a full id, a name, or a unique id prefix."""
        if namegen.is_full_id(text):
            found = self.load(text)
            if found is not None:
                return found
        if namegen.is_valid(text):
            try:
                owner = os.readlink(paths.container_name_link(text))
            except OSError:
                owner = ""
            if owner and namegen.is_full_id(owner):
                found = self.load(owner)
                if found is not None:
                    return found
        if text and all(c in "0123456789abcdef" for c in text):
            matches = [i for i in self.ids() if i.startswith(text)]
            records = [c for c in (self.load(i) for i in matches) if c is not None]
            if len(records) == 1:
                return records[0]
            if len(records) > 1:
                raise AmbiguousContainer(text, [c.id for c in records])
        raise NoSuchContainer(text)

    def name_owner(self, name: str) -> str | None:
        """The id of the live container called `name`, or None."""
        try:
            owner = os.readlink(paths.container_name_link(name))
        except OSError:
            return None
        return owner if self.exists(owner) else None

    # -- writing -------------------------------------------------------------------
    def names_lock(self) -> Lock:
        self._ensure_dirs()
        return Lock(paths.containers_lock_file())

    def lock(self, cid: str) -> Lock:
        """The container's own lock (raises NoSuchContainer once it is removed)."""
        return _ContainerLock(cid)

    def _take_name(self, name: str, cid: str) -> None:
        """Point the name at `cid`; the names lock must be held."""
        link = paths.container_name_link(name)
        try:
            os.symlink(cid, link)
            return
        except FileExistsError:
            pass
        owner = self.name_owner(name)
        if owner is not None and owner != cid:
            raise NameInUse(name, owner)
        os.unlink(link)  # stale: its container is gone
        os.symlink(cid, link)

    def _release_name(self, name: str, cid: str) -> None:
        link = paths.container_name_link(name)
        with contextlib.suppress(OSError):
            if os.readlink(link) == cid:
                os.unlink(link)

    def create(self, cid: str, config: dict[str, Any], name: str | None, *,
               durable: bool = True) -> Container:
        """Write a new record with status "created" and take its name (generated when
        None). Raises NameInUse, leaving nothing behind."""
        if name is not None and not namegen.is_valid(name):
            raise ContainerError(
                f"invalid container name {name!r}",
                hint="names match [a-zA-Z0-9][a-zA-Z0-9_.-]* (as docker's and podman's)")
        self._ensure_dirs()
        tmp = paths.container_tmp_dir(cid)
        final = paths.container_dir(cid)
        state = initial_state()
        with self.names_lock():
            if name is None:
                for retry in range(100):
                    candidate = namegen.generate(retry)
                    try:
                        self._take_name(candidate, cid)
                        name = candidate
                        break
                    except NameInUse:
                        continue
                else:
                    raise ContainerError("could not find a free container name",
                                         hint="give one with --name")
            else:
                self._take_name(name, cid)
            config = {**config, "id": cid, "name": name}
            try:
                os.mkdir(tmp, 0o700)
                _write_file(os.path.join(tmp, "config.json"), _dump(config), durable)
                _write_file(os.path.join(tmp, "state.json"), _dump(state), durable)
                os.rename(tmp, final)
                if durable:
                    _fsync_dir(self.root)
            except BaseException:
                self._release_name(name, cid)
                _remove_plain(tmp)
                raise
        return Container(cid, config, state)

    def write_state(self, cid: str, state: dict[str, Any], *, durable: bool = True) -> None:
        """Replace the state (hold the container's lock). Raises NoSuchContainer if the
        record was removed meanwhile."""
        if not os.path.isdir(paths.container_dir(cid)):
            raise NoSuchContainer(cid)
        try:
            _write_file(paths.container_state_file(cid), _dump(state), durable)
        except FileNotFoundError:
            raise NoSuchContainer(cid) from None

    def update_state(self, cid: str, durable: bool = True, **changes: Any) -> dict[str, Any]:
        """Read, change and write the state (hold the container's lock)."""
        state = _read_json(paths.container_state_file(cid))
        if state is None:
            if not self.exists(cid):
                raise NoSuchContainer(cid)
            state = initial_state()
        state.update(changes)
        self.write_state(cid, state, durable=durable)
        return state

    def write_config(self, cid: str, config: dict[str, Any]) -> None:
        _write_file(paths.container_config_file(cid), _dump(config), True)

    def rename(self, container: Container, new_name: str) -> None:
        if not namegen.is_valid(new_name):
            raise ContainerError(f"invalid container name {new_name!r}",
                                 hint="names match [a-zA-Z0-9][a-zA-Z0-9_.-]*")
        with self.names_lock():
            current = self.load(container.id)
            if current is None:
                raise NoSuchContainer(container.id)
            if current.name == new_name:
                return
            self._take_name(new_name, container.id)
            try:
                self.write_config(container.id, {**current.config, "name": new_name})
            except BaseException:
                self._release_name(new_name, container.id)
                raise
            self._release_name(current.name, container.id)

    def remove(self, container: Container, remove_tree: Callable[[str], None]) -> None:
        """Remove the record and everything in its directory (the writable layer with
        it). The record disappears at once (a rename); `remove_tree` then deletes the
        files, which may need the user namespace. Raises NoSuchContainer if another
        process removed it first."""
        trash = paths.container_trash_dir(container.id)
        with self.names_lock():
            try:
                os.rename(paths.container_dir(container.id), trash)
            except FileNotFoundError:
                raise NoSuchContainer(container.id) from None
            except OSError as exc:
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
                # A .trash-<id> left by an earlier removal that died: finish it first.
                remove_tree(trash)
                os.rename(paths.container_dir(container.id), trash)
            self._release_name(container.name, container.id)
        remove_tree(trash)

    def leftovers(self) -> list[str]:
        """Directories that a create or remove killed halfway left (.tmp-*, .trash-*),
        whether or not their owner still works on them."""
        try:
            entries = os.listdir(self.root)
        except FileNotFoundError:
            return []
        return [os.path.join(self.root, e) for e in entries
                if e.startswith((".tmp-", ".trash-"))]

    def clean_leftovers(self, remove_tree: Callable[[str], None]) -> list[str]:
        """Remove what a killed create or remove left, and name links whose container
        is gone; returns the paths removed. A .tmp-<id> record is always stale under
        the names lock (creates hold it); a .trash-<id> one is stale when nobody
        holds its lock file (a removal holds the container's lock throughout, and the
        flock moves with the renamed directory)."""
        removed: list[str] = []
        with self.names_lock():
            for path in self.leftovers():
                if os.path.basename(path).startswith(".tmp-"):
                    _remove_plain(path)
                    removed.append(path)
            for name in self.stale_names():
                self.release_stale_name(name)
        removed += self._clean_run_dirs()
        for path in self.leftovers():
            if not os.path.basename(path).startswith(".trash-"):
                continue
            lock = Lock(os.path.join(path, "lock"))
            try:
                if not lock.try_acquire():
                    continue  # a removal in progress
            except (FileNotFoundError, NotADirectoryError):
                pass  # no lock file (never locked) or already gone
            try:
                remove_tree(path)
                removed.append(path)
            finally:
                lock.release()
        return removed

    def stale_names(self) -> list[str]:
        """Name links whose container is gone (call with the names lock held)."""
        try:
            entries = os.listdir(self.names_dir)
        except FileNotFoundError:
            return []
        return [n for n in entries if self.name_owner(n) is None]

    def release_stale_name(self, name: str) -> None:
        with contextlib.suppress(OSError):
            os.unlink(paths.container_name_link(name))


    def _clean_run_dirs(self) -> list[str]:
        """Runtime directories (generated /etc files) of containers that do not exist:
        a `sbx run` killed between writing them and writing the record. A creator
        holds the dir's .creating lock until its record exists, so a free lock and
        no record (checked after taking the lock) means nobody will use the dir."""
        removed = []
        try:
            entries = os.listdir(paths.container_run_dirs())
        except OSError:
            return removed
        for cid in entries:
            if not namegen.is_full_id(cid) or self.exists(cid):
                continue
            guard = Lock(paths.container_creating_lock(cid))
            try:
                if not guard.try_acquire():
                    continue  # being created right now
            except (FileNotFoundError, NotADirectoryError):
                pass  # no lock file: not made by a create in progress
            try:
                if self.exists(cid):
                    continue  # its create finished while we looked
                path = paths.container_run_dir(cid)
                _remove_plain(path)
                removed.append(path)
            finally:
                guard.release()
        return removed


class _ContainerLock(Lock):
    def __init__(self, cid: str) -> None:
        super().__init__(paths.container_lock_file(cid))
        self.cid = cid

    def acquire(self) -> Lock:
        try:
            super().acquire()
        except (FileNotFoundError, NotADirectoryError):
            raise NoSuchContainer(self.cid) from None
        # The record may have been renamed away while we waited for the lock.
        if not os.path.exists(paths.container_config_file(self.cid)):
            self.release()
            raise NoSuchContainer(self.cid)
        return self


def _remove_plain(path: str) -> None:
    """Remove a directory of plain files written by this module."""
    with contextlib.suppress(FileNotFoundError):
        for entry in os.listdir(path):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(path, entry))
        os.rmdir(path)


@contextlib.contextmanager
def locked(store: ContainerStore, cid: str) -> Iterator[Container]:
    """Hold the container's lock and yield its record as it is now."""
    with store.lock(cid):
        found = store.load(cid)
        if found is None:
            raise NoSuchContainer(cid)
        yield found


__all__ = [
    "CREATED",
    "EXITED",
    "RUNNING",
    "UNKNOWN_EXIT",
    "AmbiguousContainer",
    "Container",
    "ContainerError",
    "ContainerStore",
    "NameInUse",
    "NoSuchContainer",
    "effective_state",
    "format_time",
    "initial_state",
    "locked",
    "new_id",
    "now_ns",
    "parse_time",
]
