"""Where sbx keeps things: the one owner of every path under its directories.

Follows the XDG base directory spec as podman does: data in $XDG_DATA_HOME/sbx,
config in $XDG_CONFIG_HOME/sbx, runtime state in $XDG_RUNTIME_DIR/sbx (falling back to
/tmp/sbx-UID, mode 0700, as podman falls back to /tmp/podman-run-UID).
Nothing else in sbx joins paths into these directories.
"""

from __future__ import annotations

import os
from pathlib import Path


def _home() -> Path:
    return Path(os.environ.get("HOME") or os.path.expanduser("~"))


def data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(_home() / ".local" / "share")
    return Path(base) / "sbx"


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(_home() / ".config")
    return Path(base) / "sbx"


def runtime_dir() -> Path:
    """The per-user runtime directory, created 0700 on first use."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base and os.path.isdir(base) and os.access(base, os.W_OK):
        path = Path(base) / "sbx"
    else:
        path = Path(f"/tmp/sbx-{os.getuid()}")
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.lstat()
    if st.st_uid != os.getuid() or (st.st_mode & 0o077):
        # Someone else could have made /tmp/sbx-UID first; refuse to use it.
        from sandbox.errors import SbxError

        raise SbxError(
            f"runtime directory {path} is not private to this user",
            hint="remove it, or set XDG_RUNTIME_DIR to a directory of your own (mode 0700)",
        )
    return path


def container_run_dir(container_id: str) -> Path:
    """Per-container runtime files (generated /etc/hosts, hostname, resolv.conf)."""
    return runtime_dir() / "containers" / container_id
