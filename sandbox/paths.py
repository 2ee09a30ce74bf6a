"""Where sbx keeps things: the one owner of every path under its directories.

Follows the XDG base directory spec as podman does: data in $XDG_DATA_HOME/sbx,
config in $XDG_CONFIG_HOME/sbx, runtime state in $XDG_RUNTIME_DIR/sbx (falling back to
/tmp/sbx-UID, mode 0700, as podman falls back to /tmp/podman-run-UID).
Nothing else in sbx joins paths into these directories.

Paths are plain strings built with os.path: this module is on the `sbx run` hot path,
and pathlib alone costs about 3 ms to import.
"""

from __future__ import annotations

import os

from sandbox.errors import SbxError


def _home() -> str:
    return os.environ.get("HOME") or os.path.expanduser("~")


def data_dir() -> str:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(_home(), ".local", "share")
    return os.path.join(base, "sbx")


def storage_dir() -> str:
    """The image store's root (sandbox.images.store.Store owns everything under it)."""
    return os.path.join(data_dir(), "storage")


def config_dir() -> str:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(_home(), ".config")
    return os.path.join(base, "sbx")


def profiles_dir() -> str:
    """The user's own profiles, NAME.toml each (sandbox/profiles/load.py looks here
    after the project's and before the bundled ones)."""
    return os.path.join(config_dir(), "profiles")


def runtime_dir() -> str:
    """The per-user runtime directory, created 0700 on first use."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base and os.path.isdir(base) and os.access(base, os.W_OK):
        path = os.path.join(base, "sbx")
    else:
        path = f"/tmp/sbx-{os.getuid()}"
    os.makedirs(path, mode=0o700, exist_ok=True)
    st = os.lstat(path)
    if st.st_uid != os.getuid() or (st.st_mode & 0o077):
        # Someone else could have made /tmp/sbx-UID first; refuse to use it.
        raise SbxError(
            f"runtime directory {path} is not private to this user",
            hint="remove it, or set XDG_RUNTIME_DIR to a directory of your own (mode 0700)",
        )
    return path


def container_dir(container_id: str) -> str:
    """Per-container storage (the writable layer): kept across reboots, as podman's
    overlay-containers/."""
    return os.path.join(data_dir(), "containers", container_id)


def container_run_dir(container_id: str) -> str:
    """Per-container runtime files (generated /etc/hosts, hostname, resolv.conf)."""
    return os.path.join(runtime_dir(), "containers", container_id)
