"""Container logs in podman's k8s-file format: written by the monitor, read by `logs`.

One entry per line of the file, as conmon writes them (conmon's ctr_logging.c, the
CRI log format kubelet reads):

    2024-01-01T00:00:00.000000000+00:00 stdout F a whole line
    2024-01-01T00:00:00.000000000+00:00 stderr P the start of a line, then

"F" ends a line (its newline is not written); "P" is a partial line, continued by the
next entry of the same stream: conmon writes whatever a read() returned at once,
ending a chunk that stops mid-line with a P entry, and so does sbx. Times are UTC
here. The file is only appended to (O_APPEND, whole entries per write), so a reader
may see a last line that is still being written: readers only take lines up to the
last newline. Stdlib only; no locks (one writer, the container's monitor).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

STREAMS = (b"stdout", b"stderr")


def format_log_time(ns: int) -> bytes:
    """conmon's timestamp: RFC 3339 with nanoseconds and a numeric zone (UTC here)."""
    secs, frac = divmod(ns, 1_000_000_000)
    t = time.gmtime(secs)
    return (f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T{t.tm_hour:02d}:"
            f"{t.tm_min:02d}:{t.tm_sec:02d}.{frac:09d}+00:00").encode()


def encode(stream: bytes, data: bytes, ns: int) -> bytes:
    """The entries for one chunk a stream produced: an F entry per complete line and a
    P entry for a trailing piece without a newline."""
    ts = format_log_time(ns)
    lines = data.split(b"\n")
    last = lines.pop()
    out = [b"%s %s F %s\n" % (ts, stream, line) for line in lines]
    if last:
        out.append(b"%s %s P %s\n" % (ts, stream, last))
    return b"".join(out)


class LogWriter:
    """Appends a container's output to its log file."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)

    def write(self, stream: bytes, data: bytes) -> None:
        if not data or self.fd < 0:
            return
        view = memoryview(encode(stream, data, time.time_ns()))
        try:
            while view:
                view = view[os.write(self.fd, view):]
        except OSError:
            pass  # a full disk must not stop the container; its output is lost

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


# -- reading ---------------------------------------------------------------------------
class Entry:
    """One line of the log file."""

    __slots__ = ("ns", "partial", "stream", "text", "time")

    def __init__(self, time_text: bytes, ns: int, stream: bytes, partial: bool,
                 text: bytes) -> None:
        self.time = time_text
        self.ns = ns
        self.stream = stream
        self.partial = partial
        self.text = text

    def __repr__(self) -> str:
        return f"Entry({self.stream!r}, {'P' if self.partial else 'F'}, {self.text!r})"


def parse_log_time(text: bytes) -> int:
    """Nanoseconds since the epoch of a k8s-file timestamp (0 if unreadable)."""
    import calendar

    try:
        s = text.decode("ascii")
        secs = calendar.timegm((int(s[0:4]), int(s[5:7]), int(s[8:10]), int(s[11:13]),
                                int(s[14:16]), int(s[17:19]), 0, 0, 0))
        rest = s[19:]
        frac = 0
        if rest.startswith("."):
            end = 1
            while end < len(rest) and rest[end].isdigit():
                end += 1
            frac = int((rest[1:end] + "000000000")[:9])
            rest = rest[end:]
        offset = 0
        if rest and rest[0] in "+-" and len(rest) >= 6:
            offset = (int(rest[1:3]) * 3600 + int(rest[4:6]) * 60) * (1 if rest[0] == "+" else -1)
        return (secs - offset) * 1_000_000_000 + frac
    except (ValueError, IndexError, UnicodeDecodeError):
        return 0


def parse_line(line: bytes) -> Entry | None:
    """One entry (without its newline); None for a line that is not one."""
    parts = line.split(b" ", 3)
    if len(parts) < 3 or parts[2] not in (b"F", b"P"):
        return None
    text = parts[3] if len(parts) == 4 else b""
    return Entry(parts[0], parse_log_time(parts[0]), parts[1], parts[2] == b"P", text)


def read_entries(path: str, offset: int = 0) -> tuple[list[Entry], int]:
    """The complete entries from byte `offset` on, and the offset after them (a last
    line still being written is left for the next read)."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return [], offset
    end = data.rfind(b"\n")
    if end < 0:
        return [], offset
    entries = [e for e in (parse_line(ln) for ln in data[:end].split(b"\n")) if e is not None]
    return entries, offset + end + 1


def lines(entries: list[Entry]) -> Iterator[list[Entry]]:
    """Group entries into logical lines: the P entries of a stream with the entry that
    ends them (an F, or whatever comes before the stream changes)."""
    current: list[Entry] = []
    for entry in entries:
        if current and current[-1].stream != entry.stream:
            yield current
            current = []
        current.append(entry)
        if not entry.partial:
            yield current
            current = []
    if current:
        yield current


def tail(entries: list[Entry], n: int) -> list[Entry]:
    """The entries of the last `n` logical lines (n < 0: all of them)."""
    if n < 0:
        return entries
    if n == 0:
        return []
    groups = list(lines(entries))
    return [e for group in groups[-n:] for e in group]


def render(entries: list[Entry], timestamps: bool, at_line_start: dict[bytes, bool]
           ) -> Iterator[tuple[bytes, bytes]]:
    """(stream, bytes to write) for each entry, as `podman logs` prints them: an F
    entry ends its line, a P entry does not; with `timestamps`, each line starts with
    its first entry's time (RFC 3339, UTC, nanoseconds). `at_line_start` tracks, per
    stream, whether the next entry begins a line (kept across calls by `logs -f`)."""
    for entry in entries:
        prefix = b""
        if timestamps and at_line_start.get(entry.stream, True):
            prefix = _display_time(entry) + b" "
        at_line_start[entry.stream] = not entry.partial
        yield entry.stream, prefix + entry.text + (b"" if entry.partial else b"\n")


def _display_time(entry: Entry) -> bytes:
    t = entry.time
    return t[:-6] + b"Z" if t.endswith(b"+00:00") else t


__all__ = [
    "Entry",
    "LogWriter",
    "encode",
    "format_log_time",
    "lines",
    "parse_line",
    "parse_log_time",
    "read_entries",
    "render",
    "tail",
]
