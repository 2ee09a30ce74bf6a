"""A container's volumes: from `-v` arguments and the image's `Volumes` to bind mounts.

`specgen.parse_volume` reads `-v NAME:/path[:opts]` and `-v /path` as mounts of type
"volume"; `anonymous_for_image` adds one anonymous volume per path in the image
config's `Volumes` that no `-v` or `--tmpfs` already covers (podman and docker: a
mount given by the user replaces the image's volume at that path); `resolve` makes
or finds each volume and returns plain bind mounts of their `_data` directories, with
podman's options for volumes (nosuid, nodev, rbind) and the copy-up marker for a
volume never mounted before (sandbox/runtime/rootfs.py does the copy).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sandbox import paths
from sandbox.errors import UsageError
from sandbox.runtime.rootfs import COPY_UP_OPTION
from sandbox.runtime.spec import Mount
from sandbox.volumes.store import VolumeStore


class Resolved:
    """What `resolve` made of a container's mounts."""

    def __init__(self) -> None:
        self.mounts: list[Mount] = []
        # For the container record (config["named_volumes"]): inspect's Mounts, rm -v
        # and "is this volume in use".
        self.records: list[dict[str, Any]] = []
        self.created: list[str] = []  # volumes made by this resolve (undone on failure)


def anonymous_for_image(mounts: Sequence[Mount], image_volumes: Iterable[str],
                        tmpfs_dests: Iterable[str] = ()) -> list[Mount]:
    """One anonymous volume mount per image volume path not already mounted."""
    taken = {os.path.normpath(m.destination) for m in mounts}
    taken |= {os.path.normpath(t.partition(":")[0]) for t in tmpfs_dests}
    out = []
    for dest in sorted({os.path.normpath("/" + p.lstrip("/")) for p in image_volumes}):
        if dest not in taken:
            taken.add(dest)
            out.append(Mount(dest, "volume", "", []))
    return out


def check_destinations(mounts: Sequence[Mount]) -> None:
    """podman refuses two mounts on one path ("duplicate mount destination")."""
    seen: set[str] = set()
    for m in mounts:
        dest = os.path.normpath(m.destination)
        if dest in seen:
            raise UsageError(f"duplicate mount destination {dest}",
                             hint="give each -v/--tmpfs its own container path")
        seen.add(dest)


def resolve(mounts: Sequence[Mount], store: VolumeStore | None = None) -> Resolved:
    """Bind mounts for `mounts`, making the volumes that do not exist yet. On an
    error, the volumes made here are removed again."""
    store = store or VolumeStore()
    out = Resolved()
    try:
        for m in mounts:
            if m.type != "volume":
                out.mounts.append(m)
                continue
            if m.source:
                vol, made = store.create(m.source, exist_ok=True)
            else:
                vol, made = store.create(anonymous=True)
            if made:
                out.created.append(vol.name)
            options = ["rbind", "nosuid", "nodev"]
            options += [o for o in m.options if o not in ("z", "Z", "copy", "nocopy")]
            if "nocopy" not in m.options:
                options.append(COPY_UP_OPTION + paths.volume_copy_up_marker(vol.name))
            out.mounts.append(Mount(m.destination, "bind", vol.path, options))
            out.records.append({"name": vol.name, "destination": m.destination,
                                "anonymous": vol.anonymous, "options": list(m.options)})
    except BaseException:
        undo(out.created, store)
        raise
    return out


def undo(names: Sequence[str], store: VolumeStore | None = None,
         remove_tree: Callable[[str], None] | None = None) -> None:
    """Remove volumes that a failed create made (nothing was written to them)."""
    import shutil

    store = store or VolumeStore()
    for name in names:
        with contextlib.suppress(Exception):
            store.remove(name, remove_tree or (lambda p: shutil.rmtree(p, ignore_errors=True)))
