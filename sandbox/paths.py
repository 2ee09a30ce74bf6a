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


def shifted_layers_dir() -> str:
    """Copies of image layers with owners shifted for another id map (keep-id), one
    folder per map (sandbox/storage/shifted.py owns what is under it)."""
    return os.path.join(data_dir(), "shifted")


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


# -- containers (sandbox/containers/store.py keeps the records; layout, version 1) --
#
#   DATA/containers/<id>/config.json   what the container is (spec, image, name, ...)
#   DATA/containers/<id>/state.json    what it is doing (status, pids, exit code)
#   DATA/containers/<id>/ctr.log       its output, podman's k8s-file format
#   DATA/containers/<id>/lock          flock(2)ed around every state change
#   DATA/containers/<id>/layer/        the overlay driver's upper/, work/, merged/
#   DATA/containers/.tmp-<id>/         a record being created (renamed into place)
#   DATA/containers/.trash-<id>/       a record being removed (renamed out of place)
#   DATA/container-names/<name>        symlink -> <id>: one name, one container
#   DATA/containers.lock               flock(2)ed around name changes
#   RUNTIME/containers/<id>/           generated /etc files; gone after a reboot
#   RUNTIME/containers/<id>/attach     a detached monitor's attach socket
#   RUNTIME/exits/<id>                 the exit code of a --rm container (conmon's
#                                      --exit-dir), for `sbx wait` after its removal

def containers_dir() -> str:
    """Every container's record, one directory per 64-hex id."""
    return os.path.join(data_dir(), "containers")


def container_dir(container_id: str) -> str:
    """One container's record: config, state, log and writable layer; kept across
    reboots, as podman's overlay-containers/<id>/userdata."""
    return os.path.join(data_dir(), "containers", container_id)


def container_tmp_dir(container_id: str) -> str:
    """Where a record is written before it is renamed into place."""
    return os.path.join(data_dir(), "containers", ".tmp-" + container_id)


def container_trash_dir(container_id: str) -> str:
    """Where a record goes (by rename) the moment it is removed."""
    return os.path.join(data_dir(), "containers", ".trash-" + container_id)


def container_config_file(container_id: str) -> str:
    return os.path.join(container_dir(container_id), "config.json")


def container_state_file(container_id: str) -> str:
    return os.path.join(container_dir(container_id), "state.json")


def container_log_file(container_id: str) -> str:
    """The container's output in podman's k8s-file format (podman: userdata/ctr.log)."""
    return os.path.join(container_dir(container_id), "ctr.log")


def container_lock_file(container_id: str) -> str:
    return os.path.join(container_dir(container_id), "lock")


def container_layer_dir(container_id: str) -> str:
    """The overlay driver's upper/, work/ and merged/ for this container."""
    return os.path.join(container_dir(container_id), "layer")


def container_names_dir() -> str:
    """One symlink per container name, pointing at the container's id."""
    return os.path.join(data_dir(), "container-names")


def container_name_link(name: str) -> str:
    return os.path.join(container_names_dir(), name)


def containers_lock_file() -> str:
    """Held while a name is taken, changed or given back."""
    return os.path.join(data_dir(), "containers.lock")


def container_run_dirs() -> str:
    """The parent of every container's runtime directory."""
    return os.path.join(runtime_dir(), "containers")


def container_creating_lock(container_id: str) -> str:
    """flock(2)ed by `sbx run`/`create` while a container's runtime files exist and
    its record does not yet (ContainerStore.clean_leftovers spares such a dir)."""
    return os.path.join(container_run_dir(container_id), ".creating")


def container_run_dir(container_id: str) -> str:
    """Per-container runtime files (generated /etc/hosts, hostname, resolv.conf),
    written again at every start, as podman's runroot userdata/."""
    return os.path.join(runtime_dir(), "containers", container_id)


def container_attach_socket(container_id: str) -> str:
    """The detached monitor's attach socket (conmon's "attach"), in the runtime dir."""
    return os.path.join(container_run_dir(container_id), "attach")


def container_exits_dir() -> str:
    return os.path.join(runtime_dir(), "exits")


def container_exit_file(container_id: str) -> str:
    """The exit code of a removed --rm container, as conmon writes to --exit-dir."""
    return os.path.join(container_exits_dir(), container_id)


def run_image_cache_file() -> str:
    """`sbx run`'s cache of image lookups (sandbox/cli/run.py, _RunCache)."""
    return os.path.join(runtime_dir(), "run-image-cache.json")


def profile_image_cache_file() -> str:
    """`sbx run PROFILE`'s cache of the image each profile resolved to
    (sandbox/cli/profile_run.py; the same rules as _RunCache)."""
    return os.path.join(runtime_dir(), "profile-image-cache.json")


# -- volumes (sandbox/volumes/store.py keeps them; layout, version 1) --
#
#   DATA/volumes/<name>/_data          the volume's content, bind-mounted into containers
#   DATA/volumes/<name>/volume.json    what it is (created, labels, driver, anonymous)
#   DATA/volumes/<name>/copy-up        present until the first mount copies the image's
#                                      content in (podman's NeedsCopyUp)
#   DATA/volumes/.tmp-<name>-<rand>/   a volume being created (renamed into place)
#   DATA/volumes/.trash-<name>-<rand>/ a volume being removed (renamed out of place)

def volumes_dir() -> str:
    """Every volume, one directory per name (podman: storage/volumes)."""
    return os.path.join(data_dir(), "volumes")


def volume_dir(name: str) -> str:
    return os.path.join(data_dir(), "volumes", name)


def volume_data_dir(name: str) -> str:
    """What containers see: podman's volumes/<name>/_data."""
    return os.path.join(data_dir(), "volumes", name, "_data")


def volume_config_file(name: str) -> str:
    return os.path.join(data_dir(), "volumes", name, "volume.json")


def volume_copy_up_marker(name: str) -> str:
    """Exists while the volume has never been mounted: the runtime removes it and
    copies the image's content at the mount point in (sandbox/runtime/rootfs.py)."""
    return os.path.join(data_dir(), "volumes", name, "copy-up")


def volume_tmp_dir(name: str, tag: str) -> str:
    return os.path.join(data_dir(), "volumes", f".tmp-{name}-{tag}")


def volume_trash_dir(name: str, tag: str) -> str:
    return os.path.join(data_dir(), "volumes", f".trash-{name}-{tag}")
