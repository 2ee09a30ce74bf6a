"""Resolve `--user user[:group]` against the container's /etc/passwd and /etc/group.

Semantics follow runc's libcontainer/user `GetExecUser` (what docker and podman do):
names are looked up in the rootfs's own files, numeric ids need no entry, a user found
by name also gets every group that lists it as a member, and HOME comes from passwd.
Parsing is pure; only `lookup` reads files, through `secure_join`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from sandbox.errors import SbxError
from sandbox.runtime.record import Record
from sandbox.runtime.securejoin import secure_join


class PasswdEntry(NamedTuple):
    name: str
    uid: int
    gid: int
    home: str
    shell: str


class GroupEntry(NamedTuple):
    name: str
    gid: int
    members: tuple[str, ...]


class ExecUser(Record):
    """The numeric identity a container process runs with."""

    __slots__ = ("additional_gids", "gid", "home", "name", "uid")

    def __init__(self, uid: int, gid: int, additional_gids: list[int] | None = None,
                 name: str | None = None, home: str = "/") -> None:
        self.uid = uid
        self.gid = gid
        self.additional_gids = additional_gids or []
        self.name = name
        self.home = home


def parse_passwd(text: str) -> list[PasswdEntry]:
    entries = []
    for line in text.splitlines():
        parts = line.strip().split(":")
        if len(parts) < 7 or line.startswith("#"):
            continue
        try:
            entries.append(PasswdEntry(parts[0], int(parts[2]), int(parts[3]), parts[5], parts[6]))
        except ValueError:
            continue  # a malformed line: glibc skips it too
    return entries


def parse_group(text: str) -> list[GroupEntry]:
    entries = []
    for line in text.splitlines():
        parts = line.strip().split(":")
        if len(parts) < 4 or line.startswith("#"):
            continue
        try:
            members = tuple(m for m in parts[3].split(",") if m)
            entries.append(GroupEntry(parts[0], int(parts[2]), members))
        except ValueError:
            continue
    return entries


def resolve(spec: str, passwd: list[PasswdEntry], groups: list[GroupEntry]) -> ExecUser:
    """Turn 'name', 'uid', 'name:group', 'uid:gid' or '' into numeric ids."""
    user_part, _, group_part = spec.partition(":")
    user = ExecUser(uid=0, gid=0, name="root", home="/root")
    entry: PasswdEntry | None = None
    if user_part:
        if user_part.isdigit():
            uid = int(user_part)
            entry = next((p for p in passwd if p.uid == uid), None)
            user = ExecUser(uid=uid, gid=0, name=None, home="/")
        else:
            entry = next((p for p in passwd if p.name == user_part), None)
            if entry is None:
                raise SbxError(
                    f"unable to find user {user_part}: no matching entries in passwd file",
                    hint="add the user to the image's /etc/passwd, or pass a numeric uid",
                )
    else:
        entry = next((p for p in passwd if p.uid == 0), None)
    if entry is not None:
        user = ExecUser(uid=entry.uid, gid=entry.gid, name=entry.name, home=entry.home or "/")
    if group_part:
        if group_part.isdigit():
            user.gid = int(group_part)
        else:
            group = next((g for g in groups if g.name == group_part), None)
            if group is None:
                raise SbxError(
                    f"unable to find group {group_part}: no matching entries in group file",
                    hint="add the group to the image's /etc/group, or pass a numeric gid",
                )
            user.gid = group.gid
    if user.name:
        user.additional_gids = sorted(
            {g.gid for g in groups if user.name in g.members and g.gid != user.gid}
        )
    return user


Reader = Callable[[str], str]


def dir_reader(root: str) -> Reader:
    """Read files of a rootfs directory, resolving every link inside it."""

    def read(path: str) -> str:
        try:
            with open(secure_join(root, path), encoding="utf-8", errors="replace") as f:
                return f.read()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return ""
        except PermissionError as exc:
            raise SbxError(f"can't read {path} in {root}: {exc.strerror}") from None

    return read


def lookup_with(read: Reader, spec: str) -> ExecUser:
    """Resolve a --user value against the passwd and group files `read` returns
    ("" for a missing file): a rootfs directory or an image's layers."""
    return resolve(spec, parse_passwd(read("/etc/passwd")), parse_group(read("/etc/group")))


def lookup(root: str, spec: str) -> ExecUser:
    """Resolve a --user value against the rootfs directory `root`."""
    return lookup_with(dir_reader(root), spec)
