"""The overlay driver: kernel overlayfs mounted inside the container's user namespace.

Unprivileged overlay mounts work in a user namespace since Linux 5.11 with the
`userxattr` option, which makes overlayfs keep its metadata (opaque directories) in
`user.overlay.*` xattrs; whiteouts are 0/0 character devices, which an unprivileged
user may create since 5.8. Layers are unpacked in that format (sandbox/images,
whiteout_format="chardev"). The mount itself is made by the runtime in the
container's mount namespace (`Root.mount`), so nothing stays mounted on the host
and nothing needs cleaning up when the container exits.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Sequence

from sandbox.errors import SbxError
from sandbox.runtime.securejoin import secure_join
from sandbox.runtime.spec import Mount, Root

# mount(2) data is limited to one page; overlayfs parses lowerdir from it.
_PAGE = 4096


class ContainerLayer:
    """A container's own directories for the overlay driver."""

    def __init__(self, container_dir: str) -> None:
        self.dir = container_dir
        self.upper = os.path.join(container_dir, "upper")
        self.work = os.path.join(container_dir, "work")
        self.merged = os.path.join(container_dir, "merged")

    def create(self) -> None:
        for d in (self.upper, self.work, self.merged):
            os.makedirs(d, mode=0o755, exist_ok=True)


def root_for(layer_dirs: Sequence[str], layer: ContainerLayer, readonly: bool = False) -> Root:
    """The Root of a container whose image has `layer_dirs` (lowest first)."""
    if not layer_dirs:
        raise SbxError("the image has no layers", hint="pull the image again")
    # Relative lowerdirs from their common parent keep the option string short
    # (containers/storage shortens them with "l/" symlinks for the same reason).
    base = os.path.commonpath([os.path.dirname(d) for d in layer_dirs])
    lowers = [os.path.relpath(d, base) for d in reversed(layer_dirs)]  # top first
    data = (f"lowerdir={':'.join(lowers)},upperdir={layer.upper},"
            f"workdir={layer.work},userxattr")
    if len(data) >= _PAGE:
        raise SbxError(f"the image has too many layers ({len(layer_dirs)}) for one "
                       "overlay mount", hint="squash the image into fewer layers")
    mount = Mount(layer.merged, "overlay", "overlay", data.split(","))
    return Root(layer.merged, readonly, mount=mount, mount_cwd=base)


def find_in_layers(layer_dirs: Sequence[str], path: str) -> tuple[str, os.stat_result] | None:
    """Where `path` is in the union of `layer_dirs` (lowest first), without mounting:
    the topmost layer that has it wins; a whiteout (a 0/0 char device, or a `.wh.`
    file) hides it and the layers below. Returns (host path, lstat) or None. Each
    layer is resolved with `secure_join`, never following a link out of it.
    """
    for layer in reversed(layer_dirs):  # top first
        target = secure_join(layer, path)
        head, name = os.path.split(target)
        if os.path.lexists(os.path.join(head, ".wh." + name)):
            return None
        try:
            st = os.lstat(target)
        except (FileNotFoundError, NotADirectoryError):
            continue
        if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
            return None
        return target, st
    return None


def layers_reader(layer_dirs: Sequence[str]) -> Callable[[str], str]:
    """Read a small file (/etc/passwd) as the union of `layer_dirs` shows it."""

    def read(path: str) -> str:
        found = find_in_layers(layer_dirs, path)
        if found is None or not stat.S_ISREG(found[1].st_mode):
            return ""  # missing, hidden, a directory or a device: nothing to read
        try:
            with open(found[0], encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    return read
