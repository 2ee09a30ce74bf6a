"""podman's `--filter KEY=VALUE` lists, pure: their parsing and how they combine.

Owns: the grammar that `ps` and `volume ls/prune` share with podman (podman-ps(1),
podman-volume-ls(1)): KEY=VALUE items, a fixed set of keys per command, `name` a
regular expression searched in the name, `label` KEY or KEY=VALUE; filters with the
same key are ORed, different keys ANDed. What each key means for a container or a
volume stays with its command (cli/ps.py, volumes/filters.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping, Sequence

from sandbox.errors import UsageError

Filters = dict[str, list[str]]


def parse(items: Sequence[str], keys: Sequence[str], *, what: str = "filter",
          values: Mapping[str, Collection[str]] | None = None) -> Filters:
    """The items by key; UsageError naming the item for an unknown key, a value
    outside `values[key]`, or a `name` that is not a regular expression."""
    out: Filters = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in keys:
            raise UsageError(f"invalid {what} {item!r}",
                             hint="filters: " + ", ".join(f"{k}=..." for k in keys))
        allowed = (values or {}).get(key)
        if allowed is not None and value not in allowed:
            raise UsageError(f"invalid {key} filter {value!r}",
                             hint=f"{key} is one of " + ", ".join(allowed))
        if key == "name":
            try:
                re.compile(value)
            except re.error as exc:
                raise UsageError(f"invalid name filter {value!r}: {exc}") from None
        out.setdefault(key, []).append(value)
    return out


def label_matches(labels: Mapping[str, str], value: str) -> bool:
    """`label=KEY` (present) or `label=KEY=VALUE` (equal)."""
    k, sep, v = value.partition("=")
    return k in labels and (not sep or labels[k] == v)


def matches(filters: Filters, one: Callable[[str, str], bool]) -> bool:
    """Same key ORed, different keys ANDed; `one(key, value)` tests one filter."""
    return all(any(one(key, v) for v in values) for key, values in filters.items())
