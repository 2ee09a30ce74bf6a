"""The volume store: create, find, list and remove volumes under DATA/volumes.

Layout (owned by sandbox/paths.py): DATA/volumes/<name>/_data is the content,
volume.json what the volume is, and `copy-up` marks a volume no container has mounted
yet (podman's NeedsCopyUp and NeedsChown; the runtime removes it at the first mount).

Creation is race-free without a lock: the volume is built in a `.tmp-` directory and
renamed into place; rename(2) of a directory onto an existing, non-empty one fails,
so of two `sbx volume create x` (or two `sbx run -v x:/d` making it on first use)
exactly one makes it and the other finds it. Removal renames the volume out of place
first (a `.trash-` directory), so it disappears at once and a killed removal leaves
only a dot-directory that `prune` sweeps.

Names are podman's: `[a-zA-Z0-9][a-zA-Z0-9_.-]*` (libpod/define: NameRegex); an
anonymous volume gets a random 64-hex name, as in podman.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from sandbox import paths
from sandbox.errors import SbxError
from sandbox.runtime.specgen import VOLUME_NAME

NAME_RE = VOLUME_NAME  # podman's rule, shared with `-v` parsing
MAX_NAME = 200  # leaves room for the .tmp-/.trash- prefixes in a 255-byte file name
DRIVER = "local"


class VolumeError(SbxError):
    pass


class NoSuchVolume(VolumeError):
    """podman: `no volume with name "x" found: no such volume`, exit 1 from rm."""

    exit_code = 1

    def __init__(self, name: str) -> None:
        super().__init__(f'no volume with name "{name}" found',
                         hint="`sbx volume ls` lists the volumes")
        self.name = name


class VolumeExists(VolumeError):
    def __init__(self, name: str) -> None:
        super().__init__(f"volume with name {name} already exists",
                         hint="choose another name, or use the existing volume")


class VolumeInUse(VolumeError):
    """podman's exit code for a volume a container uses: 2."""

    exit_code = 2

    def __init__(self, name: str, users: Iterable[str]) -> None:
        short = ", ".join(u[:12] for u in users)
        super().__init__(f"volume {name} is being used by the following container(s): "
                         f"{short}", hint="remove those containers first, or use "
                         "`sbx volume rm -f` to remove them with it")
        self.name = name


def validate_name(name: str) -> str:
    if not NAME_RE.match(name) or len(name) > MAX_NAME:
        raise VolumeError(f"invalid volume name {name!r}",
                          hint="names must match [a-zA-Z0-9][a-zA-Z0-9_.-]* "
                          f"(at most {MAX_NAME} characters)")
    return name


def _format_time(ns: int) -> str:
    """RFC 3339 with nanoseconds, UTC, as podman prints CreatedAt."""
    secs, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:09d}Z"


class Volume:
    """One volume: its name, metadata and where its content is."""

    def __init__(self, name: str, meta: dict[str, Any]) -> None:
        self.name = name
        self.meta = meta

    @property
    def path(self) -> str:
        """The directory containers see (its `_data`)."""
        return paths.volume_data_dir(self.name)

    @property
    def anonymous(self) -> bool:
        return bool(self.meta.get("anonymous"))

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.meta.get("labels") or {})

    @property
    def created(self) -> str:
        return str(self.meta.get("created", ""))

    @property
    def needs_copy_up(self) -> bool:
        return os.path.lexists(paths.volume_copy_up_marker(self.name))

    def inspect(self) -> dict[str, Any]:
        """podman's `volume inspect` fields."""
        data: dict[str, Any] = {
            "Name": self.name,
            "Driver": self.meta.get("driver", DRIVER),
            "Mountpoint": self.path,
            "CreatedAt": self.created,
            "Labels": self.labels,
            "Scope": "local",
            "Options": dict(self.meta.get("options") or {}),
            "NeedsCopyUp": self.needs_copy_up,
            "NeedsChown": self.needs_copy_up,
        }
        if self.anonymous:
            data["Anonymous"] = True
        return data

    def __repr__(self) -> str:
        return f"Volume({self.name!r})"


class VolumeStore:
    """The volumes under DATA/volumes."""

    def __init__(self) -> None:
        self.root = paths.volumes_dir()

    # -- reading ---------------------------------------------------------------------
    def load(self, name: str) -> Volume | None:
        validate_name(name)  # a name is a path component: never "..", never "a/b"
        try:
            with open(paths.volume_config_file(name), "rb") as f:
                meta = json.loads(f.read())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise VolumeError(f"the record of volume {name} is damaged ({exc})",
                              hint=f"remove it: sbx volume rm {name}") from None
        return Volume(name, meta if isinstance(meta, dict) else {})

    def get(self, name: str) -> Volume:
        found = self.load(name)
        if found is None:
            raise NoSuchVolume(name)
        return found

    def names(self) -> list[str]:
        try:
            entries = os.listdir(self.root)
        except FileNotFoundError:
            return []
        return sorted(e for e in entries if not e.startswith("."))

    def list(self) -> list[Volume]:
        out = []
        for name in self.names():
            with contextlib.suppress(VolumeError):
                vol = self.load(name)
                if vol is not None:
                    out.append(vol)
        return out

    # -- making ----------------------------------------------------------------------
    def create(self, name: str | None = None, labels: Mapping[str, str] | None = None,
               *, anonymous: bool = False, exist_ok: bool = False) -> tuple[Volume, bool]:
        """Make a volume (a random 64-hex name when `name` is None). Returns (volume,
        made now); an existing one is returned with `exist_ok`, else VolumeExists."""
        if name is None:
            name = os.urandom(32).hex()
        existing = self.load(name)
        if existing is not None:
            if exist_ok:
                return existing, False
            raise VolumeExists(name)
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        tag = f"{os.getpid()}-{os.urandom(4).hex()}"
        tmp = paths.volume_tmp_dir(name, tag)
        meta = {"name": name, "driver": DRIVER, "created": _format_time(time.time_ns()),
                "labels": dict(labels or {}), "options": {}, "anonymous": anonymous}
        try:
            os.mkdir(tmp, 0o700)
            os.mkdir(os.path.join(tmp, "_data"), 0o755)
            with open(os.path.join(tmp, "volume.json"), "w") as f:
                json.dump(meta, f)
            os.close(os.open(os.path.join(tmp, "copy-up"),
                             os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600))
            os.rename(tmp, paths.volume_dir(name))
        except OSError as exc:
            _remove_plain(tmp)
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                # Another sbx made it between our look and our rename.
                if exist_ok:
                    found = self.load(name)
                    if found is not None:
                        return found, False
                raise VolumeExists(name) from None
            raise VolumeError(f"can't create volume {name}: {exc.strerror}",
                              hint=f"check that {self.root} is writable") from None
        return Volume(name, meta), True

    def ensure(self, name: str) -> str:
        """The content directory of volume `name`, made if it does not exist yet (the
        library call profiles use for their caches)."""
        return self.create(name, exist_ok=True)[0].path

    # -- removing --------------------------------------------------------------------
    def remove(self, name: str, remove_tree: Callable[[str], None]) -> None:
        """Remove a volume and its content. Whether a container uses it is the
        caller's question (`users_of`); `remove_tree` deletes what may belong to the
        user's subordinate ids (lifecycle.remove_tree)."""
        validate_name(name)
        trash = paths.volume_trash_dir(name, f"{os.getpid()}-{os.urandom(4).hex()}")
        try:
            os.rename(paths.volume_dir(name), trash)
        except FileNotFoundError:
            raise NoSuchVolume(name) from None
        except OSError as exc:
            raise VolumeError(f"can't remove volume {name}: {exc.strerror}") from None
        remove_tree(trash)

    def leftovers(self) -> list[str]:
        """What killed creates and removals left (.tmp-*, .trash-*)."""
        try:
            entries = os.listdir(self.root)
        except FileNotFoundError:
            return []
        return [os.path.join(self.root, e) for e in entries
                if e.startswith((".tmp-", ".trash-"))]


def users_of(containers: Iterable[Any]) -> dict[str, list[str]]:
    """Volume name -> ids of the containers whose records list it (their config's
    `named_volumes`, written by `sbx run`/`create`)."""
    out: dict[str, list[str]] = {}
    for ctr in containers:
        for entry in ctr.config.get("named_volumes") or []:
            name = entry.get("name") if isinstance(entry, dict) else None
            if name:
                out.setdefault(name, []).append(ctr.id)
    return out


def _remove_plain(path: str) -> None:
    """Remove a directory this process made and nobody else wrote to."""
    import shutil

    shutil.rmtree(path, ignore_errors=True)
