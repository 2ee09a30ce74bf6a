"""Tar streams of a container's files for `sbx cp` and `sbx export`, and docker's cp
path rules.

docker cp's rules (docker-cp(1), "the behavior is as follows"), as a pure `plan`:

- SRC a file: DEST a directory -> copied into it under SRC's name; DEST a file ->
  overwritten; DEST missing -> created as that file, unless DEST ends with `/`
  ("the destination directory must exist").
- SRC a directory: DEST a directory -> copied into it under SRC's name, or only its
  content when SRC ends with `/.`; DEST missing -> created with SRC's content;
  DEST a file -> refused ("cannot copy a directory to a file").
- SRC ending with `/` must be a directory. DEST's parent must exist.

A stream is a plain tar whose first member is the top of what was copied (named as
SRC's last component, or "." for a `/.` copy): the extracting side reads it to know
what SRC was, and renames it per the plan, as docker's RebaseArchiveEntries does.

`write_tree` walks without following symlinks (a link is archived as a link) and
builds each header from lstat alone: no user-name lookups, because inside a
container those would read its /etc/passwd and load its NSS modules. `extract`
refuses absolute member names and `..` components (and hard links naming them),
never writes through a symlink (each parent below the extraction directory is
checked with lstat, and files are opened O_NOFOLLOW) and sets owners only when
asked (`owner`), so that files copied out belong to the user who copies them.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import stat
import tarfile
from collections.abc import Callable, Iterator
from typing import IO, NamedTuple

from sandbox.errors import SbxError

BLOCK = 1 << 20


class CopyError(SbxError):
    pass


# -- path rules ----------------------------------------------------------------------
class Source(NamedTuple):
    """What SRC says by its spelling alone."""

    path: str  # normalized
    contents_only: bool  # ends with "/." (or is "/"): the directory's content
    must_be_dir: bool  # ends with "/"


def parse_source(text: str) -> Source:
    if not text:
        raise CopyError("empty source path")
    contents = text.endswith("/.") or text == "." or os.path.normpath(text) == "/"
    must_dir = text.endswith("/") or contents
    return Source(os.path.normpath(text), contents, must_dir)


class Plan(NamedTuple):
    """Where the stream goes: members are extracted under `directory`, with the top
    member renamed to `top` (None: a "." top, its content goes into `directory`);
    `make_dir`: create `directory` itself first (its parent must exist)."""

    directory: str
    top: str | None
    make_dir: bool = False


def plan(src_is_dir: bool, contents_only: bool, src_name: str, dest: str,
         dest_exists: bool, dest_is_dir: bool) -> Plan:
    """docker's cp rules (see the module docstring); raises CopyError."""
    trailing = dest.endswith("/") or dest.endswith("/.")
    norm = os.path.normpath(dest)
    if src_is_dir:
        if dest_exists and not dest_is_dir:
            raise CopyError(f"cannot copy a directory to a file: {dest}",
                            hint="give a directory, or a path that does not exist yet")
        if contents_only:
            return Plan(norm, None, make_dir=not dest_exists)
        if dest_exists:
            return Plan(norm, src_name)
        return Plan(os.path.dirname(norm) or "/", os.path.basename(norm))
    if dest_exists and dest_is_dir:
        return Plan(norm, src_name)
    if not dest_exists and trailing:
        raise CopyError(f"the destination directory must exist: {dest}",
                        hint="create it first, or drop the trailing /")
    return Plan(os.path.dirname(norm) or "/", os.path.basename(norm))


def describe(path: str) -> tuple[bool, bool]:
    """(exists, is a directory) of a destination, following symlinks."""
    try:
        return True, stat.S_ISDIR(os.stat(path).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        return False, False


# -- writing -------------------------------------------------------------------------
def _info(name: str, st: os.stat_result, path: str,
          ids: Callable[[int, int], tuple[int, int]] | None) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode = stat.S_IMODE(st.st_mode)
    uid, gid = (st.st_uid, st.st_gid) if ids is None else ids(st.st_uid, st.st_gid)
    info.uid, info.gid = uid, gid
    info.uname = info.gname = ""
    info.mtime = st.st_mtime
    if stat.S_ISREG(st.st_mode):
        info.type, info.size = tarfile.REGTYPE, st.st_size
    elif stat.S_ISDIR(st.st_mode):
        info.type = tarfile.DIRTYPE
    elif stat.S_ISLNK(st.st_mode):
        info.type, info.linkname = tarfile.SYMTYPE, os.readlink(path)
    elif stat.S_ISFIFO(st.st_mode):
        info.type = tarfile.FIFOTYPE
    elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        info.type = tarfile.CHRTYPE if stat.S_ISCHR(st.st_mode) else tarfile.BLKTYPE
        info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
    else:
        raise CopyError(f"can't archive {path}: a socket or unknown file type")
    return info


def _walk(path: str, name: str, st: os.stat_result, one_fs: bool = False,
          skip: frozenset[str] = frozenset()) -> Iterator[tuple[str, str, os.stat_result]]:
    """(host path, member name, lstat) of `path` and everything below it, parents
    first; a directory is listed after its own entry is taken, never through a link.
    `one_fs`: a directory on another filesystem, or whose path is in `skip` (a mount
    point: /proc, a volume), is listed but not entered, as tar --one-file-system."""
    stack = [(path, name, st)]
    while stack:
        p, n, s = stack.pop()
        yield p, n, s
        if stat.S_ISDIR(s.st_mode) and not (
                one_fs and (s.st_dev != st.st_dev or p in skip)):
            children = []
            with os.scandir(p) as it:
                for entry in it:
                    children.append((entry.path, f"{n}/{entry.name}" if n != "." else
                                     entry.name, entry.stat(follow_symlinks=False)))
            stack.extend(sorted(children, key=lambda c: c[1], reverse=True))


def write_tree(out: IO[bytes], src: Source, *, follow: bool = False,
               ids: Callable[[int, int], tuple[int, int]] | None = None,
               one_fs: bool = False, top_entry: bool = True,
               skip: frozenset[str] = frozenset()) -> None:
    """Write SRC as a tar stream to `out`; its top member is named after SRC's last
    component, or "." for a content-only copy. `follow` (-L) follows SRC itself when
    it is a symlink; `ids` rewrites owners (host ids to the container's); `one_fs`
    stays on SRC's filesystem, and leaves out what is under the paths in `skip`
    (a mount point that is a file is archived empty); without `top_entry` a "." top
    is left out (export).
    """
    path = src.path
    try:
        st = os.stat(path) if (follow or src.must_be_dir) else os.lstat(path)
    except FileNotFoundError:
        raise CopyError(f"no such file or directory: {path}") from None
    except NotADirectoryError:
        raise CopyError(f"not a directory: a component of {path} is a file") from None
    except OSError as exc:
        raise CopyError(f"can't read {path}: {exc.strerror}") from None
    if src.must_be_dir and not stat.S_ISDIR(st.st_mode):
        raise CopyError(f"not a directory: {path}",
                        hint="drop the trailing / (or /.) to copy a file")
    top = "." if src.contents_only else (os.path.basename(path) or ".")
    if (follow or src.must_be_dir) and os.path.islink(path):
        # Walk the link's target under SRC's own name (inside a container this
        # resolves in its root: the kernel's, or the chroot's).
        path = os.path.realpath(path)
    links: dict[tuple[int, int], str] = {}
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for p, name, s in _walk(path, top, st, one_fs, skip):
            if name == "." and not top_entry:
                continue
            info = _info(name, s, p, ids)
            if p in skip and info.type == tarfile.REGTYPE:
                info.size = 0  # a file bind-mounted over (/etc/hosts): not the image's
                tar.addfile(info)
                continue
            key = (s.st_dev, s.st_ino)
            if info.type == tarfile.REGTYPE and s.st_nlink > 1:
                if key in links:
                    info.type, info.linkname, info.size = tarfile.LNKTYPE, links[key], 0
                    tar.addfile(info)
                    continue
                links[key] = name
            if info.type == tarfile.REGTYPE:
                fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                with os.fdopen(fd, "rb") as f:
                    tar.addfile(info, _Exactly(f, info.size))
            else:
                tar.addfile(info)


class _Exactly(io.RawIOBase):
    """A file that reads as exactly `size` bytes: a file that grows or shrinks while
    it is archived must not corrupt the stream (padded with zeros, or cut)."""

    def __init__(self, f: IO[bytes], size: int) -> None:
        self.f = f
        self.left = size

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:  # type: ignore[override]
        if self.left <= 0:
            return b""
        want = self.left if n < 0 else min(n, self.left)
        data = self.f.read(want) or b"\0" * want
        self.left -= len(data)
        return data


# -- reading -------------------------------------------------------------------------
def check_name(name: str) -> list[str]:
    """The components of a member name; absolute names and ".." are refused."""
    if name.startswith("/"):
        raise CopyError(f"refusing archive member {name!r}: absolute path",
                        hint="archives for sbx cp must hold relative paths")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise CopyError(f"refusing archive member {name!r}: it leaves the destination "
                        "(..)", hint="archives for sbx cp must not hold .. components")
    return parts


def validate(fileobj: IO[bytes]) -> None:
    """Check every member name of a seekable archive (before any is written)."""
    try:
        with tarfile.open(fileobj=fileobj, mode="r:") as tar:
            for m in tar:
                check_name(m.name)
                if m.islnk():
                    check_name(m.linkname)
    except tarfile.TarError as exc:
        raise CopyError(f"not a valid tar archive: {exc}") from None


def _rename(parts: list[str], first: str | None, top: str | None) -> list[str]:
    """Rebase a member from the stream's top name to the plan's."""
    if first is None or top is None:
        return parts
    if parts and parts[0] == first:
        return [top, *parts[1:]]
    raise CopyError(f"archive member {'/'.join(parts)!r} is not under {first!r}")


def _safe_parent(base: str, parts: list[str]) -> str:
    """The host path for `parts` under `base`, refusing a symlink (or a file) on the
    way: nothing may be written through a link."""
    path = base
    for part in parts[:-1]:
        path = os.path.join(path, part)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            os.mkdir(path, 0o755)
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise CopyError(f"refusing to write through {path}: not a directory "
                            "(a symbolic link?)")
    return os.path.join(path, parts[-1]) if parts else base


def _clear(path: str, is_dir: bool) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        if not is_dir:
            raise CopyError(f"cannot overwrite directory {path} with a non-directory")
        return
    if is_dir:
        raise CopyError(f"cannot overwrite non-directory {path} with a directory")
    os.unlink(path)


def extract(fileobj: IO[bytes], dest: str, *, contents_only_stream: bool = False,
            owner: tuple[int, int] | None = None, keep_owners: bool = False) -> int:
    """Extract a stream that `write_tree` (or a user, with `-`) made into DEST by
    docker's rules. `contents_only_stream`: a user's archive, whose members all go
    into DEST, which must be a directory. Owners: `keep_owners` sets the members'
    ids, else `owner` when given, else files belong to whoever extracts. Returns the
    number of members written."""
    exists, is_dir = describe(dest)
    written = 0
    dirs: list[tuple[str, tarfile.TarInfo]] = []
    try:
        with tarfile.open(fileobj=fileobj, mode="r|") as tar:
            first: str | None = None
            target: Plan | None = None
            for m in tar:
                parts = check_name(m.name)
                if target is None:
                    if contents_only_stream:
                        if not (exists and is_dir):
                            raise CopyError(f"destination {dest} must be an existing "
                                            "directory to extract an archive into")
                        target = Plan(os.path.normpath(dest), None)
                    else:
                        first = parts[0] if parts else None
                        target = plan(m.isdir(), first is None, first or ".", dest,
                                      exists, is_dir)
                        if first is not None and len(parts) > 1:
                            raise CopyError("the archive does not start with its top entry")
                    _ready(target)
                rel = _rename(parts, first, target.top)
                path = _safe_parent(target.directory, rel)
                if not rel and not m.isdir():
                    raise CopyError("a file member named '.'")
                _write_member(tar, m, path, target, first)
                written += 1
                if m.isdir():
                    dirs.append((path, m))
                else:
                    _attrs(path, m, owner, keep_owners)
            for path, m in reversed(dirs):  # children first: their writes touch mtimes
                if target is not None and path == target.directory and not target.make_dir:
                    continue  # an existing destination keeps its own owner and mode
                _attrs(path, m, owner, keep_owners)
    except tarfile.TarError as exc:
        raise CopyError(f"not a valid tar archive: {exc}") from None
    except OSError as exc:
        raise CopyError(f"can't write {exc.filename or dest}: {exc.strerror}") from None
    return written


def _ready(target: Plan) -> None:
    parent = target.directory if not target.make_dir else os.path.dirname(target.directory)
    exists, is_dir = describe(parent or "/")
    if not (exists and is_dir):
        raise CopyError(f"no such directory: {parent}",
                        hint="the destination's parent directory must exist")
    if target.make_dir:
        with contextlib.suppress(FileExistsError):
            os.mkdir(target.directory, 0o755)


def _write_member(tar: tarfile.TarFile, m: tarfile.TarInfo, path: str, target: Plan,
                  first: str | None) -> None:
    if m.isdir():
        _clear(path, True)
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o700)
    elif m.isreg():
        _clear(path, False)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW |
                     os.O_CLOEXEC, 0o600)
        src = tar.extractfile(m)
        with os.fdopen(fd, "wb") as out:
            while src is not None and (chunk := src.read(BLOCK)):
                out.write(chunk)
    elif m.issym():
        _clear(path, False)
        os.symlink(m.linkname, path)
    elif m.islnk():
        link = _rename(check_name(m.linkname), first, target.top)
        _clear(path, False)
        os.link(_safe_parent(target.directory, link), path, follow_symlinks=False)
    elif m.isfifo():
        _clear(path, False)
        os.mkfifo(path, 0o600)
    elif m.ischr() or m.isblk():
        _clear(path, False)
        kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK
        # Device nodes cannot be made rootless: skipped, as layers skip them.
        with contextlib.suppress(PermissionError):
            os.mknod(path, kind | 0o600, os.makedev(m.devmajor, m.devminor))
    else:
        raise CopyError(f"unsupported archive member type for {m.name!r}")


def _attrs(path: str, m: tarfile.TarInfo, owner: tuple[int, int] | None,
           keep_owners: bool) -> None:
    if not os.path.lexists(path):
        return  # a skipped device node
    ids = (m.uid, m.gid) if keep_owners else owner
    if ids is not None:
        try:
            os.lchown(path, *ids)
        except OSError as exc:
            if exc.errno != errno.EINVAL:  # an id the namespace does not map
                raise
    if not m.issym():
        os.chmod(path, m.mode & 0o7777)
    with contextlib.suppress(OSError):
        os.utime(path, (m.mtime, m.mtime), follow_symlinks=False)
