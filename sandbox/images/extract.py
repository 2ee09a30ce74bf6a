"""Safe, streaming extraction of one image layer: a tar, plain, gzip or zstd.

Owns the one way sbx turns layer bytes into files. It must not import the runtime,
the registry or the store, and never touches namespaces: to give files their real
owners the caller runs it as root of a user namespace (owners="real"); without
subordinate ids it records owners in an xattr instead (owners="xattr").

Why not tarfile.extractall: a layer is untrusted input, and the classic escapes all
go through path strings. Here every member is created relative to a directory
descriptor obtained by walking from `dest` one component at a time with
O_PATH|O_NOFOLLOW|O_DIRECTORY (openat-style), and files are created with
O_CREAT|O_EXCL|O_NOFOLLOW, so:
- `../x`, `/x` and `a/../../x` are refused outright (tar(5) names are relative);
- a symlink planted by an earlier member (`link -> /tmp/x`, then `link/file`), or by
  a lower layer when applying onto a flattened rootfs, is never followed: walking
  through it fails with ENOTDIR/ELOOP and the member is refused. Resolving paths as
  strings and then using them is the check-then-use race of CVE-2018-15664 (docker
  cp) and CVE-2019-14271; descriptors leave no window;
- a hard link's target is looked up by name inside `dest`, with the same walk, and
  linkat(2) is told not to follow a symlink target;
- symlinks are created as links and their targets are never resolved by us, so an
  absolute `/etc/passwd` target stays a link that points there.

The stream is read once, in order (tarfile's "r|" mode), never held in memory;
PAX/GNU extended headers larger than MAX_HEADER_SIZE are refused before tarfile reads
them into memory. The decompressed stream is hashed on the way: its digest is the
layer's DiffID (OCI image-spec config.md), checked against `expected_diff_id`.

Ownership, modes and times follow tar(5) and GNU tar's order: data first, then
chown (which clears setuid bits and file capabilities), then xattrs, then chmod,
then utimes; directories get their mode and times after their contents. Xattrs come
from PAX `SCHILY.xattr.*` records: `user.*` must apply, others are best-effort, and
the union-filesystem namespaces (whiteout.RESERVED_XATTR_PREFIXES) are never taken
from a layer.

owners="xattr" writes containers/storage's `user.containers.override_stat`, which
fuse-overlayfs reads (its `override_mode()` in utils.c does
`sscanf (buf, "%d:%d:%o", &uid, &gid, &mode)` and keeps the file type of the real
file). The value is "UID:GID:MODE:TYPE" as containers/storage's
`idtools.FormatContainersOverrideXattrDevice` writes it (`"%d:%d:%04o:%s"`): MODE is
the permission bits with setuid/setgid/sticky in octal, no file-type bits, and TYPE
is "file" or "dir" (the only types that may carry a user.* xattr). The host copy
belongs to the caller, with u+rw (u+rwx for directories) added so the tree stays
manageable, and without setuid/setgid/sticky, which live in the xattr only. The
layer's root always gets one too (0:0:0755 unless the tar has a "./" entry):
fuse-overlayfs reads override_stat only in layers whose root has it (direct.c).
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile
import threading
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import BinaryIO, Literal, Protocol

from sandbox.errors import SbxError
from sandbox.images import whiteout as wh
from sandbox.images.whiteout import WhiteoutFormat

Owners = Literal["real", "xattr"]
ApplyWhiteouts = Literal["record", "delete"]
Compression = Literal["gzip", "zstd", "none"]

OVERRIDE_STAT_XATTR = "user.containers.override_stat"

# An extended header holds a long name or a few xattrs; 1 MiB is generous, and it
# stops a header that claims gigabytes from being read into memory by tarfile.
MAX_HEADER_SIZE = 1 << 20
NAME_MAX = 255
PATH_MAX = 4096
_CHUNK = 1 << 20

_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_XZ_MAGIC = b"\xfd7zXZ\x00"
_BZIP2_MAGIC = b"BZh"
_EXT_HEADER_TYPES = (
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.SOLARIS_XHDTYPE,
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
)
# containers/storage's chunked differ skips it too (xattrsToIgnore): a label from
# another host is wrong here, and setting it needs privilege.
_IGNORED_XATTRS = frozenset({"security.selinux"})

_PATH_DIR = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class LayerError(SbxError):
    """A layer could not be extracted."""


class UnsafeMember(LayerError):
    """A member that would write outside the destination, or through a symlink."""

    def __init__(self, member: str, reason: str) -> None:
        self.member = member
        self.reason = reason
        super().__init__(
            f"refusing layer member {member!r}: {reason}",
            hint="the image is malformed or malicious; it was not extracted",
        )


class HeaderTooLarge(LayerError):
    """A PAX or GNU extended header larger than MAX_HEADER_SIZE."""

    def __init__(self, member: str, size: int) -> None:
        self.member = member
        self.size = size
        super().__init__(
            f"refusing layer: extended tar header {member!r} claims {size} bytes "
            f"(limit {MAX_HEADER_SIZE})",
            hint="the image is malformed or malicious; it was not extracted",
        )


class CorruptLayer(LayerError):
    """The layer's compression or tar structure is broken or truncated."""


class UnsupportedLayer(LayerError):
    """A compression sbx can't read, or a tool it needs for it is missing."""


class DiffIDMismatch(LayerError):
    """The uncompressed layer does not hash to the DiffID the image config lists."""

    def __init__(self, expected: str, actual: str) -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"layer content is {actual}, but the image config says {expected}",
            hint="the image is corrupt or was tampered with; remove it and pull again",
        )


class MemberError(LayerError):
    """A system call failed while creating one member."""

    def __init__(self, member: str, op: str, exc: OSError, hint: str | None = None) -> None:
        self.member = member
        self.op = op
        self.errno = exc.errno
        super().__init__(f"extracting {member!r}: {op}: {os.strerror(exc.errno or 0)}", hint)


@dataclass
class ExtractStats:
    """What one extraction did."""

    files: int = 0  # members materialised: files, directories, links, fifos
    bytes: int = 0  # regular-file data written
    whiteouts: int = 0
    opaque_dirs: int = 0
    skipped_devices: list[str] = field(default_factory=list)  # "path (char 1:3)"
    skipped: list[str] = field(default_factory=list)  # other members left out, with why
    dropped_xattrs: list[str] = field(default_factory=list)  # "path: name (why)"
    compression: Compression = "none"
    diff_id: str = ""  # digest of the uncompressed tar stream
    tar_size: int = 0  # its length


class _Reader(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


def detect_compression(head: bytes) -> Compression:
    """The compression of a layer from its first bytes (RFC 1952 gzip, RFC 8878 zstd
    frame magic); anything else is taken for a plain tar."""
    if head.startswith(_GZIP_MAGIC):
        return "gzip"
    if head.startswith(_ZSTD_MAGIC):
        return "zstd"
    if head.startswith(_XZ_MAGIC) or head.startswith(_BZIP2_MAGIC):
        raise UnsupportedLayer(
            "layer is xz or bzip2 compressed, which OCI images do not use",
            hint="rebuild the image with gzip or zstd layers",
        )
    return "none"


class _Prefixed:
    """The bytes already peeked at, then the rest of the stream."""

    def __init__(self, head: bytes, rest: _Reader) -> None:
        self._head = head
        self._rest = rest

    def read(self, size: int = -1, /) -> bytes:
        if self._head:
            if size < 0 or size >= len(self._head):
                out, self._head = self._head, b""
                more = self._rest.read(size - len(out) if size >= 0 else -1)
                return out + more
            out, self._head = self._head[:size], self._head[size:]
            return out
        return self._rest.read(size)


def _read_head(f: _Reader, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = f.read(n - len(buf))
        if not chunk:
            break
        buf += chunk
    return buf


def _seekable_fd(f: object) -> int | None:
    """The descriptor of a real, seekable file (a blob in the store), else None."""
    try:
        if not f.seekable():  # type: ignore[attr-defined]
            return None
        return int(f.fileno())  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return None


class _Zstd:
    """`zstd -d` as a filter, since Python 3.11 has no zstd module.

    A real file is handed to zstd as its stdin directly; any other stream is pumped
    in by a helper thread, joined before extraction returns (sbx forks and unshares
    later, and unshare(CLONE_NEWUSER) refuses a process with live threads)."""

    def __init__(self, fileobj: _Reader, head: bytes, start: int | None) -> None:
        exe = shutil.which("zstd")
        if exe is None:
            raise UnsupportedLayer(
                "layer is zstd-compressed, and the `zstd` command is not installed",
                hint="install it (Debian: apt-get install zstd)",
            )
        self._err = tempfile.TemporaryFile()  # noqa: SIM115 (closed by close())
        self._pump_error: BaseException | None = None
        self._thread: threading.Thread | None = None
        fd = _seekable_fd(fileobj)
        if fd is not None and start is not None:
            os.lseek(fd, start, os.SEEK_SET)
            stdin: int = fd
        else:
            stdin = subprocess.PIPE
        self._proc = subprocess.Popen(
            [exe, "-d", "-c", "-q"], stdin=stdin, stdout=subprocess.PIPE, stderr=self._err
        )
        if stdin == subprocess.PIPE:
            self._thread = threading.Thread(
                target=self._pump, args=(_Prefixed(head, fileobj),), name="sbx-zstd-pump"
            )
            self._thread.daemon = True
            self._thread.start()

    def _pump(self, src: _Reader) -> None:
        pipe = self._proc.stdin
        assert pipe is not None
        try:
            while chunk := src.read(_CHUNK):
                pipe.write(chunk)
        except BrokenPipeError:
            pass  # zstd exited (bad data, or we stopped early); its status says why
        except BaseException as exc:
            self._pump_error = exc
        finally:
            with contextlib.suppress(OSError):
                pipe.close()

    def read(self, size: int = -1, /) -> bytes:
        assert self._proc.stdout is not None
        return self._proc.stdout.read(size)

    def finish(self) -> None:
        """After reading to EOF: wait for zstd and report how it ended."""
        if self._thread is not None:
            self._thread.join()
        rc = self._proc.wait()
        if self._pump_error is not None:
            if isinstance(self._pump_error, SbxError):
                raise self._pump_error
            raise CorruptLayer(f"reading the layer failed: {self._pump_error}")
        if rc != 0:
            self._err.seek(0)
            msg = self._err.read().decode(errors="replace").strip() or f"exit status {rc}"
            raise CorruptLayer(f"zstd could not decompress the layer: {msg}")

    def failure(self) -> str | None:
        """Why zstd failed, if it did: asked when the tar reader choked, since a
        truncated frame shows up there first (as an empty or short archive)."""
        try:
            rc = self._proc.wait(timeout=1)
        except subprocess.TimeoutExpired:
            return None  # still running: the problem is in the tar, not the frame
        if rc == 0:
            return None
        self._err.seek(0)
        return self._err.read().decode(errors="replace").strip() or f"exit status {rc}"

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        if self._thread is not None:
            # The pump ends with EPIPE now; a source blocked on a socket may take
            # longer, and it is a daemon thread that touches nothing of ours.
            self._thread.join(timeout=5)
        self._err.close()


class _Source:
    """The decompressed tar stream, hashed as it is read (its digest is the DiffID)."""

    def __init__(self, fileobj: BinaryIO, algorithm: str) -> None:
        start: int | None = None
        if _seekable_fd(fileobj) is not None:
            start = fileobj.tell()
        head = _read_head(fileobj, 6)
        self.compression = detect_compression(head)
        self._zstd: _Zstd | None = None
        self._gzip: gzip.GzipFile | None = None
        self._stream: _Reader
        if self.compression == "gzip":
            self._gzip = gzip.GzipFile(fileobj=_Prefixed(head, fileobj), mode="rb")  # type: ignore[arg-type]
            self._stream = self._gzip
        elif self.compression == "zstd":
            self._zstd = _Zstd(fileobj, head, start)
            self._stream = self._zstd
        else:
            self._stream = _Prefixed(head, fileobj)
        self._hash = hashlib.new(algorithm)
        self._algorithm = algorithm
        self.size = 0

    def read(self, size: int = -1, /) -> bytes:
        try:
            data = self._stream.read(size)
        except gzip.BadGzipFile as exc:
            raise CorruptLayer(f"layer is not valid gzip: {exc}") from None
        except OSError as exc:
            # The source failed (a dropped connection, a disk error): not the
            # member being written, which the caller's OSError handler would blame.
            raise LayerError(f"reading the layer failed: {exc}") from None
        self._hash.update(data)
        self.size += len(data)
        return data

    def finish(self) -> str:
        """Read what the tar reader left (padding after the end-of-archive blocks),
        check that the compression ended cleanly, and return the DiffID."""
        while self.read(_CHUNK):
            pass
        if self._zstd is not None:
            self._zstd.finish()
        return f"{self._algorithm}:{self._hash.hexdigest()}"

    def failure(self) -> str | None:
        return self._zstd.failure() if self._zstd is not None else None

    def close(self) -> None:
        if self._gzip is not None:
            self._gzip.close()
        if self._zstd is not None:
            self._zstd.close()


class _SafeTarInfo(tarfile.TarInfo):
    """tarfile's TarInfo, refusing oversized extended headers before they are read.

    tarfile reads a PAX or GNU long-name header's whole body with one read() of the
    size the header claims (TarInfo._proc_pax, _proc_gnulong): a crafted size would
    be an allocation of that many bytes."""

    def _proc_member(self, tarfile: tarfile.TarFile) -> tarfile.TarInfo:  # type: ignore[override]
        if self.type in _EXT_HEADER_TYPES and self.size > MAX_HEADER_SIZE:
            raise HeaderTooLarge(self.name, self.size)
        return super()._proc_member(tarfile)  # type: ignore[misc,no-any-return]


def _split_name(name: str, member: str) -> list[str]:
    """The components of a member (or hard link target) name, or UnsafeMember.

    tar(5) names are relative to the extraction root. Docker strips a leading "/";
    we refuse it, as we refuse any "..": a correct layer never needs either."""
    if "\x00" in name:
        raise UnsafeMember(member, "NUL byte in name")
    if name.startswith("/"):
        raise UnsafeMember(member, f"absolute path {name!r}")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeMember(member, f"'..' in {name!r}")
    encoded = [os.fsencode(p) for p in parts]
    if any(len(p) > NAME_MAX for p in encoded):
        raise UnsafeMember(member, f"a path component is longer than {NAME_MAX} bytes")
    if sum(len(p) + 1 for p in encoded) > PATH_MAX:
        raise UnsafeMember(member, f"path longer than {PATH_MAX} bytes")
    return parts


def _pax_time(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(Decimal(value) * 1_000_000_000)
    except (InvalidOperation, ValueError, ArithmeticError):
        return None


def _times_ns(member: tarfile.TarInfo) -> tuple[int, int]:
    """(atime, mtime) in ns: PAX records keep sub-second precision (POSIX pax)."""
    mtime = _pax_time(member.pax_headers.get("mtime"))
    if mtime is None:
        mtime = int(member.mtime) * 1_000_000_000
    atime = _pax_time(member.pax_headers.get("atime"))
    return (mtime if atime is None else atime), mtime


def _xattrs(member: tarfile.TarInfo) -> list[tuple[str, bytes]]:
    """SCHILY.xattr.* records (GNU tar, star, Go's archive/tar); values are bytes,
    which tarfile hands over as surrogate-escaped text."""
    prefix = "SCHILY.xattr."
    return [
        (key[len(prefix) :], value.encode("utf-8", "surrogateescape"))
        for key, value in member.pax_headers.items()
        if key.startswith(prefix) and len(key) > len(prefix)
    ]


def override_stat_value(uid: int, gid: int, mode: int, is_dir: bool) -> bytes:
    """`user.containers.override_stat` as containers/storage writes it."""
    kind = "dir" if is_dir else "file"
    return f"{uid}:{gid}:{stat.S_IMODE(mode):04o}:{kind}".encode()


@dataclass(frozen=True)
class _Meta:
    """The owner, mode and times one member asks for."""

    name: str
    mode: int
    uid: int
    gid: int
    times: tuple[int, int]  # (atime, mtime) in ns

    @classmethod
    def of(cls, m: tarfile.TarInfo) -> _Meta:
        return cls(m.name, stat.S_IMODE(m.mode), m.uid, m.gid, _times_ns(m))


class _Extractor:
    def __init__(
        self,
        root_fd: int,
        owners: Owners,
        fmt: WhiteoutFormat,
        apply_whiteouts: ApplyWhiteouts,
        stats: ExtractStats,
    ) -> None:
        self.root_fd = root_fd
        self.owners = owners
        self.fmt = fmt
        self.delete = apply_whiteouts == "delete"
        self.stats = stats
        # Paths this layer unpacked (and the directories on their way): whiteouts
        # and opaque markers never hide those (image-spec layer.md).
        self.unpacked: set[str] = set()
        # Paths with a whiteout marker recorded by this layer, in record mode.
        self.whited: set[str] = set()
        self.dirs: dict[tuple[str, ...], _Meta] = {}

    # -- walking ---------------------------------------------------------------

    def open_dir(self, parts: list[str] | tuple[str, ...], member: str, *, create: bool) -> int:
        """An O_PATH descriptor for the directory at `parts` below the root, walked
        one component at a time without following symlinks. The caller closes it.

        With `create`, missing directories are made (mode 0755) and every directory
        on the way counts as unpacked by this layer: the member being created there
        is this layer's, and an opaque marker must not remove its parents."""
        cur = os.dup(self.root_fd)
        try:
            for i, part in enumerate(parts):
                try:
                    nxt = os.open(part, _PATH_DIR, dir_fd=cur)
                except FileNotFoundError:
                    if not create:
                        raise
                    self._mkdir_implicit(cur, part)
                    nxt = os.open(part, _PATH_DIR, dir_fd=cur)
                except OSError as exc:
                    if exc.errno in (errno.ENOTDIR, errno.ELOOP):
                        where = "/".join(parts[: i + 1])
                        raise UnsafeMember(
                            member, f"{where!r} is a symlink or not a directory"
                        ) from None
                    raise
                os.close(cur)
                cur = nxt
                if create:
                    self.unpacked.add("/".join(parts[: i + 1]))
        except BaseException:
            os.close(cur)
            raise
        return cur

    def _mkdir_implicit(self, parent_fd: int, name: str) -> None:
        """A parent the tar did not list: root-owned 0755, as docker and GNU tar do."""
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, 0o700, dir_fd=parent_fd)
        fd = os.open(name, _READ_DIR, dir_fd=parent_fd)
        try:
            if self.owners == "xattr":
                os.setxattr(fd, OVERRIDE_STAT_XATTR, override_stat_value(0, 0, 0o755, True))
            os.fchmod(fd, 0o755)
        finally:
            os.close(fd)

    # -- members ---------------------------------------------------------------

    def member(self, tar: tarfile.TarFile, m: tarfile.TarInfo) -> None:
        parts = _split_name(m.name, m.name)
        if not parts:
            if not m.isdir():
                raise UnsafeMember(m.name, "a non-directory at the layer root")
            self._defer_dir((), m)
            return
        for i, part in enumerate(parts[:-1]):
            if part.startswith(wh.META_PREFIX):
                self.stats.skipped.append(f"{m.name} (aufs metadata)")
                return
            if part.startswith(wh.WHITEOUT_PREFIX):
                where = "/".join(parts[: i + 1])
                raise UnsafeMember(m.name, f"whiteout {where!r} used as a directory")
        leaf = parts[-1]
        try:
            marker = wh.classify(leaf)
        except wh.BadWhiteout as exc:
            raise UnsafeMember(m.name, str(exc)) from None
        if marker is not None:
            if marker.kind == "whiteout":
                self._whiteout(parts[:-1], marker.target, m.name)
            elif marker.kind == "opaque":
                self._opaque(parts[:-1], m.name)
            else:
                self.stats.skipped.append(f"{m.name} (aufs metadata)")
            return
        if m.ischr() and m.devmajor == 0 and m.devminor == 0:
            # overlayfs's own whiteout, from a tar of an upper directory.
            self._whiteout(parts[:-1], leaf, m.name)
            return
        if m.ischr() or m.isblk():
            kind = "char" if m.ischr() else "block"
            # mknod(2) needs CAP_MKNOD in the initial namespace; rootless can't.
            self.stats.skipped_devices.append(f"{m.name} ({kind} {m.devmajor}:{m.devminor})")
            return
        if not (m.isreg() or m.isdir() or m.issym() or m.islnk() or m.isfifo()):
            self.stats.skipped.append(f"{m.name} (unsupported tar type {m.type!r})")
            return
        self._create(tar, m, parts)

    def _whiteout(self, parent: list[str], target: str, member: str) -> None:
        path = "/".join([*parent, target])
        self.stats.whiteouts += 1
        if self.delete:
            try:
                pfd = self.open_dir(parent, member, create=False)
            except FileNotFoundError:
                return  # nothing below to delete
            try:
                if path not in self.unpacked:
                    wh.remove_at(pfd, target)
                elif self._is_dir_at(pfd, target):
                    # Same layer: keep its entries, drop what lower layers had.
                    dfd = os.open(target, _PATH_DIR, dir_fd=pfd)
                    try:
                        wh.empty_dir_except(dfd, path, self.unpacked.__contains__)
                    finally:
                        os.close(dfd)
            finally:
                os.close(pfd)
            return
        pfd = self.open_dir(parent, member, create=True)
        try:
            if path in self.unpacked:
                # An entry of this same layer already hides the lower one; a
                # directory must also stop merging with it.
                if self._is_dir_at(pfd, target):
                    self._opaque_at(pfd, target)
                return
            wh.write_whiteout(pfd, target, self.fmt)
            self.whited.add(path)
        finally:
            os.close(pfd)

    @staticmethod
    def _is_dir_at(parent_fd: int, name: str) -> bool:
        try:
            st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return stat.S_ISDIR(st.st_mode)

    def _opaque_at(self, parent_fd: int, name: str) -> None:
        dfd = os.open(name, _PATH_DIR, dir_fd=parent_fd)
        try:
            wh.write_opaque(dfd, self.fmt)
        finally:
            os.close(dfd)

    def _opaque(self, dir_parts: list[str], member: str) -> None:
        self.stats.opaque_dirs += 1
        rel = "/".join(dir_parts)
        if self.delete:
            try:
                dfd = self.open_dir(dir_parts, member, create=False)
            except FileNotFoundError:
                return
            try:
                wh.empty_dir_except(dfd, rel, self.unpacked.__contains__)
            finally:
                os.close(dfd)
            if rel:
                self.unpacked.add(rel)
            return
        dfd = self.open_dir(dir_parts, member, create=True)
        try:
            wh.write_opaque(dfd, self.fmt)
        finally:
            os.close(dfd)

    def _create(self, tar: tarfile.TarFile, m: tarfile.TarInfo, parts: list[str]) -> None:
        path = "/".join(parts)
        leaf = parts[-1]
        pfd = self.open_dir(parts[:-1], m.name, create=True)
        try:
            replaced_whiteout = False
            if path in self.whited:
                wh.remove_whiteout(pfd, leaf, self.fmt)
                self.whited.discard(path)
                replaced_whiteout = True
            if m.islnk():
                self._hardlink(pfd, leaf, m, path)
            else:
                self._clear(pfd, leaf, keep_dir=m.isdir())
                if m.isdir():
                    self._dir(pfd, leaf, m, parts)
                    if replaced_whiteout:
                        # whiteout + directory of the same name = replace the lower
                        # directory: opaque.
                        self._opaque_at(pfd, leaf)
                elif m.issym():
                    self._symlink(pfd, leaf, m)
                elif m.isfifo():
                    self._fifo(pfd, leaf, m)
                else:
                    self._file(tar, pfd, leaf, m)
            self.unpacked.add(path)
            self.stats.files += 1
        finally:
            os.close(pfd)

    def _clear(self, pfd: int, leaf: str, *, keep_dir: bool) -> None:
        """Make room at `leaf`: a later member replaces an earlier one (tar(5));
        a directory stays when the new member is a directory too."""
        try:
            st = os.stat(leaf, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if keep_dir and stat.S_ISDIR(st.st_mode):
            return
        wh.remove_at(pfd, leaf)

    def _hardlink(self, pfd: int, leaf: str, m: tarfile.TarInfo, path: str) -> None:
        target = _split_name(m.linkname, m.name)
        if not target:
            raise UnsafeMember(m.name, "hard link to the layer root")
        tpath = "/".join(target)
        if tpath == path:
            return  # a link to itself: nothing to do
        if not self.delete and tpath not in self.unpacked:
            # In a layer directory only this layer's members are targets; anything
            # else there is a whiteout marker.
            raise UnsafeMember(m.name, f"hard link target {m.linkname!r} is not in this layer")
        try:
            tfd = self.open_dir(target[:-1], m.name, create=False)
        except FileNotFoundError:
            raise UnsafeMember(m.name, f"hard link target {m.linkname!r} does not exist") from None
        try:
            try:
                tst = os.stat(target[-1], dir_fd=tfd, follow_symlinks=False)
            except FileNotFoundError:
                raise UnsafeMember(
                    m.name, f"hard link target {m.linkname!r} does not exist"
                ) from None
            if stat.S_ISDIR(tst.st_mode):
                raise UnsafeMember(m.name, f"hard link to a directory {m.linkname!r}")
            self._clear(pfd, leaf, keep_dir=False)
            # follow_symlinks=False: linkat without AT_SYMLINK_FOLLOW links a symlink
            # itself, never the file it points to.
            os.link(target[-1], leaf, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)
        finally:
            os.close(tfd)

    def _symlink(self, pfd: int, leaf: str, m: tarfile.TarInfo) -> None:
        if not m.linkname:
            raise UnsafeMember(m.name, "symlink with an empty target")
        os.symlink(m.linkname, leaf, dir_fd=pfd)
        meta = _Meta.of(m)
        if self.owners == "real":
            self._chown(
                meta, lambda: os.chown(leaf, m.uid, m.gid, dir_fd=pfd, follow_symlinks=False)
            )
        for name, _ in _xattrs(m):
            # Linux allows user.* xattrs only on regular files and directories.
            self.stats.dropped_xattrs.append(f"{m.name}: {name} (symlink)")
        self._utime(meta, lambda ns: os.utime(leaf, ns=ns, dir_fd=pfd, follow_symlinks=False))

    def _fifo(self, pfd: int, leaf: str, m: tarfile.TarInfo) -> None:
        os.mkfifo(leaf, 0o600, dir_fd=pfd)
        # O_NONBLOCK: opening a fifo for reading must not wait for a writer.
        fd = os.open(leaf, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
        try:
            st = os.fstat(fd)
            if not stat.S_ISFIFO(st.st_mode):
                raise UnsafeMember(m.name, "fifo replaced while extracting")
            for name, _ in _xattrs(m):
                self.stats.dropped_xattrs.append(f"{m.name}: {name} (fifo)")
            self._finish_fd(fd, _Meta.of(m), is_dir=False, xattrs_of=None)
        finally:
            os.close(fd)

    def _file(self, tar: tarfile.TarFile, pfd: int, leaf: str, m: tarfile.TarInfo) -> None:
        fd = os.open(leaf, _NEW_FILE, 0o600, dir_fd=pfd)
        try:
            src = tar.extractfile(m)
            if src is not None:
                self._copy(src, fd, m)
            self._finish_fd(fd, _Meta.of(m), is_dir=False, xattrs_of=m)
        finally:
            os.close(fd)

    def _copy(self, src: BinaryIO, fd: int, m: tarfile.TarInfo) -> None:
        sparse = m.sparse is not None
        while chunk := src.read(_CHUNK):
            if sparse and chunk.count(0) == len(chunk):
                # A hole in a GNU sparse file stays a hole: a claimed terabyte of
                # zeros must not become a terabyte on disk.
                os.lseek(fd, len(chunk), os.SEEK_CUR)
                continue
            view = memoryview(chunk)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            self.stats.bytes += len(chunk)
        if sparse:
            os.ftruncate(fd, m.size)

    def _dir(self, pfd: int, leaf: str, m: tarfile.TarInfo, parts: list[str]) -> None:
        # 0700 until the end: the final mode (0555, say) must not stop us from
        # creating the directory's children.
        with contextlib.suppress(FileExistsError):
            os.mkdir(leaf, 0o700, dir_fd=pfd)
        fd = os.open(leaf, _READ_DIR, dir_fd=pfd)
        try:
            self._set_xattrs(fd, m)
        finally:
            os.close(fd)
        self._defer_dir(tuple(parts), m)

    def _defer_dir(self, parts: tuple[str, ...], m: tarfile.TarInfo) -> None:
        self.dirs[parts] = _Meta.of(m)
        if parts:
            self.unpacked.add("/".join(parts))

    # -- metadata --------------------------------------------------------------

    def _chown(self, meta: _Meta, do: Callable[[], None]) -> None:
        try:
            do()
        except OverflowError:
            raise UnsafeMember(meta.name, f"owner {meta.uid}:{meta.gid} out of range") from None
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                hint = (
                    f"{meta.uid}:{meta.gid} is not mapped in this user namespace: the user "
                    "needs a subordinate id range (/etc/subuid, /etc/subgid) of 65536 ids"
                )
            elif exc.errno == errno.EPERM:
                hint = (
                    'owners="real" needs root in a user namespace with the subordinate '
                    'ids mapped; without them use owners="xattr"'
                )
            else:
                hint = None
            raise MemberError(meta.name, f"chown to {meta.uid}:{meta.gid}", exc, hint) from None

    def _utime(self, meta: _Meta, do: Callable[[tuple[int, int]], None]) -> None:
        try:
            do(meta.times)
        except (OverflowError, ValueError):
            self.stats.skipped.append(f"{meta.name} (time out of range, not set)")

    def _set_xattrs(self, fd: int, m: tarfile.TarInfo) -> None:
        for name, value in _xattrs(m):
            if wh.is_reserved_xattr(name) or name == OVERRIDE_STAT_XATTR:
                self.stats.dropped_xattrs.append(f"{m.name}: {name} (reserved)")
                continue
            if name in _IGNORED_XATTRS:
                self.stats.dropped_xattrs.append(f"{m.name}: {name} (ignored)")
                continue
            try:
                os.setxattr(fd, name, value)
            except OSError as exc:
                if name.startswith("user."):
                    hint = None
                    if exc.errno == errno.EOPNOTSUPP:
                        hint = "the storage filesystem must support user xattrs"
                    raise MemberError(m.name, f"setxattr {name}", exc, hint) from None
                # trusted.*, security.*: need privilege we may not have.
                self.stats.dropped_xattrs.append(
                    f"{m.name}: {name} ({os.strerror(exc.errno or 0)})"
                )

    def _finish_fd(
        self, fd: int, meta: _Meta, *, is_dir: bool, xattrs_of: tarfile.TarInfo | None
    ) -> None:
        """Owner, xattrs, mode and times of an open file or directory, in the order
        that keeps setuid bits and file capabilities (chown clears both; so does a
        write, which is why the data comes first). `xattrs_of` is None for a fifo
        (no user.* xattrs allowed) and for directories (set when created)."""
        mode = meta.mode
        if self.owners == "real":
            self._chown(meta, lambda: os.fchown(fd, meta.uid, meta.gid))
        if xattrs_of is not None:
            self._set_xattrs(fd, xattrs_of)
        if self.owners == "xattr":
            if is_dir or xattrs_of is not None:
                value = override_stat_value(meta.uid, meta.gid, mode, is_dir)
                os.setxattr(fd, OVERRIDE_STAT_XATTR, value)
            mode = (mode & 0o777) | (0o700 if is_dir else 0o600)
        os.fchmod(fd, mode)
        self._utime(meta, lambda ns: os.utime(fd, ns=ns))

    def finish_dirs(self) -> None:
        """Directory owners, modes and times, deepest first, once nothing more will
        be created in them (creating a child would change the parent's mtime)."""
        for parts, meta in sorted(self.dirs.items(), key=lambda kv: len(kv[0]), reverse=True):
            try:
                pfd = self.open_dir(parts, meta.name, create=False)
            except (FileNotFoundError, UnsafeMember):
                continue  # replaced by a later member
            try:
                fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=pfd)
            finally:
                os.close(pfd)
            try:
                self._finish_fd(fd, meta, is_dir=True, xattrs_of=None)
            except OSError as exc:
                raise MemberError(meta.name, "set directory metadata", exc) from None
            finally:
                os.close(fd)

    def mark_root(self) -> None:
        """owners="xattr": fuse-overlayfs honours override_stat in a layer only if
        the layer's root directory carries it (direct.c, direct_load_data_source);
        containers/storage sets it on the root of every layer it unpacks so. Without
        a "./" member the root is the container's "/": 0:0, 0755."""
        if self.owners != "xattr" or () in self.dirs:
            return
        fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=self.root_fd)
        try:
            os.setxattr(fd, OVERRIDE_STAT_XATTR, override_stat_value(0, 0, 0o755, True))
        except OSError as exc:
            raise MemberError(".", f"setxattr {OVERRIDE_STAT_XATTR}", exc) from None
        finally:
            os.close(fd)


def _members(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    """Members one at a time. TarFile keeps every TarInfo it reads in `members`
    (for getmembers()); a stream of a million entries must not."""
    while (m := tar.next()) is not None:
        yield m
        tar.members.clear()


def extract_layer(
    fileobj: BinaryIO,
    dest: Path,
    *,
    owners: Owners = "real",
    whiteout_format: WhiteoutFormat = "aufs",
    apply_whiteouts: ApplyWhiteouts = "record",
    expected_diff_id: str | None = None,
) -> ExtractStats:
    """Extract the layer read from `fileobj` into the existing directory `dest`.

    Compression is detected from the magic bytes (gzip, zstd, or a plain tar).
    `owners`: "real" chowns to the tar's uid/gid (run as root of a user namespace
    with the subordinate ids mapped); "xattr" leaves files to the caller and
    records uid:gid:mode in user.containers.override_stat.
    `apply_whiteouts`: "record" keeps whiteouts in `whiteout_format` ("aufs" for
    fuse-overlayfs, "xattr" for kernel overlayfs with userxattr) for a layer
    directory; "delete" applies them to a flattened rootfs in `dest` (a whiteout
    deletes the path, an opaque marker empties the directory).
    `expected_diff_id`: the DiffID from the image config; a mismatch raises
    DiffIDMismatch after extraction (the caller discards `dest`, as the store does
    with a layer's temp directory).

    Raises UnsafeMember for anything that would escape `dest` or write through a
    symlink, HeaderTooLarge, CorruptLayer, UnsupportedLayer, MemberError.
    """
    if owners not in ("real", "xattr"):
        raise ValueError(f"owners must be 'real' or 'xattr', not {owners!r}")
    fmt = wh.check_format(whiteout_format)
    if apply_whiteouts not in ("record", "delete"):
        raise ValueError(f"apply_whiteouts must be 'record' or 'delete', not {apply_whiteouts!r}")
    algorithm = "sha256"
    if expected_diff_id is not None:
        algorithm = expected_diff_id.partition(":")[0]
        if algorithm not in ("sha256", "sha512"):
            raise ValueError(f"unsupported DiffID {expected_diff_id!r}")
    stats = ExtractStats()
    try:
        root_fd = os.open(dest, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise MemberError(".", f"open destination {dest}", exc) from None
    source: _Source | None = None
    try:
        source = _Source(fileobj, algorithm)
        stats.compression = source.compression
        extractor = _Extractor(root_fd, owners, fmt, apply_whiteouts, stats)
        with tarfile.open(
            fileobj=source,  # type: ignore[arg-type]
            mode="r|",
            tarinfo=_SafeTarInfo,
            encoding="utf-8",
            errors="surrogateescape",
        ) as tar:
            for member in _members(tar):
                try:
                    extractor.member(tar, member)
                except OSError as exc:
                    raise MemberError(member.name, "create", exc) from None
        extractor.finish_dirs()
        extractor.mark_root()
        stats.diff_id = source.finish()
        stats.tar_size = source.size
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        why = source.failure() if source is not None else None
        raise CorruptLayer(
            f"layer is corrupt or truncated: {f'zstd: {why}' if why else exc}",
            hint="the download may be incomplete; remove the image and pull it again",
        ) from None
    finally:
        if source is not None:
            source.close()
        os.close(root_fd)
    if expected_diff_id is not None and stats.diff_id != expected_diff_id:
        raise DiffIDMismatch(expected_diff_id, stats.diff_id)
    return stats
