"""How a profile combines with the one it `extends`: pure functions on validated tables.

The rules (docs/profiles.md, "extends", has the same table):

  description, workdir, shell, user, network, image, command
                        the child's value replaces the parent's (`command` included:
                        a list is one command, not a list of items to add)
  env, limits, forward, volumes
                        merged key by key, the child's value winning (docker
                        compose merges `environment` and `labels` so)
  workspace             merged key by key; `workspace = false` in either wins whole
  mounts                merged by target path: a child's mount at the parent's
                        target replaces it in place, others are appended (compose
                        merges `volumes` by container path)
  tmpfs                 merged by path, the same way
  ports, inputs         appended, parent first, without repeats
  setup                 appended, parent first (the parent's steps run first, as a
                        Dockerfile's FROM parent's RUN steps do); repeats are kept
  extends               not inherited: it is what was just applied
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

REPLACE = ("description", "workdir", "shell", "user", "network", "image", "command")
BY_KEY = ("env", "limits", "forward", "volumes")
APPEND_UNIQUE = ("ports", "inputs")
APPEND = ("setup",)


def _merge_by(parent: list[Any], child: list[Any], key: Any) -> list[Any]:
    out = list(parent)
    index = {key(item): i for i, item in enumerate(out)}
    for item in child:
        k = key(item)
        if k in index:
            out[index[k]] = item
        else:
            index[k] = len(out)
            out.append(item)
    return out


def _tmpfs_path(spec: str) -> str:
    return spec.partition(":")[0]


def merge(parent: Mapping[str, Any], child: Mapping[str, Any]) -> dict[str, Any]:
    """`child` extends `parent` (both validated): the merged table, in schema key order."""
    from sandbox.profiles.schema import PROFILE_KEYS

    out: dict[str, Any] = {}
    for name in PROFILE_KEYS:
        if name == "extends":
            continue
        has_p, has_c = name in parent, name in child
        if not has_c:
            if has_p:
                out[name] = _copy(parent[name])
            continue
        c = child[name]
        if not has_p:
            out[name] = _copy(c)
            continue
        p = parent[name]
        if name in BY_KEY:
            out[name] = {**p, **c}
        elif name == "workspace":
            out[name] = {**p, **c} if isinstance(p, dict) and isinstance(c, dict) else _copy(c)
        elif name == "mounts":
            out[name] = _merge_by(p, c, lambda m: m["target"])
        elif name == "tmpfs":
            out[name] = _merge_by(p, c, _tmpfs_path)
        elif name in APPEND_UNIQUE:
            out[name] = list(dict.fromkeys([*p, *c]))
        elif name in APPEND:
            out[name] = [*p, *c]
        else:
            out[name] = _copy(c)
    return out


def _copy(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {k: _copy(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_copy(x) for x in v]
    return v
