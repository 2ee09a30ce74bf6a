"""`sbx logs`: a container's output from its k8s-file log, as `podman logs` shows it.

stdout entries go to stdout and stderr entries to stderr; `--timestamps` starts each
line with its time (RFC 3339, nanoseconds, UTC); `--tail N` keeps the last N lines;
`--since`/`--until` take an RFC 3339 time, a Unix time or a duration before now
(10s, 1m30s, 2h); `-f` keeps reading while the container runs, and stops once it has
exited and everything it wrote is shown (podman's --follow).
"""

from __future__ import annotations

import os
import re
import time

import click

from sandbox.cli import handle_errors
from sandbox.errors import UsageError

_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h))")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_when(text: str, now_ns: int) -> int:
    """--since/--until: nanoseconds since the epoch."""
    from sandbox.containers.logs import parse_log_time

    t = text.strip()
    if re.fullmatch(r"\d+(\.\d+)?", t):
        return int(float(t) * 1e9)
    parts = _DURATION.findall(t)
    if parts and "".join(n + u for n, u in parts) == t:
        return now_ns - int(sum(float(n) * _UNITS[u] for n, u in parts) * 1e9)
    if re.fullmatch(r"\d{4}-\d\d-\d\d", t):
        t += "T00:00:00Z"
    if len(t) >= 19 and t[4] == "-" and t[10] in "Tt ":
        if t.endswith(("Z", "z")):
            t = t[:-1] + "+00:00"
        elif not re.search(r"[+-]\d\d:\d\d$", t):
            t += "+00:00"
        ns = parse_log_time(t.encode())
        if ns:
            return ns
    raise UsageError(f"invalid time {text!r}",
                     hint="use an RFC 3339 time (2024-01-01T10:00:00Z), a Unix time, "
                     "or a duration such as 10m")


@click.command()
@click.option("-f", "--follow", is_flag=True, help="Keep printing while it runs.")
@click.option("-t", "--timestamps", is_flag=True, help="Start each line with its time.")
@click.option("-n", "--tail", "tail_n", type=int, default=-1, metavar="N",
              help="Only the last N lines (default: all).")
@click.option("--since", metavar="TIME", help="Only lines since TIME (or a duration ago).")
@click.option("--until", metavar="TIME", help="Only lines before TIME (or a duration ago).")
@click.argument("container")
@handle_errors
def logs(follow: bool, timestamps: bool, tail_n: int, since: str | None, until: str | None,
         container: str) -> None:
    """Show the output of CONTAINER."""
    from sandbox import paths
    from sandbox.containers import logs as logmod
    from sandbox.containers.store import ContainerStore

    store = ContainerStore()
    found = store.lookup(container)
    now = time.time_ns()
    since_ns = parse_when(since, now) if since else None
    until_ns = parse_when(until, now) if until else None
    path = paths.container_log_file(found.id)
    line_start: dict[bytes, bool] = {}
    fds = {b"stdout": 1, b"stderr": 2}

    def show(entries: list[logmod.Entry]) -> None:
        if since_ns is not None:
            entries = [e for e in entries if e.ns >= since_ns]
        if until_ns is not None:
            entries = [e for e in entries if e.ns <= until_ns]
        for stream, data in logmod.render(entries, timestamps, line_start):
            _write(fds.get(stream, 1), data)

    entries, offset = logmod.read_entries(path)
    show(logmod.tail(entries, tail_n))
    if not follow:
        return
    delay = 0.01
    while True:
        current = store.load(found.id)
        running = current is not None and current.running
        entries, offset = logmod.read_entries(path, offset)
        show(entries)
        if not running:
            # The monitor records the exit only after both pipes ended and the log is
            # written, so one more read has all of it.
            entries, offset = logmod.read_entries(path, offset)
            show(entries)
            return
        time.sleep(delay if not entries else 0.01)
        delay = min(delay * 2, 0.25) if not entries else 0.01


def _write(fd: int, data: bytes) -> None:
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    except BrokenPipeError:
        raise SystemExit(0) from None
