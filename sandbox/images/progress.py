"""Progress reports for pulls, pushes, saves and loads: bars on a terminal, lines elsewhere.

Owns how transfer progress looks; pull.py and push.py only call `start`, `update`,
`finish` and `note` (from several download threads at once, so every method takes a
lock). Three renderers, chosen by `for_stream`:

- `Bars`: a terminal. One row per blob, redrawn in place with ANSI cursor movement
  (cursor up, erase line) at most ten times a second, like podman's mpb bars:
  `Copying blob 3f4d90098f5b [======>-------] 1.2MiB / 2.5MiB`, then `... done`.
  Rows are cut to the terminal's width, so a wrapped line never breaks the cursor
  arithmetic.
- `Lines`: not a terminal (a log, CI). One line per finished blob, the words podman
  uses (`Copying blob sha256:3f4d... done`), so a log stays short.
- `Quiet`: -q, or nothing to show.

No dependencies, no threads of its own. Must not import the registry or the runtime.
"""

from __future__ import annotations

import re
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TextIO

REDRAW_INTERVAL_S = 0.1
BAR_WIDTH = 24
_DIGEST = re.compile(r"\bsha(?:256|512):([0-9a-f]{12})[0-9a-f]+")


class Progress(Protocol):
    """What a transfer reports. `key` names one row (a digest); `label` is its text."""

    def start(self, key: str, label: str, total: int | None = None) -> None: ...

    def update(self, key: str, done: int, total: int | None = None) -> None: ...

    def finish(self, key: str, status: str = "done") -> None: ...

    def note(self, text: str) -> None: ...

    def close(self) -> None: ...


def human_bytes(n: float) -> str:
    """Binary units, as podman's progress bars print them: 512B, 1.5KiB, 2.3MiB."""
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    value = float(n)
    for unit in units:
        if value < 1024 or unit == units[-1]:
            return f"{int(value)}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    raise AssertionError("unreachable")


def short_digest(digest: str) -> str:
    """The 12 hex digits podman shows in a bar's label."""
    return digest.partition(":")[2][:12] or digest


def shorten(label: str) -> str:
    """A label with its digests cut to 12 hex digits, to leave the bar room."""
    return _DIGEST.sub(r"\1", label)


class Quiet:
    """Shows nothing."""

    def start(self, key: str, label: str, total: int | None = None) -> None:
        pass

    def update(self, key: str, done: int, total: int | None = None) -> None:
        pass

    def finish(self, key: str, status: str = "done") -> None:
        pass

    def note(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


class Lines:
    """One line per finished row, and each note: for logs and pipes."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._labels: dict[str, str] = {}
        self._lock = threading.Lock()

    def start(self, key: str, label: str, total: int | None = None) -> None:
        with self._lock:
            self._labels[key] = label

    def update(self, key: str, done: int, total: int | None = None) -> None:
        pass

    def finish(self, key: str, status: str = "done") -> None:
        with self._lock:
            label = self._labels.pop(key, key)
            self._write(f"{label} {status}")

    def note(self, text: str) -> None:
        with self._lock:
            self._write(text)

    def close(self) -> None:
        pass

    def _write(self, line: str) -> None:
        self._stream.write(line + "\n")
        self._stream.flush()


@dataclass
class _Row:
    label: str
    done: int = 0
    total: int | None = None
    status: str | None = None  # set when finished; a note is a row with only a status

    def render(self, width: int) -> str:
        if self.status is not None:
            text = f"{self.label} {self.status}" if self.label else self.status
        elif self.total:
            filled = min(BAR_WIDTH, int(BAR_WIDTH * self.done / self.total))
            head = ">" if filled < BAR_WIDTH else ""
            bar = "=" * filled + head + "-" * (BAR_WIDTH - filled - len(head))
            text = f"{self.label} [{bar}] {human_bytes(self.done)} / {human_bytes(self.total)}"
        else:
            text = f"{self.label} {human_bytes(self.done)}"
        return text[: max(width - 1, 10)]


class Bars:
    """Rows redrawn in place on a terminal."""

    def __init__(
        self,
        stream: TextIO,
        *,
        clock: Callable[[], float] = time.monotonic,
        width: int | None = None,
    ) -> None:
        self._stream = stream
        self._clock = clock
        self._width = width or shutil.get_terminal_size((80, 24)).columns
        self._rows: dict[str, _Row] = {}
        self._drawn = 0
        self._last = 0.0
        self._notes = 0
        self._lock = threading.Lock()

    def start(self, key: str, label: str, total: int | None = None) -> None:
        with self._lock:
            self._rows[key] = _Row(shorten(label), 0, total)
            self._draw(force=True)

    def update(self, key: str, done: int, total: int | None = None) -> None:
        with self._lock:
            row = self._rows.get(key)
            if row is None or row.status is not None:
                return
            row.done = done
            if total is not None:
                row.total = total
            self._draw(force=False)

    def finish(self, key: str, status: str = "done") -> None:
        with self._lock:
            row = self._rows.get(key)
            if row is None:
                self._rows[key] = row = _Row(key)
            row.status = status
            self._draw(force=True)

    def note(self, text: str) -> None:
        with self._lock:
            self._notes += 1
            self._rows[f"\0note{self._notes}"] = _Row("", status=shorten(text))
            self._draw(force=True)

    def close(self) -> None:
        with self._lock:
            self._draw(force=True)

    def _draw(self, *, force: bool) -> None:
        now = self._clock()
        if not force and now - self._last < REDRAW_INTERVAL_S:
            return
        self._last = now
        out = []
        if self._drawn:
            out.append(f"\x1b[{self._drawn}A")  # back to the first row we drew
        for row in self._rows.values():
            out.append("\r\x1b[2K" + row.render(self._width) + "\n")
        self._drawn = len(self._rows)
        self._stream.write("".join(out))
        self._stream.flush()


def for_stream(stream: TextIO, *, quiet: bool = False) -> Progress:
    """Bars on a terminal, lines otherwise, nothing when quiet."""
    if quiet:
        return Quiet()
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    return Bars(stream) if tty else Lines(stream)


__all__ = [
    "Bars",
    "Lines",
    "Progress",
    "Quiet",
    "for_stream",
    "human_bytes",
    "short_digest",
    "shorten",
]
