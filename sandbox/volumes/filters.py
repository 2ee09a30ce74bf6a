"""`sbx volume ls --filter` and `volume prune --filter`: podman's volume filters, pure.

Keys (podman-volume-ls(1)): `name` (a regular expression searched in the name, as
podman's), `label` (KEY or KEY=VALUE), `driver`, `dangling` (true: no container uses
it). Filters with the same key are ORed, different keys ANDed, as podman does.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence

from sandbox.errors import UsageError
from sandbox.volumes.store import Volume

KEYS = ("name", "label", "driver", "dangling")


def parse(items: Sequence[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or key not in KEYS:
            raise UsageError(f"invalid volume filter {item!r}",
                             hint="filters: " + ", ".join(f"{k}=..." for k in KEYS))
        if key == "dangling" and value not in ("true", "false", "1", "0"):
            raise UsageError(f"invalid dangling filter {value!r}", hint="dangling=true|false")
        if key == "name":
            try:
                re.compile(value)
            except re.error as exc:
                raise UsageError(f"invalid name filter {value!r}: {exc}") from None
        out.setdefault(key, []).append(value)
    return out


def _one(vol: Volume, key: str, value: str, in_use: Collection[str]) -> bool:
    if key == "name":
        return re.search(value, vol.name) is not None
    if key == "label":
        k, eq, v = value.partition("=")
        labels = vol.labels
        return k in labels and (not eq or labels[k] == v)
    if key == "driver":
        return str(vol.meta.get("driver", "local")) == value
    if key == "dangling":
        return (vol.name not in in_use) == (value in ("true", "1"))
    return False


def matches(vol: Volume, filters: dict[str, list[str]], in_use: Collection[str]) -> bool:
    """Whether `vol` passes; `in_use` holds the names of volumes containers use."""
    return all(any(_one(vol, key, v, in_use) for v in values)
               for key, values in filters.items())
