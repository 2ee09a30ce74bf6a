"""User-namespace id maps: the math (pure) and writing them (newuidmap/newgidmap).

The default map puts container root on the user and container ids 1..N on the user's
subordinate range (subuid(5)), as rootless podman does. `keep-id` maps the user to the
same id inside and fills the ids around it from the subordinate range, so files in a
mounted project stay owned by the user on both sides.

Only setuid newuidmap(1)/newgidmap(1) may write a map with more than the caller's own
id (user_namespaces(7)). Without them, or without subordinate ranges, sbx writes a
single-id map itself, which any unprivileged process may do for its own child.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import NamedTuple

from sandbox.errors import SbxError
from sandbox.runtime.spec import IdMapping


class Range(NamedTuple):
    start: int
    count: int


def _lay_out(ranges: Sequence[Range], slots: list[tuple[int, int]]) -> list[IdMapping]:
    """Fill container-id slots [(first, size), ...] from the host ranges, in order."""
    maps: list[IdMapping] = []
    pool = [(r.start, r.count) for r in ranges if r.count > 0]
    for first, size in slots:
        ctr = first
        remaining = size
        while remaining > 0 and pool:
            host, count = pool[0]
            take = min(count, remaining)
            maps.append(IdMapping(ctr, host, take))
            ctr += take
            remaining -= take
            if take == count:
                pool.pop(0)
            else:
                pool[0] = (host + take, count - take)
    return maps


def default_maps(host_id: int, ranges: Sequence[Range]) -> list[IdMapping]:
    """Container 0 -> host_id; container 1.. -> the subordinate ranges, in order."""
    total = sum(r.count for r in ranges)
    return [IdMapping(0, host_id, 1), *_lay_out(ranges, [(1, total)])]


def keep_id_maps(host_id: int, ranges: Sequence[Range]) -> list[IdMapping]:
    """host_id -> host_id; container 0..host_id-1 and host_id+1.. from the ranges."""
    total = sum(r.count for r in ranges)
    below = min(host_id, total)
    maps = _lay_out(ranges, [(0, below), (host_id + 1, total - below)])
    maps.append(IdMapping(host_id, host_id, 1))
    return sorted(maps, key=lambda m: m.container_id)


def single_maps(host_id: int, keep_id: bool = False) -> list[IdMapping]:
    """The one-line map an unprivileged process may write without helpers."""
    return [IdMapping(host_id if keep_id else 0, host_id, 1)]


def map_size(maps: Sequence[IdMapping]) -> int:
    return sum(m.size for m in maps)


def to_container(maps: Sequence[IdMapping], host_id: int) -> int | None:
    """The container id a host id appears as, or None when it is unmapped (nobody)."""
    for m in maps:
        if m.host_id <= host_id < m.host_id + m.size:
            return m.container_id + host_id - m.host_id
    return None


def format_map(maps: Sequence[IdMapping]) -> str:
    """The text of /proc/PID/uid_map for these mappings."""
    return "".join(f"{m.container_id} {m.host_id} {m.size}\n" for m in maps)


class MapPlan(NamedTuple):
    """How the parent will map a child's user namespace."""

    uid_maps: list[IdMapping]
    gid_maps: list[IdMapping]
    use_helpers: bool  # newuidmap/newgidmap; False -> write a single-id map directly
    warning: str | None = None
    uid_helper: str = "newuidmap"  # the paths `sbx system check`'s probe found
    gid_helper: str = "newgidmap"


def plan(uid: int, gid: int, user: str, keep_id: bool) -> MapPlan:
    """Choose maps for this user from /etc/subuid, /etc/subgid and the helpers present."""
    from sandbox.system.subid import read_subid_ranges

    uid_ranges = [Range(r.start, r.count) for r in read_subid_ranges("uid", user, uid)]
    gid_ranges = [Range(r.start, r.count) for r in read_subid_ranges("gid", user, uid)]
    if not uid_ranges or not gid_ranges:
        warning = (
            f"no subordinate id ranges for user {user} in /etc/subuid and /etc/subgid: "
            "running with a single-id map, so only your own uid exists inside; "
            f"fix: sudo usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {user}"
        )
        return MapPlan(single_maps(uid, keep_id), single_maps(gid, keep_id), False, warning)
    # The same probe `sbx system check` runs: present, executable, setuid root or
    # with file capabilities, and not on a nosuid mount.
    from sandbox.system.idhelpers import CAP_SETGID, CAP_SETUID, probe_idmap_helper

    found = []
    for name, cap in (("newuidmap", CAP_SETUID), ("newgidmap", CAP_SETGID)):
        probe = probe_idmap_helper(name, cap, ranges_configured=True)
        found.append(probe.path or name)
        if not probe.ok:
            warning = f"{probe.detail}; running with a single-id map"
            if probe.fix:
                warning += f"; fix: {probe.fix}"
            return MapPlan(single_maps(uid, keep_id), single_maps(gid, keep_id), False,
                           warning)
    builder = keep_id_maps if keep_id else default_maps
    return MapPlan(builder(uid, uid_ranges), builder(gid, gid_ranges), True,
                   uid_helper=found[0], gid_helper=found[1])


def current_user() -> tuple[int, int, str, str]:
    """(uid, gid, name, home) of the user running sbx."""
    import pwd

    uid, gid = os.getuid(), os.getgid()
    try:
        me = pwd.getpwuid(uid)
    except KeyError:
        return uid, gid, str(uid), "/"
    return uid, gid, me.pw_name, me.pw_dir


def plan_for_current_user(keep_id: bool = False) -> MapPlan:
    uid, gid, name, _home = current_user()
    return plan(uid, gid, name, keep_id)


def _helper_args(pid: int, maps: Sequence[IdMapping]) -> list[str]:
    args = [str(pid)]
    for m in maps:
        args += [str(m.container_id), str(m.host_id), str(m.size)]
    return args


def apply(pid: int, mp: MapPlan) -> None:
    """Write the maps of process `pid`'s user namespace (called from the parent)."""
    if mp.use_helpers:
        # Both helpers at once: each is an exec of a setuid binary (~2 ms apiece).
        jobs = [(tool, maps, _start([path, *_helper_args(pid, maps)]))
                for tool, path, maps in (("newuidmap", mp.uid_helper, mp.uid_maps),
                                         ("newgidmap", mp.gid_helper, mp.gid_maps))]
        for tool, maps, job in jobs:
            status, stderr = _finish(job)
            if status != 0:
                msg = stderr.strip() or f"exit status {status}"
                raise SbxError(
                    f"{tool} {' '.join(_helper_args(pid, maps))} failed: {msg}",
                    hint=f"check /etc/sub{tool[3:6]} for your user and that {tool} is "
                    "setuid root (`sbx system check` explains)",
                )
        return
    _write(f"/proc/{pid}/uid_map", format_map(mp.uid_maps))
    # An unprivileged writer must deny setgroups(2) before writing gid_map
    # (user_namespaces(7), "The /proc/[pid]/setgroups file"; CVE-2014-8989).
    _write(f"/proc/{pid}/setgroups", "deny")
    _write(f"/proc/{pid}/gid_map", format_map(mp.gid_maps))


def _start(argv: list[str]) -> tuple[int, int] | str:
    """Start a helper with its stderr on a pipe: posix_spawn, not subprocess, which
    costs about 2 ms to import on every `sbx run`. Returns (pid, fd) or an error."""
    r, w = os.pipe()
    try:
        pid = os.posix_spawnp(argv[0], argv, os.environ,
                              file_actions=[(os.POSIX_SPAWN_DUP2, w, 2),
                                            (os.POSIX_SPAWN_CLOSE, r)])
    except OSError as exc:
        os.close(r)
        return f"can't run {argv[0]}: {exc.strerror}"
    finally:
        os.close(w)
    return pid, r


def _finish(job: tuple[int, int] | str) -> tuple[int, str]:
    """Wait for a helper started by `_start`: (exit status, its stderr)."""
    if isinstance(job, str):
        return 127, job
    pid, r = job
    chunks = []
    while chunk := os.read(r, 4096):
        chunks.append(chunk)
    os.close(r)
    _pid, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), b"".join(chunks).decode(errors="replace")


def _write(path: str, text: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)
    except OSError as exc:
        raise SbxError(
            f"can't write {path}: {exc.strerror}",
            hint="user namespaces may be restricted here; run `sbx system check`",
        ) from None


def shift(stored: Sequence[IdMapping], seen: Sequence[IdMapping]) -> list[IdMapping]:
    """How a filesystem must shift ids for a container (fuse-overlayfs's uidmapping).

    Image layers are unpacked under the default map `stored` (container id c is kept
    on disk as host id h). A container run under another map `seen` (keep-id) sees
    host id h as its own id n. To show the image as it was built, the filesystem must
    present n as c: the result maps container id c to the id n it finds on disk, as
    `uidmapping=C:N:SIZE` segments. Ids unmapped in `seen` are left out (nobody).
    """
    out: list[IdMapping] = []
    for m in stored:
        for r in seen:
            lo = max(m.host_id, r.host_id)
            hi = min(m.host_id + m.size, r.host_id + r.size)
            if lo < hi:
                out.append(IdMapping(m.container_id + lo - m.host_id,
                                     r.container_id + lo - r.host_id, hi - lo))
    return sorted(out, key=lambda x: x.container_id)
