"""A container's writable layer as an OCI layer tar (for `sbx commit` and profile setup).

The upper directory of an overlay (kernel or sbx-fs) records deletions the way
overlayfs does in a user namespace: a whiteout is a 0/0 character device, an opaque
directory has `user.overlay.opaque` = "y" (or `trusted.`, outside one). An OCI layer
records them the AUFS way (image-spec, layer.md "Whiteouts"): an empty file
`.wh.NAME`, and `.wh..wh..opq` inside an opaque directory. This is the conversion
containers/storage's overlay driver makes when it diffs a layer (`archive.TarWithOptions`
with `WhiteoutFormat: OverlayWhiteoutFormat`), written here for one upper directory.

What goes in each header: the owner as stored (the caller runs this as root of the
user's namespace, where stored owners are the container's ids), or as recorded in
`user.containers.override_stat` when the layer keeps owners there (users without
subordinate ids); mode, mtime, link targets, hard links (tarfile pairs them by
inode), device numbers; user.* and security.capability xattrs in PAX
`SCHILY.xattr.` records, but never overlay's own metadata. The empty mount points
sbx's runtime makes (storage/diff.RUNTIME_PATHS) are left out, as podman commit
leaves out /etc/hostname and friends. Entries are written in sorted order, so the
same tree gives the same bytes, except for timestamps.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tarfile
from collections.abc import Sequence
from typing import BinaryIO

from sandbox.storage.diff import runtime_only as _runtime_only

OPAQUE_XATTRS = ("user.overlay.opaque", "trusted.overlay.opaque")
OVERRIDE_STAT = "user.containers.override_stat"
# Metadata overlayfs, fuse-overlayfs and containers/storage keep for themselves.
_PRIVATE_PREFIXES = ("user.overlay.", "trusted.overlay.", "user.fuseoverlayfs.",
                     "user.containers.")
_KEPT_PREFIXES = ("user.", "security.capability")


class _HashingWriter:
    """Counts and hashes what passes to the file: the layer's diff id on the way."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()


def _xattrs(path: str) -> dict[str, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    out = {}
    for name in names:
        try:
            out[name] = os.getxattr(path, name, follow_symlinks=False)
        except OSError:
            continue
    return out


def _override(info: tarfile.TarInfo, value: bytes) -> None:
    """uid:gid:mode[:type] as containers/storage writes it (images/extract.py)."""
    parts = value.decode("ascii", "replace").split(":")
    try:
        info.uid, info.gid = int(parts[0]), int(parts[1])
        info.mode = int(parts[2], 8) & 0o7777
    except (IndexError, ValueError):
        pass


def _is_opaque(xattrs: dict[str, bytes]) -> bool:
    return any(xattrs.get(n) == b"y" for n in OPAQUE_XATTRS)


def write_layer_tar(upper: str, out: BinaryIO, layers: Sequence[str] = ()) -> tuple[str, int]:
    """Write the upper directory `upper` to `out` as an uncompressed OCI layer.
    `layers` (the image's layer dirs) tell empty runtime mount points that the image
    does not have from ones it does. Returns (diff id "sha256:HEX", size in bytes)."""
    writer = _HashingWriter(out)
    with tarfile.open(fileobj=writer, mode="w|", format=tarfile.PAX_FORMAT,  # type: ignore[call-overload]
                      dereference=False) as tar:
        for dirpath, dirnames, filenames in os.walk(upper):
            dirnames.sort()
            rel_dir = os.path.relpath(dirpath, upper)
            rel_dir = "" if rel_dir == "." else rel_dir
            if rel_dir and _is_opaque(_xattrs(dirpath)):
                tar.addfile(_plain(f"{rel_dir}/.wh..wh..opq"))
            names = sorted(dirnames + filenames)
            skip: set[str] = set()
            for name in names:
                full = os.path.join(dirpath, name)
                arcname = f"{rel_dir}/{name}" if rel_dir else name
                st = os.lstat(full)
                if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                    head, base = os.path.split(arcname)
                    tar.addfile(_plain(os.path.join(head, ".wh." + base)))
                    continue
                if _runtime_only(full, "/" + arcname, st):
                    skip.add(name)
                    continue
                info = tar.gettarinfo(full, arcname)
                info.uname = info.gname = ""
                xattrs = _xattrs(full)
                if OVERRIDE_STAT in xattrs:
                    _override(info, xattrs[OVERRIDE_STAT])
                kept = {k: v for k, v in xattrs.items()
                        if k.startswith(_KEPT_PREFIXES) and not k.startswith(_PRIVATE_PREFIXES)}
                if kept:
                    info.pax_headers = {f"SCHILY.xattr.{k}": v.decode("utf-8", "surrogateescape")
                                        for k, v in kept.items()}
                if info.isreg():
                    with open(full, "rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)
            # Don't descend into skipped runtime directories.
            dirnames[:] = [d for d in dirnames if d not in skip]
    return f"sha256:{writer.sha.hexdigest()}", writer.size


def _plain(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode = 0o644
    return info
