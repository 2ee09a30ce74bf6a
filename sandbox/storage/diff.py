"""`sbx diff`: what a container changed, read from its writable layer.

As `podman diff`: `A` added, `C` changed, `D` deleted, one path each. A path in the
upper directory is `C` when some image layer has it too, else `A`; a whiteout (a 0/0
character device, or a `.wh.NAME` file) is `D` of the path it hides. The mount
points sbx itself makes for a container (/proc, /dev, /etc/hosts, ...) are left out
while they are empty, as podman leaves out its own.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence

from sandbox.storage.overlay import find_in_layers

# What sbx's runtime creates in every container's root before mounting over it.
RUNTIME_PATHS = frozenset({
    "/proc", "/sys", "/dev", "/etc/hostname", "/etc/hosts", "/etc/resolv.conf",
    "/run/sbx-init", "/etc/passwd", "/etc/group",
})


def changes(upper: str, layers: Sequence[str]) -> list[tuple[str, str]]:
    """[(kind, path)] sorted by path, for the upper directory `upper` over `layers`."""
    out: list[tuple[str, str]] = []
    for dirpath, dirnames, filenames in os.walk(upper):
        rel_dir = "/" + os.path.relpath(dirpath, upper) if dirpath != upper else ""
        for name in sorted(dirnames + filenames):
            full = os.path.join(dirpath, name)
            path = f"{rel_dir}/{name}"
            st = os.lstat(full)
            if name.startswith(".wh."):
                if name != ".wh..wh..opq":
                    out.append(("D", f"{rel_dir}/{name[4:]}"))
            elif stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                out.append(("D", path))
            elif not runtime_only(full, path, st):
                out.append(("C" if find_in_layers(layers, path) else "A", path))
    return sorted(out, key=lambda kp: kp[1])


def runtime_only(full: str, path: str, st: os.stat_result) -> bool:
    """An empty mount point sbx made, or a directory holding nothing else (also what
    layertar.py leaves out of a committed layer)."""
    if path in RUNTIME_PATHS:
        return _empty(full, st)
    if not stat.S_ISDIR(st.st_mode):
        return False
    try:
        names = os.listdir(full)
    except OSError:
        return False
    return bool(names) and all(
        runtime_only(os.path.join(full, n), f"{path}/{n}", os.lstat(os.path.join(full, n)))
        for n in names)


def _empty(full: str, st: os.stat_result) -> bool:
    if stat.S_ISDIR(st.st_mode):
        try:
            return not os.listdir(full)
        except OSError:
            return False
    return st.st_size == 0
