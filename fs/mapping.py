"""Owners: translating ids between how a layer stores them and how the mount presents
them, and the `override_stat` xattrs that store an owner and mode in place of the real
ones.

Owns: the `uidmapping=`/`gidmapping=`/`squash_to_*` semantics and the override_stat
format. Imports nothing from `sandbox`, and nothing from the rest of fs/.

Mappings are fuse-overlayfs's (main.c, read_mappings/find_mapping): `C:H:N` says that
ids C..C+N-1 as stored in the layers appear as H..H+N-1 through the mount; a stored
id outside every range appears as the overflow id (65534), and so does a presented
id with no stored counterpart. podman writes the list as
`uidmapping=:0:1000:1:1:100000:65536` (containers/storage's optsAppendMappings adds a
":" before every triple, the first included), so empty fields are skipped.
`squash_to_uid=`, `squash_to_gid=` and `squash_to_root` present every owner as one id
and make chown a no-op that succeeds, as fuse-overlayfs does.

override_stat (containers/storage idtools, fuse-overlayfs utils.c override_mode): the
value "UID:GID:MODE[:TYPE]" — MODE octal permission bits with setuid/setgid/sticky,
TYPE one of file, dir, symlink, pipe, socket, block-MAJ-MIN, char-MAJ-MIN — replaces
the owner, permission bits and (given TYPE, for a regular file) the type of the file it
is set on. As in fuse-overlayfs it is honoured only in a layer whose root directory
carries one of the names in OVERRIDE_XATTRS, which sbx's extractor and
containers/storage's force_mask both set (sandbox/images/extract.py, mark_root).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass

# In the order fuse-overlayfs's direct.c tries them on a layer root.
PRIVILEGED_OVERRIDE_XATTR = b"security.fuseoverlayfs.override_stat"
CONTAINERS_OVERRIDE_XATTR = b"user.containers.override_stat"
USER_OVERRIDE_XATTR = b"user.fuseoverlayfs.override_stat"
OVERRIDE_XATTRS = (PRIVILEGED_OVERRIDE_XATTR, CONTAINERS_OVERRIDE_XATTR, USER_OVERRIDE_XATTR)

OVERFLOW_ID = 65534

_TYPES = {
    "file": stat.S_IFREG,
    "dir": stat.S_IFDIR,
    "symlink": stat.S_IFLNK,
    "pipe": stat.S_IFIFO,
    "socket": stat.S_IFSOCK,
}
_TYPE_NAMES = {v: k for k, v in _TYPES.items()}


class MappingError(ValueError):
    """A uidmapping/gidmapping value that is not a list of C:H:N triples."""


@dataclass(frozen=True, slots=True)
class IdRange:
    stored: int
    presented: int
    count: int


def parse_mapping(text: str) -> list[IdRange]:
    """`C:H:N[:C:H:N...]` into ranges; empty fields are skipped (see module docstring)."""
    fields = [f for f in text.split(":") if f]
    if not fields or len(fields) % 3:
        raise MappingError(f"invalid mapping specified: {text!r}")
    try:
        nums = [int(f, 10) for f in fields]
    except ValueError:
        raise MappingError(f"invalid mapping specified: {text!r}") from None
    if any(n < 0 for n in nums):
        raise MappingError(f"invalid mapping specified: {text!r}")
    return [IdRange(nums[i], nums[i + 1], nums[i + 2]) for i in range(0, len(nums), 3)]


class IdMap:
    """One direction-agnostic id translation (uids or gids)."""

    __slots__ = ("_overflow", "_ranges", "_squash", "identity")

    def __init__(
        self,
        ranges: Sequence[IdRange] = (),
        *,
        squash: int | None = None,
        overflow: int = OVERFLOW_ID,
    ) -> None:
        self._ranges = tuple(ranges)
        self._squash = squash
        self._overflow = overflow
        self.identity = not self._ranges and squash is None

    @property
    def squashed(self) -> bool:
        return self._squash is not None

    def present(self, stored: int) -> int:
        """The id the mount shows for an id stored in a layer (fuse-overlayfs's
        find_mapping with direct=true)."""
        if self._squash is not None:
            return self._squash
        if not self._ranges:
            return stored
        for r in self._ranges:
            if r.stored <= stored < r.stored + r.count:
                return r.presented + (stored - r.stored)
        return self._overflow

    def store(self, presented: int) -> int:
        """The id to store for an id given through the mount (chown, a new file's
        owner): the inverse of present(); squashing does not apply this way."""
        if not self._ranges:
            return presented
        for r in self._ranges:
            if r.presented <= presented < r.presented + r.count:
                return r.stored + (presented - r.presented)
        return self._overflow


def read_overflow_id(kind: str) -> int:
    """/proc/sys/kernel/overflowuid or overflowgid, as fuse-overlayfs reads them."""
    try:
        with open(f"/proc/sys/kernel/overflow{kind}") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return OVERFLOW_ID


@dataclass(frozen=True, slots=True)
class Override:
    """A parsed override_stat value."""

    uid: int
    gid: int
    mode: int  # permission bits, setuid/setgid/sticky included
    kind: int | None = None  # S_IFMT bits from TYPE, if given
    rdev: int = 0


def parse_override(value: bytes) -> Override | None:
    """"UID:GID:MODE[:TYPE]"; None for a value that does not parse (ignored, as
    fuse-overlayfs ignores an sscanf that matches fewer than three fields)."""
    try:
        parts = value.decode("ascii").rstrip("\0").split(":")
        if len(parts) < 3:
            return None
        uid, gid, mode = int(parts[0]), int(parts[1]), int(parts[2], 8)
    except (UnicodeDecodeError, ValueError):
        return None
    kind: int | None = None
    rdev = 0
    if len(parts) >= 4 and parts[3]:
        t = parts[3]
        if t in _TYPES:
            kind = _TYPES[t]
        elif t.startswith(("block-", "char-")):
            head, _, nums = t.partition("-")
            major, _, minor = nums.partition("-")
            try:
                rdev = os.makedev(int(major), int(minor))
            except ValueError:
                return None
            kind = stat.S_IFBLK if head == "block" else stat.S_IFCHR
        else:
            return None
    if kind is None and stat.S_IFMT(mode):
        kind = stat.S_IFMT(mode)
    return Override(uid, gid, stat.S_IMODE(mode), kind, rdev)


def format_override(uid: int, gid: int, mode: int, rdev: int = 0) -> bytes:
    """The value containers/storage writes (idtools.FormatContainersOverrideXattrDevice):
    "%d:%d:%04o:%s" with the type of `mode`."""
    kind = stat.S_IFMT(mode)
    if kind == stat.S_IFBLK:
        t = f"block-{os.major(rdev)}-{os.minor(rdev)}"
    elif kind == stat.S_IFCHR:
        t = f"char-{os.major(rdev)}-{os.minor(rdev)}"
    else:
        t = _TYPE_NAMES.get(kind, "file")
    return f"{uid}:{gid}:{stat.S_IMODE(mode):04o}:{t}".encode()


def apply_override(ov: Override, mode: int, rdev: int) -> tuple[int, int]:
    """(st_mode, st_rdev) of a file whose real mode is `mode`: the override's
    permission bits, and its type only where the real file is a regular file (a
    device or fifo stored as a plain file by a user who cannot mknod)."""
    kind = stat.S_IFMT(mode)
    if ov.kind is not None and kind == stat.S_IFREG:
        kind = ov.kind
        if ov.kind in (stat.S_IFCHR, stat.S_IFBLK):
            rdev = ov.rdev
    return kind | ov.mode, rdev


def read_override(path: bytes, name: bytes) -> Override | None:
    """The override at `path` (a /proc/self/fd path; the last component is not
    followed), or None where it has none."""
    try:
        value = os.getxattr(path, name, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.ENODATA, errno.EOPNOTSUPP, errno.EPERM, errno.EACCES):
            return None
        raise
    return parse_override(value)
