"""The fuse driver: sbx's own union filesystem (fs/, `sbx-fs`) over the image layers.

Slower than kernel overlayfs, but it can present the layers' owners under another
id map: with `--userns=keep-id` the user's own uid sits where the image's root was,
and the kernel cannot shift an unprivileged overlay. sbx-fs does, from the same
uidmapping/gidmapping options fuse-overlayfs takes. The runtime runs it in the
container's user and mount namespaces before the pid namespace exists
(`Root.mount_program`), and ends it when the container is gone.
"""

from __future__ import annotations

from collections.abc import Sequence

from sandbox.runtime.spec import IdMapping, Root
from sandbox.storage.overlay import ContainerLayer


def _mapping(maps: Sequence[IdMapping]) -> str:
    """fuse-overlayfs's `S:P:N` triples: ids S.. as stored (here: as this namespace
    sees the disk, IdMapping.host_id) appear as P.. through the mount (the container's
    ids, IdMapping.container_id); fs/mapping.py."""
    return ":".join(f"{m.host_id}:{m.container_id}:{m.size}" for m in maps)


def root_for(sbx_fs: str, layer_dirs: Sequence[str], layer: ContainerLayer,
             readonly: bool = False, uid_shift: Sequence[IdMapping] = (),
             gid_shift: Sequence[IdMapping] = ()) -> Root:
    lowers = ":".join(reversed(list(layer_dirs)))  # top first, as overlayfs
    options = f"lowerdir={lowers},upperdir={layer.upper},workdir={layer.work}"
    if uid_shift:
        options += f",uidmapping={_mapping(uid_shift)},gidmapping={_mapping(gid_shift)}"
    return Root(layer.merged, readonly, mount_program=[sbx_fs, "-o", options, layer.merged])
