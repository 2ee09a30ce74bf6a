"""Subordinate id ranges: the one reader of /etc/subuid and /etc/subgid.

The runtime (`sandbox.runtime.idmap`) asks this module which ranges the current user
may map through newuidmap(1)/newgidmap(1), and `sandbox.system.checks` reports them.
Stdlib only; it must not import the runtime or the CLI.

File format, subuid(5)/subgid(5): one `owner:start:count` entry per line, where owner
is a login name or a numeric user id. Both files are keyed by the *user*: /etc/subgid
names the user too, not a group. newuidmap(1) accepts an entry when its owner equals
the caller's login name or, written as a number, the caller's uid (shadow's
lib/subordinateio.c), and so does this reader. Ranges served through nsswitch's
`subid:` database (sssd, LDAP) are not seen here; newuidmap would still honour them.
"""

from __future__ import annotations

import os
from typing import Literal, NamedTuple

from sandbox.errors import SbxError

SUBID_FILES: dict[str, str] = {"uid": "/etc/subuid", "gid": "/etc/subgid"}

# The ids a whole container image may use (0..65535): podman and usermod's
# SUB_UID_COUNT default, and what Debian images expect (nobody is 65534).
FULL_RANGE = 65536


class SubIdRange(NamedTuple):
    """`count` subordinate ids starting at `start` on the host."""

    start: int
    count: int

    @property
    def end(self) -> int:
        """The last id of the range (inclusive), as usermod's --add-subuids spells it."""
        return self.start + self.count - 1


def parse_subid(text: str, user: str, uid: int) -> list[tuple[int, int]]:
    """Return the (start, count) ranges of `text` that belong to `user` or `uid`.

    Blank lines and `#` comments are skipped, and so are malformed lines (wrong field
    count, non-numeric or negative numbers, an empty range): shadow's reader ignores
    what it cannot parse rather than failing, and so must we. Order is kept: the
    runtime maps ranges in file order, as newuidmap is given them.
    """
    ranges: list[tuple[int, int]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split(":")
        if len(fields) != 3:
            continue
        owner, start_s, count_s = (f.strip() for f in fields)
        if not (start_s.isdigit() and count_s.isdigit()):
            continue
        start, count = int(start_s), int(count_s)
        if count == 0:
            continue
        if owner == user or (owner.isdigit() and int(owner) == uid):
            ranges.append((start, count))
    return ranges


def read_subid_ranges(
    kind: Literal["uid", "gid"], user: str, uid: int, path: str | os.PathLike[str] | None = None
) -> list[SubIdRange]:
    """Read the current user's ranges from /etc/subuid (kind "uid") or /etc/subgid.

    A missing file means no ranges (sbx then maps only the user's own id). A file that
    exists but cannot be read is an error: silently mapping one id would make image
    files owned by other ids show up as nobody, which is far harder to diagnose.
    """
    if kind not in SUBID_FILES:
        raise ValueError(f"kind must be 'uid' or 'gid', not {kind!r}")
    # Plain open(), not pathlib: this runs on every `sbx run`, where imports count.
    file = os.fspath(path) if path is not None else SUBID_FILES[kind]
    try:
        with open(file, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise SbxError(
            f"can't read {file}: {exc.strerror}",
            hint=f"{file} should be readable by all users (mode 0644, owner root)",
        ) from exc
    return [SubIdRange(start, count) for start, count in parse_subid(text, user, uid)]
