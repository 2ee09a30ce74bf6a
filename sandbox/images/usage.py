"""Whether containers use an image: the question `sbx rmi` and `image prune` ask.

The image store refuses to remove an image a container uses unless forced
(`Store(in_use=...)`), as podman's `rmi` does. Containers do not exist yet, so no
image is in use; the container store will answer this question when it lands, by
replacing the body of `image_in_use` (the signature stays).
"""

from __future__ import annotations


def image_in_use(image_id: str) -> bool:
    """True when a container (running or not) was created from image `image_id`.

    Answered by the container store once it exists; until then nothing uses an
    image, so this is always False."""
    del image_id
    return False


__all__ = ["image_in_use"]
