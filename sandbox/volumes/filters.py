"""`sbx volume ls --filter` and `volume prune --filter`: podman's volume filters, pure.

Keys (podman-volume-ls(1)): `name` (a regular expression searched in the name, as
podman's), `label` (KEY or KEY=VALUE), `driver`, `dangling` (true: no container uses
it). Parsing and combining are sandbox/filters.py's, shared with `ps`.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence

from sandbox import filters as shared
from sandbox.volumes.store import Volume

KEYS = ("name", "label", "driver", "dangling")


def parse(items: Sequence[str]) -> dict[str, list[str]]:
    return shared.parse(items, KEYS, what="volume filter",
                        values={"dangling": ("true", "false", "1", "0")})


def _one(vol: Volume, key: str, value: str, in_use: Collection[str]) -> bool:
    if key == "name":
        return re.search(value, vol.name) is not None
    if key == "label":
        return shared.label_matches(vol.labels, value)
    if key == "driver":
        return str(vol.meta.get("driver", "local")) == value
    if key == "dangling":
        return (vol.name not in in_use) == (value in ("true", "1"))
    return False


def matches(vol: Volume, filters: dict[str, list[str]], in_use: Collection[str]) -> bool:
    """Whether `vol` passes; `in_use` holds the names of volumes containers use."""
    return shared.matches(filters, lambda key, v: _one(vol, key, v, in_use))
