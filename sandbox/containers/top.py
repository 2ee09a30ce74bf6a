"""`top`: a container's processes, read from the host's /proc, as `podman top` shows them.

podman top uses containers/psgo: AIX-format descriptors (`user pid ppid %C etime tty
time args` by default; psgo's names and headers), each process described as the
container sees it: pids from the container's pid namespace (the NSpid line of
/proc/PID/status lists a process's pid in every namespace it is in, outermost
first), users and groups mapped through the container's uid_map/gid_map and named
from the container's own /etc/passwd and /etc/group. The processes are those whose
pid namespace (/proc/PID/ns/pid) is the one of the container's pid 1. Reading
another id's /proc/PID/ns or /root needs ptrace access, which the owner of the
container's user namespace has (ptrace(2), "ptrace access mode checking").

Pure functions (descriptor parsing, durations as Go prints them, the table layout)
are separate from the one that reads /proc. Library code: raises, never prints.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from sandbox.containers import procfs
from sandbox.containers.store import Container, ContainerError
from sandbox.errors import UsageError

DEFAULT_DESCRIPTORS = ("user", "pid", "ppid", "pcpu", "etime", "tty", "time", "args")

# descriptor -> header, as psgo names them; AIX codes are aliases (ps(1), psgo).
HEADERS: dict[str, str] = {
    "args": "COMMAND", "comm": "COMMAND", "etime": "ELAPSED", "group": "GROUP",
    "hgroup": "HGROUP", "hpid": "HPID", "huser": "HUSER", "nice": "NI", "pcpu": "%CPU",
    "pgid": "PGID", "pid": "PID", "ppid": "PPID", "rgroup": "RGROUP", "rss": "RSS",
    "ruser": "RUSER", "state": "STATE", "time": "TIME", "tty": "TTY", "user": "USER",
    "vsz": "VSZ",
}
AIX = {"%C": "pcpu", "%G": "group", "%P": "ppid", "%U": "user", "%a": "args", "%c": "comm",
       "%g": "rgroup", "%n": "nice", "%p": "pid", "%r": "pgid", "%t": "etime",
       "%u": "ruser", "%x": "time", "%y": "tty", "%z": "vsz"}


class UnknownDescriptor(UsageError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"unknown descriptor: {name}",
                         hint="descriptors: " + ", ".join(sorted(HEADERS)) +
                         " (or ps(1) options, run by the container's own ps)")


def parse_descriptors(args: Sequence[str]) -> list[str]:
    """`sbx top C [DESCRIPTOR...]`: names separated by spaces or commas, AIX codes
    allowed; the default set when none. Raises UnknownDescriptor."""
    out: list[str] = []
    for arg in args:
        for word in arg.replace(",", " ").split():
            name = AIX.get(word, word)
            if name not in HEADERS:
                raise UnknownDescriptor(word)
            out.append(name)
    return out or list(DEFAULT_DESCRIPTORS)


def go_duration(ns: int) -> str:
    """A duration as Go's time.Duration.String() prints it ("7.31s", "1m0s", "10ms"),
    which is what podman top shows for ELAPSED and TIME."""
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    u = abs(ns)
    if u < 1_000_000_000:
        if u < 1000:
            return f"{sign}{u}ns"
        unit, div, digits = ("µs", 1000, 3) if u < 1_000_000 else ("ms", 1_000_000, 6)
        whole, frac = divmod(u, div)
        text = str(whole) + (("." + f"{frac:0{digits}d}".rstrip("0")) if frac else "")
        return f"{sign}{text}{unit}"
    secs, frac = divmod(u, 1_000_000_000)
    text = str(secs % 60) + (("." + f"{frac:09d}".rstrip("0")) if frac else "") + "s"
    mins = secs // 60
    if mins:
        text = f"{mins % 60}m{text}"
        if mins // 60:
            text = f"{mins // 60}h{text}"
    return sign + text


def tty_name(tty_nr: int) -> str:
    """Field 7 of /proc/PID/stat as a terminal name (devices.txt: 136-143 are the
    Unix98 ptys, 4 the virtual consoles); "?" for none."""
    if tty_nr == 0:
        return "?"
    major = (tty_nr >> 8) & 0xFFF
    minor = (tty_nr & 0xFF) | ((tty_nr >> 12) & 0xFFF00)
    if 136 <= major <= 143:
        return f"pts/{minor + (major - 136) * 256}"
    if major == 4 and minor < 64:
        return f"tty{minor}"
    if major == 5 and minor == 0:
        return "tty"
    return f"{major},{minor}"


def map_id(host_id: int, id_map: Sequence[tuple[int, int, int]]) -> int | None:
    """The container id of `host_id` under (inside, outside, count) lines, or None
    when it is not mapped."""
    for inside, outside, count in id_map:
        if outside <= host_id < outside + count:
            return inside + host_id - outside
    return None


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """The columns as podman prints them (Go's tabwriter, minwidth 12, padding 2):
    every cell but the last of a line padded to its column's width."""
    lines = [list(header), *[list(r) for r in rows]]
    widths = [max(12, max(len(line[i]) for line in lines) + 2) for i in range(len(header))]
    out = []
    for line in lines:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(line[:-1])]
        out.append("".join(cells) + line[-1])
    return "\n".join(out) + "\n"


# -- reading /proc ---------------------------------------------------------------------
def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def _status(pid: int) -> dict[str, str]:
    data = _read(f"/proc/{pid}/status")
    out: dict[str, str] = {}
    for line in (data or b"").decode("utf-8", "replace").splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


def _id_map(path: str) -> list[tuple[int, int, int]]:
    lines = (_read(path) or b"").decode().split("\n")
    return [(int(a), int(b), int(c)) for a, b, c in
            (line.split() for line in lines if len(line.split()) == 3)]


def _names(text: str) -> dict[int, str]:
    names: dict[int, str] = {}
    for line in text.splitlines():
        parts = line.split(":")
        if len(parts) >= 3 and parts[2].isdigit():
            names.setdefault(int(parts[2]), parts[0])
    return names


class _Proc:
    __slots__ = ("args", "comm", "egid", "euid", "fields", "hpid", "nspid", "ppid_host",
                 "rgid", "ruid")

    def __init__(self, hpid: int) -> None:
        self.hpid = hpid


def _load(hpid: int) -> _Proc | None:
    data = _read(f"/proc/{hpid}/stat")
    if data is None:
        return None
    head, _, rest = data.rpartition(b")")
    p = _Proc(hpid)
    p.comm = head.partition(b"(")[2].decode("utf-8", "replace")
    p.fields = rest.decode().split()  # fields[0] is field 3 (state)
    st = _status(hpid)
    try:
        p.ruid, p.euid = (int(x) for x in st["Uid"].split()[:2])
        p.rgid, p.egid = (int(x) for x in st["Gid"].split()[:2])
        p.nspid = [int(x) for x in st["NSpid"].split()]
        p.ppid_host = int(st["PPid"])
    except (KeyError, ValueError):
        return None
    cmdline = _read(f"/proc/{hpid}/cmdline") or b""
    args = cmdline.rstrip(b"\0").split(b"\0")
    p.args = " ".join(a.decode("utf-8", "replace") for a in args) if cmdline else f"[{p.comm}]"
    return p


def processes(container: Container, descriptors: Sequence[str],
              now_ns: Callable[[], int] = time.time_ns) -> tuple[list[str], list[list[str]]]:
    """The header and one row per process of the running `container`."""
    from sandbox.runtime import users

    st = container.raw_state
    pid1 = int(st.get("pid") or 0)
    gone = ContainerError(f"can only list processes of running containers: {container.name} "
                          f"is {container.status}", hint=f"start it: sbx start {container.name}")
    if not container.running:
        raise gone
    try:
        ns = os.readlink(f"/proc/{pid1}/ns/pid")
    except OSError:
        raise gone from None
    if not procfs.is_running(pid1, st.get("pid_start", 0), st.get("boot_id", "")):
        raise gone  # the pid was reused: `ns` may be a stranger's
    root = f"/proc/{pid1}/root"
    read = users.dir_reader(root)
    user_names = _names(read("/etc/passwd"))
    group_names = _names(read("/etc/group"))
    uid_map = _id_map(f"/proc/{pid1}/uid_map")
    gid_map = _id_map(f"/proc/{pid1}/gid_map")
    procs: dict[int, _Proc] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry}/ns/pid") != ns:
                continue
        except OSError:
            continue  # gone, or not ours to look at
        p = _load(int(entry))
        if p is not None:
            procs[p.hpid] = p
    first = procs.get(pid1)
    level = len(first.nspid) - 1 if first else 1
    ticks = os.sysconf("SC_CLK_TCK")
    boot_ns = _boot_time_ns()
    now = now_ns()

    def inner(hpid: int) -> int:
        q = procs.get(hpid)
        return q.nspid[level] if q is not None and len(q.nspid) > level else 0

    def user(host: int, names: dict[int, str], id_map: Any) -> str:
        mapped = map_id(host, id_map)
        if mapped is None:
            return "?"  # psgo too shows unmapped ids as such
        return names.get(mapped, str(mapped))

    rows = []
    for p in sorted(procs.values(), key=lambda q: inner(q.hpid)):
        f = p.fields
        cpu_ns = (int(f[11]) + int(f[12])) * 1_000_000_000 // ticks
        start_ns = boot_ns + int(f[19]) * 1_000_000_000 // ticks
        elapsed = max(now - start_ns, 0)
        values = {
            "args": p.args,
            "comm": p.comm,
            "etime": go_duration(elapsed),
            "group": user(p.egid, group_names, gid_map),
            "hgroup": str(p.egid),
            "hpid": str(p.hpid),
            "huser": str(p.euid),
            "nice": f[16],
            "pcpu": f"{(cpu_ns / elapsed * 100) if elapsed else 0.0:.3f}",
            "pgid": str(inner(int(f[2]))),
            "pid": str(inner(p.hpid)),
            "ppid": str(inner(p.ppid_host)),
            "rgroup": user(p.rgid, group_names, gid_map),
            "rss": str(int(f[21]) * os.sysconf("SC_PAGE_SIZE") // 1024),
            "ruser": user(p.ruid, user_names, uid_map),
            "state": f[0],
            "time": go_duration(cpu_ns),
            "tty": tty_name(int(f[4])),
            "user": user(p.euid, user_names, uid_map),
            "vsz": str(int(f[20]) // 1024),
        }
        rows.append([values[d] for d in descriptors])
    return [HEADERS[d] for d in descriptors], rows


def _boot_time_ns() -> int:
    for line in (_read("/proc/stat") or b"").decode().splitlines():
        if line.startswith("btime "):
            return int(line.split()[1]) * 1_000_000_000
    return 0


__all__ = ["DEFAULT_DESCRIPTORS", "HEADERS", "UnknownDescriptor", "go_duration", "map_id",
           "parse_descriptors", "processes", "table", "tty_name"]
