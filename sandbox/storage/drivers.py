"""Which storage driver a container gets: `overlay`, `fuse` or `vfs`, or `auto`.

`auto` takes kernel overlayfs in the user namespace where it works (the fastest;
checked once per kernel by mounting one, and cached in the runtime directory), then
sbx's own FUSE filesystem (fs/, `sbx-fs`) where /dev/fuse is usable, else `vfs`.
With `--userns=keep-id` the overlay driver mounts copies of the layers whose
owners are shifted for the keep-id map, made once per image (storage/shifted.py, as
containers/storage does for podman); the fuse driver shifts them on the fly
(uidmapping/gidmapping) without a copy, and is what `auto` takes for keep-id only
where overlay does not work. (Until the copies came, auto took fuse for keep-id:
0.28 s for `run --rm --userns=keep-id DEBIAN true` against 0.11 s on overlay.)
`--storage-driver`, $SBX_STORAGE_DRIVER or the `driver` key of `[storage]` in
$XDG_CONFIG_HOME/sbx/sbx.toml override the choice.
"""

from __future__ import annotations

import os
import sys

from sandbox import paths
from sandbox.errors import SbxError, UsageError

DRIVERS = ("overlay", "fuse", "vfs")


def requested(flag: str | None = None) -> str:
    """The driver asked for: the flag, the environment, the config file, or auto."""
    if flag:
        name = flag
    elif os.environ.get("SBX_STORAGE_DRIVER"):
        name = os.environ["SBX_STORAGE_DRIVER"]
    else:
        name = _from_config() or "auto"
    if name != "auto" and name not in DRIVERS:
        raise UsageError(f"unknown storage driver {name!r}",
                         hint=f"use one of auto, {', '.join(DRIVERS)}")
    return name


def _from_config() -> str | None:
    path = os.path.join(paths.config_dir(), "sbx.toml")
    try:
        with open(path, "rb") as f:
            import tomllib

            doc = tomllib.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise SbxError(f"can't read {path}: {exc}", hint="fix or remove the file") from None
    value = doc.get("storage", {}).get("driver")
    if value is not None and not isinstance(value, str):
        raise SbxError(f"{path}: storage.driver must be a string", hint='driver = "overlay"')
    return value


def sbx_fs() -> str | None:
    """The sbx-fs command beside this sbx (the same venv), if installed."""
    candidate = os.path.join(os.path.dirname(sys.executable), "sbx-fs")
    return candidate if os.access(candidate, os.X_OK) else None


def fuse_works() -> bool:
    return sbx_fs() is not None and os.access("/dev/fuse", os.R_OK | os.W_OK)


def overlay_works() -> bool:
    """Kernel overlayfs with userxattr in a user namespace, on the store's filesystem:
    probed once per kernel release and remembered in the runtime directory."""
    release = os.uname().release
    cache = os.path.join(paths.runtime_dir(), "overlay-probe")
    try:
        with open(cache) as f:
            seen_release, _, answer = f.read().partition(" ")
        if seen_release == release:
            return answer.strip() == "yes"
    except OSError:
        pass
    from sandbox.system.checks import probe_overlay

    base = paths.storage_dir()
    os.makedirs(base, mode=0o700, exist_ok=True)
    ok, _detail = probe_overlay(base)
    tmp = f"{cache}.{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(f"{release} {'yes' if ok else 'no'}\n")
    os.replace(tmp, cache)
    return ok


def choose(name: str, keep_id: bool = False) -> str:
    """The driver to use for a container: `name` unless it is auto. (`keep_id` no
    longer changes auto's order; kept for callers that pass it.)"""
    if name != "auto":
        if name == "fuse" and not fuse_works():
            raise SbxError("the fuse storage driver needs sbx-fs and a usable /dev/fuse",
                           hint="run `sbx system check`; or use --storage-driver=vfs")
        return name
    if overlay_works():
        return "overlay"
    if fuse_works():
        return "fuse"
    return "vfs"
