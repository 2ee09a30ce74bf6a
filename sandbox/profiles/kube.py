"""`sbx generate kube PROFILE`: the profile as a Kubernetes Pod (core/v1) manifest.

So a team that outgrows one machine runs the same environment on a cluster, as
`podman generate kube` does for a container. The mapping:

  image          by digest from sbx.lock when it agrees with the profile, else as
                 written (with a note); a bootstrapped image has no registry name,
                 so it is refused
  command        `args` (it replaces the image's CMD and keeps its ENTRYPOINT, as
                 the profile's command does in sbx: Kubernetes' `command` would
                 replace the ENTRYPOINT); no command: a shell with stdin and tty
  setup          run at start by `command: [/bin/sh, -c, "STEPS; exec \"$@\""]`
                 around args: a pod has no setup layer
  env            expanded with this host's variables, which the notes list
  workspace      a hostPath volume (only right on a one-node cluster: kind,
                 minikube; a comment says so), mounts too
  volumes        emptyDir volumes (they live as long as the pod; a PVC keeps them)
  tmpfs          emptyDir with medium Memory
  limits         resources.limits memory and cpu; pids has no per-pod field
                 (the kubelet's podPidsLimit), so it becomes a note
  user           securityContext.runAsUser/runAsGroup for root and uid[:gid];
                 keep-id and names have no equivalent (a note)
  forward, network "none"
                 no equivalent: notes

`pod_manifest` is pure data out (plus reading sbx.lock's entry passed in);
`to_yaml` writes YAML by hand, the block style kubectl prints, every string that
could read as another type quoted (YAML 1.1's "yes", "1:20" and "0o1" included).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from sandbox.profiles.errors import ProfileError
from sandbox.profiles.lock import Lock, locked_reference
from sandbox.profiles.model import Profile, command_args, expand

_NOT_LABEL = re.compile(r"[^a-z0-9-]+")
_GI, _MI, _KI = 1 << 30, 1 << 20, 1 << 10


def dns_label(text: str, fallback: str = "sbx") -> str:
    """An RFC 1123 label (Kubernetes names of containers, volumes, pods): lowercase
    letters, digits and '-', at most 63, starting and ending alphanumeric."""
    label = _NOT_LABEL.sub("-", text.lower()).strip("-")[:63].strip("-")
    return label or fallback


def memory_quantity(size: int) -> str:
    """Bytes as a Kubernetes quantity: 2147483648 -> "2Gi"."""
    for unit, suffix in ((_GI, "Gi"), (_MI, "Mi"), (_KI, "Ki")):
        if size % unit == 0:
            return f"{size // unit}{suffix}"
    return str(size)


def cpu_quantity(cpus: float) -> str:
    """2 -> "2", 2.5 -> "2500m" (millicores; Kubernetes' finest is 1m)."""
    if float(cpus).is_integer():
        return str(int(cpus))
    return f"{round(cpus * 1000)}m"


class _Names:
    """Unique volume names."""

    def __init__(self) -> None:
        self.used: set[str] = set()

    def take(self, text: str) -> str:
        base = dns_label(text, "vol")[:58]
        name, n = base, 2
        while name in self.used:
            name, n = f"{base}-{n}", n + 1
        self.used.add(name)
        return name


def pod_manifest(profile: Profile, project_dir: str, host_env: Mapping[str, str],
                 lock: Lock | None = None
                 ) -> tuple[dict[str, Any], list[str], dict[tuple[Any, ...], str]]:
    """(the Pod as a dict, notes for the reader, comments by key path for to_yaml)."""
    import os

    from sandbox.profiles.schema import parse_port, parse_size

    data = profile.data
    notes: list[str] = []
    comments: dict[tuple[Any, ...], str] = {}
    if profile.bootstrap is not None:
        raise ProfileError(
            f"profile {profile.name} bootstraps its image from Debian packages: a pod "
            "needs an image a registry serves",
            hint="push one (`sbx push`) and set image = \"REGISTRY/NAME@DIGEST\" in a "
            "profile that extends this one")
    name = dns_label(profile.name)
    image = locked_reference(profile, lock)
    if image is None:
        image = str(profile.image)
        if "@" not in image:
            notes.append(f"image {image} is not pinned by a digest: run `sbx lock "
                         f"{profile.name}` first for the image this profile was tested with")

    container: dict[str, Any] = {"name": name, "image": image}
    args = command_args(profile)
    steps = profile.setup
    if steps:
        script = "set -e\n" + "\n".join(steps) + '\nexec "$@"'
        container["command"] = ["/bin/sh", "-c", script, "sbx-setup"]
        comments[("spec", "containers", 0, "command")] = (
            "the profile's setup steps, run at every start: a pod has no setup layer")
    container["args"] = args
    if not data.get("command"):
        container["stdin"] = True
        container["tty"] = True

    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    names = _Names()
    ws = data.get("workspace", {})
    workdir = data.get("workdir")
    if ws is not False:
        src = os.path.normpath(os.path.join(
            project_dir, os.path.expanduser(expand(ws.get("source", "."), host_env))))
        target = ws.get("target") or src
        vname = names.take("workspace")
        comments[("spec", "volumes", len(volumes))] = (
            "the project folder, from the node's file system: right on a one-node "
            "cluster (kind, minikube); elsewhere use a PersistentVolumeClaim or git-sync")
        volumes.append({"name": vname, "hostPath": {"path": src, "type": "Directory"}})
        mount = {"name": vname, "mountPath": target}
        if ws.get("ro"):
            mount["readOnly"] = True
        mounts.append(mount)
        workdir = workdir or target
    for m in data.get("mounts", []):
        src = os.path.normpath(os.path.join(
            project_dir, os.path.expanduser(expand(m["source"], host_env))))
        vname = names.take("mount-" + os.path.basename(m["target"]))
        volumes.append({"name": vname, "hostPath": {"path": src}})
        mount = {"name": vname, "mountPath": m["target"]}
        if m.get("ro"):
            mount["readOnly"] = True
        mounts.append(mount)
    for vol, target in data.get("volumes", {}).items():
        vname = names.take(vol)
        comments[("spec", "volumes", len(volumes))] = (
            f"sbx's named volume {vol}: an emptyDir lasts as long as the pod; "
            "a PersistentVolumeClaim keeps it")
        volumes.append({"name": vname, "emptyDir": {}})
        mounts.append({"name": vname, "mountPath": target})
    for tmpfs in data.get("tmpfs", []):
        path, _, opts = tmpfs.partition(":")
        empty: dict[str, Any] = {"medium": "Memory"}
        for opt in opts.split(","):
            key, _, value = opt.partition("=")
            if key == "size" and value:
                try:
                    empty["sizeLimit"] = memory_quantity(parse_size(value))
                except ValueError:
                    notes.append(f"tmpfs {tmpfs}: size {value!r} is not a size")
        vname = names.take("tmpfs-" + os.path.basename(path))
        volumes.append({"name": vname, "emptyDir": empty})
        mounts.append({"name": vname, "mountPath": path})
    if workdir:
        container["workingDir"] = workdir

    env_list = []
    host_vars: set[str] = set()
    from sandbox.profiles.schema import REF_RE

    for key, value in data.get("env", {}).items():
        host_vars.update(m.group("name") for m in REF_RE.finditer(value) if m.group("name"))
        env_list.append({"name": key, "value": expand(value, host_env)})
    if env_list:
        container["env"] = env_list
    if host_vars:
        notes.append("env has values from this host's environment ("
                     + ", ".join(sorted(host_vars)) + "): check them before sharing this file")

    ports = []
    for text in data.get("ports", []):
        p = parse_port(text)
        if p is not None:
            ports.append({"containerPort": p["container_port"],
                          "protocol": p["protocol"].upper()})
    if ports:
        container["ports"] = ports
        notes.append("ports: reach them with `kubectl port-forward` or a Service")

    limits = data.get("limits", {})
    res: dict[str, str] = {}
    if "memory" in limits:
        res["memory"] = memory_quantity(parse_size(limits["memory"]))
    if "cpus" in limits:
        res["cpu"] = cpu_quantity(limits["cpus"])
    if res:
        container["resources"] = {"limits": res}
    if "pids" in limits:
        notes.append(f"limits.pids = {limits['pids']}: Kubernetes has no per-pod field "
                     "(the kubelet's podPidsLimit sets it for a node)")

    user = data.get("user", "keep-id")
    if user == "root":
        container["securityContext"] = {"runAsUser": 0, "runAsGroup": 0}
    elif re.fullmatch(r"\d+(:\d+)?", user):
        uid, _, gid = user.partition(":")
        ctx = {"runAsUser": int(uid)}
        if gid:
            ctx["runAsGroup"] = int(gid)
        container["securityContext"] = ctx
    elif user == "keep-id":
        notes.append("user keep-id has no Kubernetes equivalent: the pod runs as the "
                     "image's user (set securityContext.runAsUser to choose one)")
    else:
        notes.append(f"user {user!r}: Kubernetes takes numeric ids only "
                     "(securityContext.runAsUser)")
    if mounts:
        container["volumeMounts"] = mounts

    for fwd, on in data.get("forward", {}).items():
        if on:
            notes.append(f"forward.{fwd} has no Kubernetes equivalent: left out")
    if data.get("network") == "none":
        notes.append("network none: use a NetworkPolicy that denies all traffic")

    metadata: dict[str, Any] = {
        "name": name,
        "labels": {"app.kubernetes.io/name": name, "app.kubernetes.io/managed-by": "sbx"},
    }
    if profile.description:
        metadata["annotations"] = {"sbx/description": profile.description}
    spec: dict[str, Any] = {"restartPolicy": "Never", "containers": [container]}
    if volumes:
        spec["volumes"] = volumes
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}
    return pod, notes, comments


# --- YAML, by hand -------------------------------------------------------------------

_PLAIN = re.compile(r"[A-Za-z/][A-Za-z0-9_./@:+-]*")
# YAML 1.1 (PyYAML, and so kubectl's older parsers) reads these as booleans or null.
_SPECIAL = {"y", "n", "yes", "no", "on", "off", "true", "false", "null", "~"}


def _quote(text: str) -> str:
    """A YAML double-quoted scalar. Escaped: the quote and backslash, and what YAML
    would not keep as it is: control characters, the C1 range (NEL is a line break
    to YAML 1.1), the Unicode line and paragraph separators, the BOM, surrogates
    and the non-characters U+FFFE/U+FFFF (PyYAML refuses those in a stream)."""
    out = ['"']
    for ch in text:
        o = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif (o < 0x20 or 0x7F <= o <= 0x9F or o in (0x2028, 0x2029, 0xFEFF, 0xFFFE, 0xFFFF)
              or 0xD800 <= o <= 0xDFFF):
            out.append(f"\\u{o:04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _scalar(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if v != v:
            return ".nan"
        if v in (float("inf"), float("-inf")):
            return ".inf" if v > 0 else "-.inf"
        text = repr(v)
        # YAML 1.1 floats need a dot: 1e+20 would read back as a string.
        if "." not in text:
            mantissa, _, exp = text.partition("e")
            text = f"{mantissa}.0" + (f"e{exp}" if exp else "")
        return text
    text = str(v)
    if _PLAIN.fullmatch(text) and text.lower() not in _SPECIAL and not text.endswith(":"):
        return text
    return _quote(text)


def _key(k: str) -> str:
    return k if _PLAIN.fullmatch(k) and k.lower() not in _SPECIAL and ":" not in k \
        else _quote(k)


def _comment(lines: list[str], indent: int, text: str | None) -> None:
    if text:
        lines.extend(" " * indent + "# " + c for c in text.splitlines())


def _emit(lines: list[str], v: Any, indent: int, path: tuple[Any, ...],
          comments: Mapping[tuple[Any, ...], str]) -> None:
    pad = " " * indent
    if isinstance(v, Mapping):
        for k, x in v.items():
            _comment(lines, indent, comments.get((*path, k)))
            if isinstance(x, Mapping) and x:
                lines.append(f"{pad}{_key(k)}:")
                _emit(lines, x, indent + 2, (*path, k), comments)
            elif isinstance(x, list) and x:
                lines.append(f"{pad}{_key(k)}:")
                _emit(lines, x, indent, (*path, k), comments)
            elif isinstance(x, Mapping):
                lines.append(f"{pad}{_key(k)}: {{}}")
            elif isinstance(x, list):
                lines.append(f"{pad}{_key(k)}: []")
            else:
                lines.append(f"{pad}{_key(k)}: {_scalar(x)}")
        return
    assert isinstance(v, list)
    for i, x in enumerate(v):
        _comment(lines, indent, comments.get((*path, i)))
        if (isinstance(x, Mapping) and x) or (isinstance(x, list) and x):
            start = len(lines)
            _emit(lines, x, indent + 2, (*path, i), comments)
            # The item's first line (after any comment on its first key) takes the "- ".
            first = next(j for j in range(start, len(lines))
                         if not lines[j].lstrip().startswith("#"))
            lines[first] = pad + "- " + lines[first][indent + 2:]
        elif isinstance(x, Mapping):
            lines.append(f"{pad}- {{}}")
        elif isinstance(x, list):
            lines.append(f"{pad}- []")
        else:
            lines.append(f"{pad}- {_scalar(x)}")


def to_yaml(data: Mapping[str, Any], notes: Sequence[str] = (),
            comments: Mapping[tuple[Any, ...], str] | None = None) -> str:
    """`data` as a YAML document; `notes` as comments at its top."""
    lines: list[str] = []
    for note in notes:
        _comment(lines, 0, f"note: {note}")
    _emit(lines, data, 0, (), comments or {})
    return "\n".join(lines) + "\n"
