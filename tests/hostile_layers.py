"""Layer tars built in memory, friendly and hostile, for the extractor's tests.

Each hostile function returns the bytes of a layer that tries one known way out of
the extraction directory or one way to exhaust the extractor: path traversal
(CVE-2018-15664-style symlink tricks, hard links out of the root), malformed
whiteouts (OCI image-spec layer.md), oversized extended headers and truncated data
(tar(5), POSIX pax). Nothing here imports sbx.
"""

from __future__ import annotations

import gzip
import io
import shutil
import subprocess
import tarfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

MTIME = 1_600_000_000  # 2020-09-13, a fixed time for reproducible layers


@dataclass
class Entry:
    """One member to write: a TarInfo and, for a regular file, its data."""

    info: tarfile.TarInfo
    data: bytes = b""
    extra: dict[str, str] = field(default_factory=dict)


def _info(
    name: str,
    type_: bytes,
    *,
    mode: int,
    uid: int = 0,
    gid: int = 0,
    mtime: float = MTIME,
    xattrs: Mapping[str, str] | None = None,
    pax: Mapping[str, str] | None = None,
) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type = type_
    ti.mode = mode
    ti.uid, ti.gid = uid, gid
    ti.uname = ti.gname = ""
    ti.mtime = mtime
    headers = dict(pax or {})
    for key, value in (xattrs or {}).items():
        headers[f"SCHILY.xattr.{key}"] = value
    ti.pax_headers = headers
    return ti


def file(name: str, data: bytes = b"", *, mode: int = 0o644, **kw: object) -> Entry:
    ti = _info(name, tarfile.REGTYPE, mode=mode, **kw)  # type: ignore[arg-type]
    ti.size = len(data)
    return Entry(ti, data)


def directory(name: str, *, mode: int = 0o755, **kw: object) -> Entry:
    return Entry(_info(name, tarfile.DIRTYPE, mode=mode, **kw))  # type: ignore[arg-type]


def symlink(name: str, target: str, **kw: object) -> Entry:
    ti = _info(name, tarfile.SYMTYPE, mode=0o777, **kw)  # type: ignore[arg-type]
    ti.linkname = target
    return Entry(ti)


def hardlink(name: str, target: str, **kw: object) -> Entry:
    ti = _info(name, tarfile.LNKTYPE, mode=0o644, **kw)  # type: ignore[arg-type]
    ti.linkname = target
    return Entry(ti)


def fifo(name: str, *, mode: int = 0o644, **kw: object) -> Entry:
    return Entry(_info(name, tarfile.FIFOTYPE, mode=mode, **kw))  # type: ignore[arg-type]


def device(name: str, kind: str, major: int, minor: int, *, mode: int = 0o666) -> Entry:
    ti = _info(name, tarfile.CHRTYPE if kind == "char" else tarfile.BLKTYPE, mode=mode)
    ti.devmajor, ti.devminor = major, minor
    return Entry(ti)


def tar_bytes(entries: Iterable[Entry], *, fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for e in entries:
            tar.addfile(e.info, io.BytesIO(e.data) if e.info.isreg() else None)
    return buf.getvalue()


def gzip_bytes(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def zstd_available() -> bool:
    return shutil.which("zstd") is not None


def zstd_bytes(data: bytes) -> bytes:
    return subprocess.run(
        ["zstd", "-q", "-c", "-3"], input=data, capture_output=True, check=True
    ).stdout


def compress(data: bytes, kind: str) -> bytes:
    if kind == "gzip":
        return gzip_bytes(data)
    if kind == "zstd":
        return zstd_bytes(data)
    return data


def _end() -> bytes:
    return b"\0" * (2 * tarfile.BLOCKSIZE)


# -- path traversal --------------------------------------------------------------


def dotdot_member() -> bytes:
    return tar_bytes([file("../evil", b"pwned")])


def absolute_member() -> bytes:
    return tar_bytes([file("/abs", b"pwned")])


def nested_dotdot_member() -> bytes:
    return tar_bytes([directory("a"), file("a/../../evil", b"pwned")])


# -- symlinks ----------------------------------------------------------------------


def symlink_then_write(target: str) -> bytes:
    """`link -> target`, then `link/file`: writing through the link would land in
    `target` (docker's CVE-2018-15664 class, done inside one layer)."""
    return tar_bytes([symlink("link", target), file("link/file", b"pwned")])


def symlink_dotdot_then_write() -> bytes:
    return tar_bytes([symlink("link", ".."), file("link/evil", b"pwned")])


def symlink_then_dir_member(target: str) -> bytes:
    """`link -> target`, then a directory member under it."""
    return tar_bytes([symlink("link", target), directory("link/sub")])


def dir_replaced_by_symlink_then_write(target: str) -> bytes:
    """A directory, the same name again as a symlink, then a file below it."""
    return tar_bytes([directory("d"), symlink("d", target), file("d/f", b"pwned")])


def symlink_then_same_name_file(target: str) -> bytes:
    """`link -> target`, then a regular file `link`: must replace the link, not
    write into `target`."""
    return tar_bytes([symlink("link", target), file("link", b"data")])


def absolute_symlink() -> bytes:
    """Absolute targets are normal in images (/etc/alternatives); keep them."""
    return tar_bytes([symlink("abs", "/etc/passwd"), symlink("rel", "../../../etc/shadow")])


# -- hard links --------------------------------------------------------------------


def hardlink_dotdot() -> bytes:
    return tar_bytes([hardlink("hl", "../../etc/passwd")])


def hardlink_absolute() -> bytes:
    return tar_bytes([hardlink("hl", "/etc/passwd")])


def hardlink_through_symlink(target_dir: str) -> bytes:
    """`s -> target_dir`, then a hard link to `s/passwd`: resolving the target would
    follow the symlink out of the root."""
    return tar_bytes([symlink("s", target_dir), hardlink("hl", "s/passwd")])


def hardlink_to_symlink(target: str) -> bytes:
    """A hard link to a symlink links the symlink itself (linkat without
    AT_SYMLINK_FOLLOW), never the file outside."""
    return tar_bytes([symlink("s", target), hardlink("hl", "s")])


def hardlink_missing_target() -> bytes:
    return tar_bytes([hardlink("hl", "nothing/here")])


# -- whiteouts -----------------------------------------------------------------------


def bare_whiteout() -> bytes:
    return tar_bytes([file(".wh.")])


def whiteout_above_root() -> bytes:
    return tar_bytes([file("../.wh.x")])


def whiteout_of_dotdot() -> bytes:
    return tar_bytes([directory("a"), file("a/.wh...")])


def whiteout_used_as_directory() -> bytes:
    return tar_bytes([file(".wh.foo/bar", b"x")])


def aufs_metadata() -> bytes:
    return tar_bytes(
        [directory(".wh..wh.plnk"), file(".wh..wh.plnk/1234", b"x"), file("kept", b"k")]
    )


# -- huge or broken headers ----------------------------------------------------------


def long_component_name() -> bytes:
    """A PAX path whose last component is 300 bytes (NAME_MAX is 255)."""
    return tar_bytes([file("d/" + "x" * 300, b"x")])


def overlong_path() -> bytes:
    """A PAX path of 5,000 bytes in short components (PATH_MAX is 4096)."""
    return tar_bytes([file("/".join(["abcd"] * 1000), b"x")])


def long_pax_name_ok() -> bytes:
    """A long but legal name: 200 bytes of directories, needs a PAX path record."""
    return tar_bytes([file("/".join(["d" * 40] * 5) + "/f", b"ok")])


def _header(name: str, type_: bytes, size: int) -> bytes:
    ti = tarfile.TarInfo(name)
    ti.type = type_
    ti.size = size
    ti.mtime = MTIME
    # GNU format writes a size over 8 GiB in base-256, which tarfile reads back.
    return ti.tobuf(format=tarfile.GNU_FORMAT)


def pax_header_giant_size() -> bytes:
    """A PAX extended header claiming 8 GiB: tarfile would read() that much."""
    return _header("././@PaxHeader", tarfile.XHDTYPE, 8 << 30) + b"x" * 512 + _end()


def gnu_longname_giant_size() -> bytes:
    return _header("././@LongLink", tarfile.GNUTYPE_LONGNAME, 4 << 30) + b"x" * 512 + _end()


def pax_size_record_giant() -> bytes:
    """A regular file whose PAX `size` record claims a terabyte, with 512 bytes."""
    ti = tarfile.TarInfo("big")
    ti.size = 1 << 40
    ti.mtime = MTIME
    return ti.tobuf(format=tarfile.PAX_FORMAT) + b"y" * 512 + _end()


def member_size_exceeds_data() -> bytes:
    """A 1 MiB member followed by 1,000 bytes and the end of the stream."""
    ti = tarfile.TarInfo("short")
    ti.size = 1 << 20
    ti.mtime = MTIME
    return ti.tobuf(format=tarfile.PAX_FORMAT) + b"z" * 1000


def truncated_gzip() -> bytes:
    data = tar_bytes([file("big", bytes(range(256)) * 800)])
    gz = gzip_bytes(data)
    return gz[: len(gz) // 2]


def truncated_zstd() -> bytes:
    data = tar_bytes([file("big", bytes(range(256)) * 800)])
    z = zstd_bytes(data)
    return z[: len(z) // 2]


# -- special files -------------------------------------------------------------------


def device_nodes() -> bytes:
    return tar_bytes(
        [
            directory("dev"),
            device("dev/null", "char", 1, 3),
            device("dev/sda", "block", 8, 0),
            device("gone", "char", 0, 0),  # overlayfs's whiteout form
        ]
    )


def setuid_file() -> bytes:
    return tar_bytes([directory("bin"), file("bin/su", b"\x7fELF", mode=0o4755)])


def fifo_layer() -> bytes:
    return tar_bytes([directory("run"), fifo("run/pipe", mode=0o620)])


def reserved_xattrs() -> bytes:
    """Xattrs that would steer the union filesystem (overlayfs.rst warns about
    crafted redirect/metacopy in untrusted layers) or fake owners."""
    return tar_bytes(
        [
            file(
                "f",
                b"x",
                xattrs={
                    "user.overlay.redirect": "/etc",
                    "user.overlay.whiteout": "",
                    "trusted.overlay.metacopy": "",
                    "user.containers.override_stat": "0:0:4755:file",
                    "user.fuseoverlayfs.origin": "x",
                    "user.ok": "kept",
                },
            )
        ]
    )


def deep_tree(depth: int) -> bytes:
    """One file `depth` directories down (1-byte names)."""
    return tar_bytes([file("/".join(["a"] * depth) + "/f", b"deep")])
