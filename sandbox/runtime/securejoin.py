"""Resolve a container path inside a root directory without ever leaving it.

A rootfs is untrusted: /etc/passwd may be a symlink to the host's /etc/shadow, and a
mount target like /data may be a link to `../../home/you`. `secure_join` walks the path
one component at a time and resolves each symlink as if the root were `/`, the way
cyphar/filepath-securejoin (used by runc and podman) and openat2's RESOLVE_IN_ROOT do.
"""

from __future__ import annotations

import os
import stat

from sandbox.errors import SbxError

_MAX_LINKS = 255


def secure_join(root: str, path: str) -> str:
    """The host path of container `path` under `root`, with every symlink resolved in root.

    Missing trailing components are allowed (the caller may create them); the result is
    always `root` or below it.
    """
    root = os.path.abspath(root)
    pending = [c for c in path.split("/") if c]
    pending.reverse()
    resolved: list[str] = []
    links = 0
    while pending:
        part = pending.pop()
        if part == ".":
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(root, *resolved, part)
        try:
            st = os.lstat(candidate)
        except FileNotFoundError:
            resolved.append(part)
            continue
        except NotADirectoryError:
            resolved.append(part)
            continue
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > _MAX_LINKS:
                raise SbxError(f"too many levels of symbolic links resolving {path} in {root}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            pending.extend(reversed([c for c in target.split("/") if c]))
            continue
        resolved.append(part)
    return os.path.join(root, *resolved) if resolved else root
