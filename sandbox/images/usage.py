"""Whether containers use an image: the question `sbx rmi` and `image prune` ask.

The image store refuses to remove an image a container uses unless forced
(`Store(in_use=...)`), as podman's `rmi` does. The answer comes from the container
records (sandbox/containers/store.py): every container, running or not, keeps the
id of the image it was created from, and its writable layer sits on that image's
layers, so the image must stay until the container is removed.
"""

from __future__ import annotations


def image_in_use(image_id: str) -> bool:
    """True when a container (running or not) was created from image `image_id`
    (a digest, sha256:HEX, or the bare hex)."""
    from sandbox.containers.store import ContainerStore

    want = image_id.partition(":")[2] or image_id
    for container in ContainerStore().list():
        used = str(container.config.get("image_id") or "")
        if used and (used.partition(":")[2] or used) == want:
            return True
    return False


__all__ = ["image_in_use"]
