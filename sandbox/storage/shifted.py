"""Image layers copied with their owners shifted for another id map (keep-id on overlay).

Layers are unpacked once, under the default map (container id c stored as host id
D(c)). A container run with `--userns=keep-id` has another map K, under which host
id D(c) is some other container id, so kernel overlayfs over the stored layers would
show the image's root-owned files as owned by the user. The kernel can't shift owners
for an unprivileged mount (idmapped mounts need the filesystem's own user namespace),
so, as containers/storage does for a rootless overlay with another mapping (it
creates a copy of the layer chowned for that mapping the first time a container
needs it, which is why podman's first `--userns=keep-id` run of an image is slow),
each layer is copied once per map, with every owner c rewritten to D⁻¹(K(c)); the
overlay then mounts the copies, at the kernel's speed. The fuse driver is the other
way (sbx-fs shifts owners on the fly, no copy, slower per operation).

The copy is made as root of the user's namespace under the default map (it must
read and chown files of subordinate owners): `cp -a` (hard links, modes, times,
xattrs, whiteout devices) into a temporary folder, then lchown of every entry and the
set-id bits restored (chown(2) clears them); the folder is renamed into place when
complete, so a killed copy is never used, and two racing first runs both finish and
one rename wins. File capabilities (security.capability) keep the namespace root
they were written under, so a binary with file capabilities loses them in a keep-id
container (podman's copy has the same limit without idmapped mounts).

Layout: DATA/shifted/<map key>/<layer folder name> (paths.shifted_layers_dir());
`prune(keep)` removes copies of layers that are gone.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import stat
import subprocess
from collections.abc import Callable, Sequence

from sandbox import paths
from sandbox.errors import SbxError
from sandbox.runtime.spec import IdMapping

OVERFLOW_ID = 65534  # /proc/sys/kernel/overflowuid: what an unmapped id shows as


def map_key(uid_shift: Sequence[IdMapping], gid_shift: Sequence[IdMapping]) -> str:
    text = repr([tuple(m) for m in uid_shift]) + repr([tuple(m) for m in gid_shift])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _translate(shift: Sequence[IdMapping], cid: int) -> int:
    for m in shift:
        if m.container_id <= cid < m.container_id + m.size:
            return m.host_id + cid - m.container_id
    return OVERFLOW_ID


def chown_tree(root: str, uid_shift: Sequence[IdMapping],
               gid_shift: Sequence[IdMapping]) -> None:
    """lchown every entry under root (root too) by the shifts; keep set-id bits.
    Each inode once: a hard link's second name must not shift it again."""
    seen: set[int] = set()

    def fix(path: str) -> None:
        st = os.lstat(path)
        if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
            if st.st_ino in seen:
                return
            seen.add(st.st_ino)
        uid, gid = _translate(uid_shift, st.st_uid), _translate(gid_shift, st.st_gid)
        if (uid, gid) == (st.st_uid, st.st_gid):
            return
        os.lchown(path, uid, gid)
        if stat.S_ISREG(st.st_mode) and st.st_mode & (stat.S_ISUID | stat.S_ISGID):
            os.chmod(path, stat.S_IMODE(st.st_mode))

    fix(root)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            fix(os.path.join(dirpath, name))


def _copy(src: str, dest: str, uid_shift: Sequence[IdMapping],
          gid_shift: Sequence[IdMapping]) -> None:
    """In the user namespace: cp -a src dest, then shift the owners."""
    result = subprocess.run(["cp", "-a", "--no-target-directory", src, dest],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise SbxError(f"can't copy layer {src} for keep-id: {result.stderr.strip()}")
    chown_tree(dest, uid_shift, gid_shift)


def shifted_dirs(layer_dirs: Sequence[str], uid_shift: Sequence[IdMapping],
                 gid_shift: Sequence[IdMapping],
                 in_userns: Callable[[Callable[[], None]], None]) -> list[str]:
    """The shifted copies of `layer_dirs` (made now where missing), in the same order.
    `in_userns(fn)` runs fn as root of the user's namespace under the default map."""
    base = os.path.join(paths.shifted_layers_dir(), map_key(uid_shift, gid_shift))
    out = []
    for layer in layer_dirs:
        # .../layers/<hex>/diff -> <hex>: the layer's own name, stable and unique.
        name = os.path.basename(os.path.dirname(layer.rstrip("/")))
        final = os.path.join(base, name)
        if not os.path.isdir(final):
            os.makedirs(base, mode=0o700, exist_ok=True)
            tmp = os.path.join(base, f".tmp-{name[:12]}-{secrets.token_hex(4)}")
            try:
                in_userns(lambda layer=layer, tmp=tmp: _copy(layer, tmp, uid_shift, gid_shift))
                try:
                    os.rename(tmp, final)
                except OSError:  # another run made it first: same content
                    if not os.path.isdir(final):
                        raise
            finally:
                if os.path.lexists(tmp):
                    with contextlib.suppress(Exception):
                        in_userns(lambda tmp=tmp: _remove(tmp))
        out.append(final)
    return out


def _remove(path: str) -> None:
    subprocess.run(["rm", "-rf", "--one-file-system", path], check=False)


def prune(keep: set[str], in_userns: Callable[[Callable[[], None]], None]) -> int:
    """Remove copies whose layer folder name is not in `keep`; returns how many."""
    root = paths.shifted_layers_dir()
    gone = []
    with contextlib.suppress(FileNotFoundError):
        for key in os.listdir(root):
            for name in os.listdir(os.path.join(root, key)):
                if name not in keep:
                    gone.append(os.path.join(root, key, name))
    def remove_all() -> None:
        for path in gone:
            _remove(path)

    if gone:
        in_userns(remove_all)
    return len(gone)
