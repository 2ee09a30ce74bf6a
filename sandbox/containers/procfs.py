"""Is a recorded process still alive, and still the one that was recorded?

A pid alone is not an identity: after the process exits, or after a reboot, the pid
can belong to anything. A record keeps, with each pid, its start time (field 22 of
/proc/PID/stat, clock ticks since boot) and the boot id (/proc/sys/kernel/random/
boot_id); a process is the recorded one only if all three match. This is how
podman's conmon pid file is checked against `/proc` too, and how `ps -a` after a
reboot shows containers as exited. Stdlib only.
"""

from __future__ import annotations

_boot_id: str | None = None


def boot_id() -> str:
    """This boot's id (the kernel makes a new random one at every boot)."""
    global _boot_id  # read once per process: it is the same all boot long
    if _boot_id is None:
        try:
            with open("/proc/sys/kernel/random/boot_id") as f:
                _boot_id = f.read().strip()
        except OSError:
            _boot_id = ""
    return _boot_id


def stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat's fields from field 3 (state) on, or None when there is no
    such process. The command name (field 2) may hold spaces and parentheses, so
    the split starts after its last ')'."""
    if pid <= 0:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:  # FileNotFoundError, ProcessLookupError (ESRCH) while it exits
        return None
    return data.rpartition(b")")[2].decode("ascii", "replace").split()


def start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat: when the process started, in ticks since boot."""
    fields = stat_fields(pid)
    if fields is None or len(fields) < 20:
        return None
    try:
        return int(fields[19])  # field 22; fields[0] is field 3
    except ValueError:
        return None


def is_running(pid: int, start: int, boot: str) -> bool:
    """True when `pid` is alive (not a zombie) and is the process that started at
    tick `start` during boot `boot`."""
    if not pid or boot != boot_id():
        return False
    fields = stat_fields(pid)
    if fields is None or len(fields) < 20 or fields[0] in ("Z", "X"):
        return False
    return fields[19] == str(start)


def exists(pid: int, start: int, boot: str) -> bool:
    """Like is_running, but a zombie (exited, not yet reaped) still counts."""
    if not pid or boot != boot_id():
        return False
    fields = stat_fields(pid)
    return fields is not None and len(fields) >= 20 and fields[19] == str(start)


__all__ = ["boot_id", "exists", "is_running", "start_time", "stat_fields"]
