"""A cache of loaded profiles, so that a warm `sbx run PROFILE` reads no TOML.

Loading a profile means importing tomllib, parsing ./sbx.toml and every file its
`extends` chain reaches (a bundled one at least), and checking each against the
schema: ~12 ms of a ~90 ms run (bench/shell). The merged result depends only on
those files and on which files exist where discovery looks first, so it is kept,
in the runtime directory, under the name as typed and the folder, with a
fingerprint: (inode, mtime, size) of every source file, of ./sbx.toml, and of the
folders whose entries decide what a name means (./.sbx, the user's profiles
folder, the bundled folder; creating or removing a file there changes the folder's
mtime). Any difference, and the profile is loaded again.

As git does for its index ("racy git"), nothing is cached while a file involved is
less than a second old, so a rewrite within one timestamp tick cannot hide.
Errors are never cached: a broken profile is parsed (and reported) every time.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from typing import Any

from sandbox import paths
from sandbox.profiles.model import Profile

MAX_ENTRIES = 32
VERSION = 1


def _stat(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_ino, st.st_mtime_ns, st.st_size]


def _watched(cwd: str, ref: str) -> list[str]:
    from sandbox.profiles.load import BUNDLED_DIR, PROJECT_DIR, PROJECT_FILE

    out = [os.path.join(cwd, PROJECT_FILE), os.path.join(cwd, PROJECT_DIR),
           paths.profiles_dir(), BUNDLED_DIR]
    if ref.endswith(".toml"):
        out.append(os.path.abspath(os.path.join(cwd, ref)))
    return out


def fingerprint(cwd: str, ref: str, sources: list[str]) -> list[Any]:
    return [[p, _stat(p)] for p in [*_watched(cwd, ref), *sources]]


def _file() -> str:
    return os.path.join(paths.runtime_dir(), "profile-cache.json")


def _load() -> dict[str, Any]:
    try:
        with open(_file(), "rb") as f:
            data = json.loads(f.read())
        return data if isinstance(data, dict) and data.get("version") == VERSION else {}
    except (OSError, ValueError):
        return {}


def get(ref: str, cwd: str) -> Profile | None:
    entry = _load().get("entries", {}).get(f"{cwd}\0{ref}")
    if not isinstance(entry, dict):
        return None
    try:
        sources = list(entry["sources"])
        if entry["fingerprint"] != fingerprint(cwd, ref, sources):
            return None
        return Profile(entry["name"], entry["data"], sources, entry["origin"],
                       list(entry["chain"]))
    except (KeyError, TypeError):
        return None


def put(ref: str, cwd: str, profile: Profile) -> None:
    fp = fingerprint(cwd, ref, list(profile.sources))
    now = time.time_ns()
    if any(st is not None and now - st[1] < 1_000_000_000 for _p, st in fp):
        return  # racy: a file changed within the last second
    data = _load()
    entries = data.get("entries", {}) if isinstance(data.get("entries"), dict) else {}
    key = f"{cwd}\0{ref}"
    entries.pop(key, None)
    while len(entries) >= MAX_ENTRIES:
        entries.pop(next(iter(entries)))
    entries[key] = {"name": profile.name, "data": profile.data,
                    "sources": list(profile.sources), "origin": profile.origin,
                    "chain": list(profile.chain), "fingerprint": fp}
    path = _file()
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        with open(tmp, "w") as f:
            json.dump({"version": VERSION, "entries": entries}, f)
        os.rename(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
