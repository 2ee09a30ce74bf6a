"""A runtime Spec as the JSON a container record keeps, and back.

The record holds `Spec.to_oci()`, a config.json a peer runtime could read, plus an
"sbx" object for what the runtime-spec has no field for: the root's own mount (the
union of an image's layers, which a rootless overlay needs to mount from inside the
user namespace), the directory its relative lowerdirs start from, --init, and the
user's name. Pure data; no I/O.
"""

from __future__ import annotations

from typing import Any

from sandbox.runtime.spec import (
    Capabilities,
    IdMapping,
    Linux,
    Mount,
    Process,
    Root,
    Spec,
    User,
)


def _mount_to_json(m: Mount) -> dict[str, Any]:
    out: dict[str, Any] = {"destination": m.destination, "type": m.type,
                           "options": list(m.options)}
    if m.source is not None:
        out["source"] = m.source
    return out


def _mount_from_json(d: dict[str, Any]) -> Mount:
    return Mount(str(d["destination"]), str(d.get("type", "bind")), d.get("source"),
                 list(d.get("options", [])))


def to_json(spec: Spec) -> dict[str, Any]:
    """The OCI config.json of `spec`, with sbx's extensions under "sbx"."""
    doc = spec.to_oci()
    extra: dict[str, Any] = {"init": spec.init, "username": spec.process.user.username}
    if spec.root.mount is not None:
        extra["rootMount"] = _mount_to_json(spec.root.mount)
        extra["rootMountCwd"] = spec.root.mount_cwd
    if spec.root.mount_program:
        extra["rootMountProgram"] = list(spec.root.mount_program)
    doc["sbx"] = extra
    return doc


def _maps(items: list[dict[str, Any]]) -> list[IdMapping]:
    return [IdMapping(int(m["containerID"]), int(m["hostID"]), int(m["size"])) for m in items]


def from_json(doc: dict[str, Any]) -> Spec:
    """The Spec that `to_json` wrote (KeyError/TypeError/ValueError on a bad document)."""
    extra = doc.get("sbx", {})
    proc = doc["process"]
    user = proc.get("user", {})
    caps = proc.get("capabilities", {})
    process = Process(
        args=list(proc["args"]),
        env=list(proc.get("env", [])),
        cwd=str(proc.get("cwd", "/")),
        user=User(int(user.get("uid", 0)), int(user.get("gid", 0)),
                  [int(g) for g in user.get("additionalGids", [])], extra.get("username")),
        terminal=bool(proc.get("terminal", False)),
        capabilities=Capabilities(
            bounding=list(caps.get("bounding", [])),
            effective=list(caps.get("effective", [])),
            permitted=list(caps.get("permitted", [])),
            inheritable=list(caps.get("inheritable", [])),
            ambient=list(caps.get("ambient", [])),
        ),
        no_new_privileges=bool(proc.get("noNewPrivileges", True)),
    )
    root_doc = doc["root"]
    root_mount = extra.get("rootMount")
    root = Root(str(root_doc["path"]), bool(root_doc.get("readonly", False)),
                mount=_mount_from_json(root_mount) if root_mount else None,
                mount_cwd=extra.get("rootMountCwd"),
                mount_program=extra.get("rootMountProgram"))
    linux_doc = doc.get("linux", {})
    linux = Linux(
        namespaces=[str(n["type"]) for n in linux_doc.get("namespaces", [])],
        uid_mappings=_maps(linux_doc.get("uidMappings", [])),
        gid_mappings=_maps(linux_doc.get("gidMappings", [])),
        masked_paths=list(linux_doc.get("maskedPaths", [])),
        readonly_paths=list(linux_doc.get("readonlyPaths", [])),
    )
    return Spec(
        process=process,
        root=root,
        hostname=str(doc.get("hostname", "")),
        mounts=[_mount_from_json(m) for m in doc.get("mounts", [])],
        linux=linux,
        annotations=dict(doc.get("annotations", {})),
        init=bool(extra.get("init", False)),
    )


__all__ = ["from_json", "to_json"]
