"""Start, stop, kill, wait for and remove containers: the verbs, over store and monitor.

Library code: raises ContainerError (and friends) and never prints. The rules are
podman's where sbx copies them:

- `start` of a running container does nothing; a start runs under the container's
  lock, so two `sbx start` of one container start it once.
- `stop` sends the stop signal (the image's StopSignal, or --stop-signal, default
  SIGTERM) and, after the timeout, SIGKILL (podman: "StopSignal SIGTERM failed to
  stop container in 10 seconds, resorting to SIGKILL"); it returns once the exit is
  recorded. Pid 1 of a pid namespace ignores signals it has no handler for
  (pid_namespaces(7)), which is why `sleep` needs the SIGKILL.
- `kill` only signals a running container ("can only kill running containers").
- `rm` refuses a running container without force (podman's exit code 2); with
  `volumes` (rm -v, and every --rm) its anonymous volumes go with it, never a named
  one (podman: "Remove anonymous volumes associated with the container").
- `wait` returns the exit code once the container is not running.

Signals go to the host pid of the container's pid 1 only after its start time is
checked (procfs), so a recycled pid is never signalled.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import time
from typing import Any

from sandbox import paths
from sandbox.containers import monitor, procfs, rmtree
from sandbox.containers.store import (
    Container,
    ContainerError,
    ContainerStore,
    NoSuchContainer,
)
from sandbox.runtime import idmap
from sandbox.runtime.spec import Spec

DEFAULT_STOP_TIMEOUT = 10  # podman's and docker's
KILL_GRACE_S = 10.0  # after SIGKILL, how long to wait for the monitor to record it


class ContainerRunning(ContainerError):
    """podman rm exits 2 for a running container without --force."""

    exit_code = 2


class NotRunning(ContainerError):
    pass


# -- signals -------------------------------------------------------------------------
def parse_signal(text: str | int | None, default: int = signal.SIGTERM) -> int:
    """A signal by number or name, with or without SIG (podman's --stop-signal and
    kill -s take both: 9, KILL, SIGKILL, sigterm)."""
    if text is None or text == "":
        return default
    if isinstance(text, int):
        number = text
    else:
        t = text.strip().upper()
        if t.isdigit():
            number = int(t)
        else:
            name = t if t.startswith("SIG") else "SIG" + t
            try:
                number = int(signal.Signals[name])
            except KeyError:
                if name.startswith("SIGRTMIN") or name.startswith("SIGRTMAX"):
                    number = _realtime(name)
                else:
                    raise ContainerError(f"invalid signal {text!r}",
                                         hint="give a number or a name such as SIGTERM, "
                                         "TERM, 15") from None
    if not 0 < number < signal.NSIG:
        raise ContainerError(f"invalid signal {text!r}", hint="signals are 1 to "
                             f"{signal.NSIG - 1}")
    return number


def _realtime(name: str) -> int:
    base, _, off = name.partition("+")
    if "-" in base[8:]:
        base, _, off = name.partition("-")
        delta = -int(off)
    else:
        delta = int(off) if off else 0
    start = signal.SIGRTMIN if base == "SIGRTMIN" else signal.SIGRTMAX
    return int(start) + delta


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def send_signal(container: Container, sig: int) -> bool:
    """Send `sig` to the container's pid 1 if it is still the recorded process;
    False when it is gone."""
    st = container.raw_state
    pid = int(st.get("pid") or 0)
    if not pid or not procfs.exists(pid, st.get("pid_start", 0), st.get("boot_id", "")):
        return False
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        raise ContainerError(f"can't signal container {container.short_id} (pid {pid}): "
                             "permission denied",
                             hint="containers can only be signalled by their owner") from None
    return True


# -- preparing a start ---------------------------------------------------------------
def prepare(container: Container) -> tuple[Spec, idmap.MapPlan]:
    """The spec and id maps to start `container` with: its spec from the record, the
    maps planned again (/etc/subuid may have changed), its /etc files written again
    in the runtime directory (podman rewrites hosts and resolv.conf at every start
    too; after a reboot they are gone) and its layer's directories made."""
    from sandbox.containers import specjson
    from sandbox.runtime import etcfiles

    config = container.config
    try:
        spec = specjson.from_json(config["spec"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ContainerError(f"the record of container {container.short_id} is damaged "
                             f"({type(exc).__name__}: {exc})",
                             hint=f"remove it: sbx rm {container.short_id}") from None
    uid, gid, username, _home = idmap.current_user()
    maps = idmap.plan(uid, gid, username, config.get("userns") == "keep-id")
    spec.linux.uid_mappings = list(maps.uid_maps)
    spec.linux.gid_mappings = list(maps.gid_maps)
    keep = config.get("keep_id_user")
    etc = etcfiles.write(paths.container_run_dir(container.id), reader(config),
                         config.get("hostname") or container.id[:12],
                         config.get("network", "host"),
                         keep_id_user=tuple(keep) if keep else None)  # type: ignore[arg-type]
    for m in spec.mounts:
        if m.destination in etc and m.is_bind:
            m.source = etc[m.destination]
    if config.get("layers"):
        from sandbox.storage import overlay

        overlay.ContainerLayer(paths.container_layer_dir(container.id)).create()
    return spec, maps


def reader(config: dict[str, Any]) -> Any:
    """Reads files (/etc/passwd) of the container's image layers or rootfs folder."""
    layers = config.get("layers") or []
    if layers:
        from sandbox.storage import overlay

        return overlay.layers_reader(layers)
    from sandbox.runtime import users

    return users.dir_reader(config.get("rootfs") or "/nonexistent")


# -- the verbs -----------------------------------------------------------------------
def start(store: ContainerStore, container: Container, *, attach: bool = False,
          interactive: bool = False) -> int | None:
    """Start a container that is not running. Detached: returns None once it runs.
    Attached: runs it in this process and returns its exit status."""
    with store.lock(container.id) as lock:
        current = store.load(container.id)
        if current is None:
            raise NoSuchContainer(container.id)
        if current.running:
            if attach:
                raise ContainerError(f"container {current.name} is already running",
                                     hint="attaching to a running container comes with "
                                     "`sbx attach`")
            return None
        spec, maps = prepare(current)
        if attach:
            code = monitor.run_attached(store, current, spec, maps, lock,
                                        interactive=interactive)
            if current.config.get("auto_remove"):
                auto_remove(store, current.id, code)
            return code
        monitor.start_detached(store, current, spec, maps, lock,
                               after_exit=auto_remove_hook(current))
        return None


def auto_remove_hook(container: Container) -> Any:
    """What a detached monitor runs after the exit of a --rm container."""
    if not container.config.get("auto_remove"):
        return None
    return functools.partial(auto_remove, ContainerStore(), keep_exit_code=True)


def auto_remove(store: ContainerStore, cid: str, code: int, *,
                keep_exit_code: bool = False) -> None:
    """--rm: remove the container after its exit. With `keep_exit_code` (a detached
    container, whose status nobody has seen yet) the status stays in the runtime
    directory for `sbx wait`, as conmon's --exit-dir keeps it."""
    if keep_exit_code:
        write_exit_file(cid, code)
    found = store.load(cid)
    if found is None:
        return
    with contextlib.suppress(NoSuchContainer):
        remove(store, found, force=False, volumes=True)


def wait_not_running(store: ContainerStore, cid: str, timeout: float | None) -> Container | None:
    """Wait until the container is not running; its record then (None if it was
    removed), or raise TimeoutError."""
    deadline = None if timeout is None else time.monotonic() + timeout
    delay = 0.002
    while True:
        found = store.load(cid)
        if found is None or not found.running:
            return found
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def stop(store: ContainerStore, container: Container, timeout: float | None = None,
         on_kill: Any = None) -> bool:
    """Stop a running container: stop signal, then SIGKILL after `timeout` seconds
    (default: the container's own, 10). False when it was not running."""
    current = store.load(container.id)
    if current is None:
        raise NoSuchContainer(container.id)
    if not current.running:
        return False
    if timeout is None:
        timeout = float(current.config.get("stop_timeout", DEFAULT_STOP_TIMEOUT))
    sig = parse_signal(current.config.get("stop_signal"))
    sent = send_signal(current, sig)
    if sent and timeout > 0:
        with contextlib.suppress(TimeoutError):
            wait_not_running(store, container.id, timeout)
            return True
    current = store.load(container.id)
    if current is None or not current.running:
        return True
    if sent and timeout > 0 and on_kill is not None:
        on_kill(signal_name(sig), timeout)
    send_signal(current, signal.SIGKILL)
    try:
        wait_not_running(store, container.id, KILL_GRACE_S)
    except TimeoutError:
        raise ContainerError(f"container {container.short_id} did not stop after SIGKILL",
                             hint="its monitor may be stuck; `sbx ps` shows its pid") from None
    return True


def kill(store: ContainerStore, container: Container, sig: int) -> None:
    current = store.load(container.id)
    if current is None:
        raise NoSuchContainer(container.id)
    if not current.running or not send_signal(current, sig):
        raise NotRunning(f"can only kill running containers: {current.name} is "
                         f"{current.status}", hint="`sbx start` it first")


def wait(store: ContainerStore, container: Container, timeout: float | None = None) -> int:
    """The container's exit code once it is not running."""
    found = wait_not_running(store, container.id, timeout)
    if found is None:
        code = read_exit_file(container.id)
        if code is None:
            raise NoSuchContainer(container.id)
        return code
    code = found.state.get("exit_code")
    return int(code) if code is not None else 0


def read_exit_file(cid: str) -> int | None:
    try:
        with open(paths.container_exit_file(cid)) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


EXIT_FILE_TTL_S = 600.0  # how long a removed --rm container's status is kept


def write_exit_file(cid: str, code: int) -> None:
    """Keep a removed container's exit status; drop the ones older than
    EXIT_FILE_TTL_S while at it (podman's exit files are cleaned up as it reads them;
    nobody is sure to read these)."""
    path = paths.container_exit_file(cid)
    exits = paths.container_exits_dir()
    with contextlib.suppress(OSError):
        os.makedirs(exits, mode=0o700, exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(f"{code}\n")
        os.rename(tmp, path)
        cutoff = time.time() - EXIT_FILE_TTL_S
        for entry in os.listdir(exits):
            with contextlib.suppress(OSError):
                full = os.path.join(exits, entry)
                if os.stat(full).st_mtime < cutoff:
                    os.unlink(full)


def remove(store: ContainerStore, container: Container, *, force: bool,
           volumes: bool = False) -> None:
    """Remove a container, its writable layer, log and runtime files, and with
    `volumes` its anonymous volumes. A running one is killed (SIGKILL, as docker's
    rm -f) first with `force`, else refused (ContainerRunning)."""
    current = store.load(container.id)
    if current is None:
        raise NoSuchContainer(container.id)
    if current.running:
        if not force:
            raise ContainerRunning(
                f"cannot remove container {current.short_id} as it is running",
                hint=f"stop it first (sbx stop {current.name}) or use rm -f")
        send_signal(current, signal.SIGKILL)
        try:
            wait_not_running(store, container.id, KILL_GRACE_S)
        except TimeoutError:
            raise ContainerError(f"container {current.short_id} did not stop after SIGKILL",
                                 hint="its monitor may be stuck; `sbx ps` shows its pid"
                                 ) from None
    with store.lock(container.id):
        current = store.load(container.id)
        if current is None:
            raise NoSuchContainer(container.id)
        if current.running:
            raise ContainerRunning(f"container {current.short_id} was started again "
                                   "while it was being removed",
                                   hint="stop it, then remove it")
        store.remove(current, remove_tree)
    monitor.remove_runtime_files(container.id)
    if volumes:
        remove_anonymous_volumes(current)


def remove_anonymous_volumes(container: Container) -> None:
    """The anonymous volumes a removed container's record listed."""
    anonymous = [v["name"] for v in container.config.get("named_volumes") or []
                 if isinstance(v, dict) and v.get("anonymous") and v.get("name")]
    if not anonymous:
        return
    from sandbox.volumes.store import NoSuchVolume, VolumeStore

    vols = VolumeStore()
    for name in anonymous:
        with contextlib.suppress(NoSuchVolume):
            vols.remove(name, remove_tree)

def remove_tree(path: str) -> None:
    """Remove a container directory: as the user when it can (almost always for a
    layer nobody wrote to as another user), else as root of the user namespace."""
    try:
        rmtree.remove_tree(path)
    except PermissionError:
        from sandbox.runtime import userns

        userns.call(functools.partial(rmtree.remove_tree, path),
                    idmap.plan_for_current_user())


def prune(store: ContainerStore) -> tuple[list[str], list[str]]:
    """Remove every container that is not running, and what crashed creates and
    removals left. Returns (removed ids, errors)."""
    removed: list[str] = []
    errors: list[str] = []
    for found in store.list():
        if found.running:
            continue
        try:
            remove(store, found, force=False)
            removed.append(found.id)
        except NoSuchContainer:
            continue
        except ContainerError as exc:
            errors.append(f"{found.short_id}: {exc.message}")
    try:
        store.clean_leftovers(remove_tree)
    except (OSError, ContainerError) as exc:
        errors.append(f"leftovers of killed creates or removals: {exc}")
    with contextlib.suppress(OSError):
        exits = paths.container_exits_dir()
        for entry in os.listdir(exits):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(exits, entry))
    return removed, errors


__all__ = [
    "DEFAULT_STOP_TIMEOUT",
    "ContainerRunning",
    "NotRunning",
    "auto_remove",
    "kill",
    "parse_signal",
    "prepare",
    "prune",
    "remove",
    "remove_anonymous_volumes",
    "remove_tree",
    "send_signal",
    "signal_name",
    "start",
    "stop",
    "wait",
]
