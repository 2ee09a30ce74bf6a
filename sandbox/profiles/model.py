"""The merged Profile, and what a run needs from it.

`to_run_options(profile, project_dir, host_env)` turns a profile into plain data for
the run half (sandbox/cli/run.py builds specgen.RunOptions from it): the image or the
bootstrap to build, the command, the environment with `${HOST_VAR}` expanded, -v
volume strings for the workspace, mounts and forwarded sockets, named volumes, the
user mode, network, limits, tmpfs, ports, devices, setup steps and the resolved
input files. It reads the host only to check that mount sources exist, to find the
forwarded sockets and devices, and to glob the inputs; it never starts anything.

`setup_key(base, steps, input_hashes)` is the cache key of the setup layer, as
docker's build cache keys a RUN step by its parent and its command text: here the
base image digest, the steps in order, and the content hashes of the inputs.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sandbox.profiles.errors import ProfileError

# Where forwarded host sockets appear inside: Docker Desktop's convention for the
# ssh agent (/run/host-services/ssh-auth.sock), used for the others too.
HOST_SERVICES = "/run/host-services"
SSH_AGENT_SOCK = f"{HOST_SERVICES}/ssh-auth.sock"
WAYLAND_SOCK = f"{HOST_SERVICES}/wayland-0"
XAUTHORITY = f"{HOST_SERVICES}/Xauthority"
X11_DIR = "/tmp/.X11-unix"
DEFAULT_SHELL = "/bin/sh"
# Device nodes the gpu forward binds (rootless runtimes can't mknod, so they bind):
# DRI render nodes (Intel/AMD/Mesa), AMD's ROCm compute node, and NVIDIA's nodes,
# the ones nvidia-container-toolkit's CDI spec lists.
GPU_DEVICES = ("/dev/dri", "/dev/kfd", "/dev/nvidiactl", "/dev/nvidia-uvm",
               "/dev/nvidia-uvm-tools", "/dev/nvidia-modeset")
SETUP_KEY_VERSION = 1


class Profile:
    """A fully merged and validated profile.

    `data` holds the profile keys in their normal form (schema.validate_profile),
    in schema order, without `extends`; `sources` the files it came from, the
    profile's own first, then each one it extends; `origin` where the first was
    found: project, user, bundled or file; `chain` the profile names along the same
    `extends` chain (a name can repeat: ./sbx.toml's python extending the bundled)."""

    __slots__ = ("chain", "data", "name", "origin", "sources")

    def __init__(self, name: str, data: dict[str, Any], sources: list[str],
                 origin: str, chain: list[str] | None = None) -> None:
        self.name = name
        self.data = data
        self.sources = sources
        self.origin = origin
        self.chain = chain or [name] * len(sources)

    def __repr__(self) -> str:
        return f"Profile({self.name!r}, sources={self.sources!r})"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Profile) and self.name == other.name
                and self.data == other.data and self.sources == other.sources)

    @property
    def image(self) -> str | dict[str, Any]:
        image: str | dict[str, Any] = self.data["image"]
        return image

    @property
    def bootstrap(self) -> dict[str, Any] | None:
        """The image table, when the image is bootstrapped from Debian packages."""
        image = self.data["image"]
        return image if isinstance(image, dict) else None

    @property
    def description(self) -> str:
        return str(self.data.get("description", ""))

    @property
    def setup(self) -> list[str]:
        return list(self.data.get("setup", []))

    def image_text(self) -> str:
        """The image as `sbx profile list` shows it."""
        boot = self.bootstrap
        if boot is None:
            return str(self.image)
        n = len(boot.get("packages", []))
        return f"bootstrap {boot['bootstrap']}" + (f" +{n} packages" if n else "")

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "origin": self.origin, "sources": list(self.sources),
                "profile": self.data}

    def to_toml(self) -> str:
        """The merged profile as a profile file of its own (it loads back the same)."""
        from sandbox.profiles.tomlwrite import dumps

        comment = f"profile {self.name}, merged from:\n" + "\n".join(
            f"  {n}: {s}" for n, s in zip(self.chain, self.sources, strict=False))
        return dumps(self.data, comment=comment)


# --- ${HOST_VAR} ---------------------------------------------------------------------


def expand(text: str, host_env: Mapping[str, str], unset: list[str] | None = None) -> str:
    """docker compose's interpolation against the host's environment: ${VAR},
    ${VAR:-default} (when unset or empty), ${VAR-default} (when unset), $$ -> $.
    An unset ${VAR} without a default becomes "" (compose does the same, with a
    warning): its name is added to `unset` for the caller to warn about."""
    from sandbox.profiles.schema import REF_RE

    def sub(m: Any) -> str:
        if m.group(0) == "$$":
            return "$"
        name, op, default = m.group("name"), m.group("op"), m.group("default")
        value = host_env.get(name)
        if op == ":-":
            return value if value else default
        if op == "-":
            return value if value is not None else default
        if value is None:
            if unset is not None:
                unset.append(name)
            return ""
        return value

    return REF_RE.sub(sub, text)


def expand_env(env: Mapping[str, str], host_env: Mapping[str, str],
               warnings: list[str] | None = None) -> list[str]:
    """A profile's env table as KEY=VALUE strings, host references expanded."""
    out = []
    for key, value in env.items():
        unset: list[str] = []
        out.append(f"{key}={expand(value, host_env, unset)}")
        if warnings is not None:
            warnings.extend(f"env {key}: ${{{name}}} is not set on the host: using \"\""
                            for name in unset)
    return out


# --- inputs and the setup cache ------------------------------------------------------


def resolve_inputs(project_dir: str, patterns: Sequence[str],
                   warnings: list[str] | None = None) -> list[str]:
    """The files `inputs` names, relative to the project, sorted and unique. A
    pattern is a glob (`**` crosses directories); a directory stands for the files
    under it; a pattern matching nothing is a warning, not an error (the file may
    be made by a later step)."""
    import glob

    found: set[str] = set()
    for pattern in patterns:
        matches = glob.glob(pattern, root_dir=project_dir, recursive=True)
        if not matches and warnings is not None:
            warnings.append(f"inputs: {pattern!r} matches no file in {project_dir}")
        for rel in matches:
            full = os.path.join(project_dir, rel)
            if os.path.isdir(full):
                for root, dirs, files in os.walk(full):
                    dirs.sort()
                    for f in files:
                        found.add(os.path.relpath(os.path.join(root, f), project_dir))
            elif os.path.isfile(full):
                found.add(os.path.normpath(rel))
    return sorted(found)


def hash_inputs(project_dir: str, files: Iterable[str]) -> list[tuple[str, str]]:
    """[(relative path, "sha256:HEX" of its content)], in the order given."""
    out = []
    for rel in files:
        h = hashlib.sha256()
        try:
            with open(os.path.join(project_dir, rel), "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
        except OSError as exc:
            raise ProfileError(f"inputs: can't read {rel}: {exc.strerror}") from None
        out.append((rel, "sha256:" + h.hexdigest()))
    return out


def _digest_of(value: Any) -> str:
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def setup_key(base_image_digest: str, steps: Sequence[str],
              input_hashes: Iterable[tuple[str, str] | Sequence[str]],
              env: Sequence[str] = ()) -> str:
    """The setup layer's cache key: "sha256:HEX" over the base image's digest (or
    bootstrap_key), the steps in order, the (path, hash) of every input (in any
    order) and the environment the steps see. The same arguments give the same key
    on every machine and every run; any change gives another."""
    return _digest_of({
        "version": SETUP_KEY_VERSION,
        "base": base_image_digest,
        "steps": list(steps),
        "inputs": sorted([str(p), str(h)] for p, h in input_hashes),
        "env": list(env),
    })


def bootstrap_key(image: Mapping[str, Any]) -> str:
    """The identity of a bootstrapped base image: "sha256:HEX" over the suite, the
    package set (order and repeats don't matter to apt), the mirror and variant.
    It stands in for the base image digest in setup_key and in sbx.lock."""
    return _digest_of({
        "version": SETUP_KEY_VERSION,
        "bootstrap": image["bootstrap"],
        "packages": sorted(set(image.get("packages", []))),
        "mirror": image.get("mirror", ""),
        "variant": image.get("variant", ""),
    })


# --- what a run needs -------------------------------------------------------------------


def _host_path(text: str, project_dir: str, host_env: Mapping[str, str],
               warnings: list[str]) -> str:
    unset: list[str] = []
    path = expand(text, host_env, unset)
    warnings.extend(f"{text}: ${{{name}}} is not set on the host" for name in unset)
    if path == "~" or path.startswith("~/"):
        home = host_env.get("HOME") or os.path.expanduser("~")
        path = home + path[1:]
    return os.path.normpath(os.path.join(project_dir, path))


def _user_mode(user: str) -> tuple[str, str | None]:
    """(userns, user) for specgen.RunOptions: keep-id is podman's --userns=keep-id
    (same uid, gid and name inside); root is root of the user namespace (you,
    outside); anything else runs as that user, root of the namespace mapped to you."""
    if user == "keep-id":
        return "keep-id", None
    if user == "root":
        return "", "0:0"
    return "", user


def _forwards(forward: Mapping[str, bool], host_env: Mapping[str, str], home: str | None,
              volumes: list[str], env: list[str], devices: list[str],
              warnings: list[str]) -> None:
    """Opt-in host integrations, as toolbox and distrobox give by default."""
    if forward.get("ssh_agent"):
        sock = host_env.get("SSH_AUTH_SOCK", "")
        if sock and os.path.exists(sock):
            volumes.append(f"{sock}:{SSH_AGENT_SOCK}")
            env.append(f"SSH_AUTH_SOCK={SSH_AGENT_SOCK}")
        else:
            warnings.append("forward.ssh_agent: no agent socket (SSH_AUTH_SOCK is unset "
                            "or gone): start ssh-agent, or set ssh_agent = false")
    if forward.get("git_config"):
        host_home = host_env.get("HOME", "")
        xdg = host_env.get("XDG_CONFIG_HOME") or os.path.join(host_home, ".config")
        candidates = [(os.path.join(host_home, ".gitconfig"), ".gitconfig"),
                      (os.path.join(xdg, "git", "config"), ".config/git/config")]
        present = [(src, rel) for src, rel in candidates if host_home and os.path.isfile(src)]
        if home is None:
            warnings.append("forward.git_config: the home directory inside is unknown for "
                            "this user: use user = \"keep-id\" or \"root\", or a mount")
        elif not present:
            warnings.append("forward.git_config: no ~/.gitconfig or ~/.config/git/config")
        else:
            # Read-only, as VS Code dev containers copy it in: the container can't
            # change the host's git identity or aliases.
            volumes.extend(f"{src}:{home}/{rel}:ro" for src, rel in present)
    if forward.get("x11"):
        display = host_env.get("DISPLAY", "")
        if not display:
            warnings.append("forward.x11: DISPLAY is not set on the host")
        else:
            if os.path.isdir(X11_DIR):
                volumes.append(f"{X11_DIR}:{X11_DIR}")
            env.append(f"DISPLAY={display}")
            xauth = host_env.get("XAUTHORITY", "")
            if xauth and os.path.isfile(xauth):
                volumes.append(f"{xauth}:{XAUTHORITY}:ro")
                env.append(f"XAUTHORITY={XAUTHORITY}")
    if forward.get("wayland"):
        name = host_env.get("WAYLAND_DISPLAY") or "wayland-0"
        runtime = host_env.get("XDG_RUNTIME_DIR", "")
        sock = name if name.startswith("/") else os.path.join(runtime, name) if runtime else ""
        if sock and os.path.exists(sock):
            volumes.append(f"{sock}:{WAYLAND_SOCK}")
            # libwayland (1.15+) takes an absolute WAYLAND_DISPLAY as the socket
            # path, so the client needs no XDG_RUNTIME_DIR of the host's.
            env.append(f"WAYLAND_DISPLAY={WAYLAND_SOCK}")
        else:
            warnings.append("forward.wayland: no Wayland socket (WAYLAND_DISPLAY, "
                            "XDG_RUNTIME_DIR) on the host")
    if forward.get("gpu"):
        import glob

        nodes = [d for d in GPU_DEVICES if os.path.exists(d)]
        nodes += sorted(d for d in glob.glob("/dev/nvidia[0-9]*") if os.path.exists(d))
        if nodes:
            devices.extend(nodes)
        else:
            warnings.append("forward.gpu: no GPU device nodes (/dev/dri, /dev/kfd, "
                            "/dev/nvidia*) on this host")


def command_args(profile: Profile, command: Sequence[str] | None = None) -> list[str]:
    """What runs: `command` from the command line, else the profile's command (a
    string runs with `shell -c`, as a Dockerfile's shell form runs with its SHELL),
    else a login shell."""
    if command:
        return list(command)
    shell = profile.data.get("shell", DEFAULT_SHELL)
    cmd = profile.data.get("command")
    if isinstance(cmd, str):
        return [shell, "-c", cmd]
    if cmd:
        return list(cmd)
    return [shell, "-l"]


def to_run_options(profile: Profile, project_dir: str, host_env: Mapping[str, str],
                   command: Sequence[str] | None = None) -> dict[str, Any]:
    """What a run of `profile` in `project_dir` needs (see the module docstring).

    Returns a dict:
      name          the profile's name
      image         the image reference as written (tag or digest), or None
      bootstrap     None, or {"bootstrap", "packages", "mirror", "variant", "key"}
      base_key      the image reference, or the bootstrap key: what identifies the
                    base before a digest is known (lock.py records the digest)
      args          the command to run (command_args); shell_args: a login shell
      env           ["KEY=VALUE"], forwards first, then the profile's (later wins)
      workdir       the working directory: `workdir`, else the workspace target
      volumes       ["HOST:CTR[:ro]"]: the workspace, mounts, then forwards
      named_volumes [(name, container path)]: persisted across runs
      tmpfs         ["PATH[:OPTS]"] as --tmpfs takes them
      devices       [host device paths] to bind (forward.gpu)
      userns, user  for RunOptions: ("keep-id", None) | ("", "0:0") | ("", USER)
      user_mode     the profile's user value as written: keep-id, root, uid[:gid], name
      network       "host" | "none"
      limits        {"memory": bytes | None, "cpus": float | None, "pids": int | None}
      ports         [{"host_ip", "host_port", "container_port", "protocol"}]
      setup         [shell steps]
      inputs        [paths relative to project_dir], resolved from the globs
      warnings      [messages]: unset host variables, missing sockets, ...
    Raises ProfileError for a mount source that does not exist (unless optional).
    """
    from sandbox.profiles.schema import parse_port, parse_size

    data = profile.data
    warnings: list[str] = []
    project_dir = os.path.abspath(project_dir)
    user_mode = data.get("user", "keep-id")
    userns, user = _user_mode(user_mode)
    home: str | None = None
    if user_mode == "keep-id":
        home = host_env.get("HOME") or None
    elif user_mode in ("root", "0", "0:0"):
        home = "/root"

    volumes: list[str] = []
    workdir = data.get("workdir")
    ws = data.get("workspace", {})
    if ws is not False:
        src = _host_path(ws.get("source", "."), project_dir, host_env, warnings)
        target = ws.get("target") or src
        if ":" in src:
            raise ProfileError(f"profile {profile.name}: workspace {src} has a ':' in its "
                               "path, which a volume can't carry",
                               hint="set workspace.source to a path without ':'")
        if not os.path.isdir(src):
            raise ProfileError(f"profile {profile.name}: workspace {src} is not a directory")
        volumes.append(f"{src}:{target}" + (":ro" if ws.get("ro") else ""))
        workdir = workdir or target

    for i, mount in enumerate(data.get("mounts", [])):
        src = _host_path(mount["source"], project_dir, host_env, warnings)
        if ":" in src:
            raise ProfileError(f"profile {profile.name}: mounts[{i}].source {src} has a ':'")
        if not os.path.exists(src):
            if mount.get("optional"):
                continue
            # podman refuses a missing bind source too (docker -v would create a dir).
            raise ProfileError(f"profile {profile.name}: mounts[{i}].source {src} does "
                               "not exist", hint="create it, or set optional = true")
        volumes.append(f"{src}:{mount['target']}" + (":ro" if mount.get("ro") else ""))

    env: list[str] = []
    devices: list[str] = []
    _forwards(data.get("forward", {}), host_env, home, volumes, env, devices, warnings)
    env += expand_env(data.get("env", {}), host_env, warnings)

    limits = data.get("limits", {})
    network = data.get("network", "host")
    ports = [parse_port(p) for p in data.get("ports", [])]
    if ports and network == "host":
        # docker: "Published ports are discarded when using host network mode".
        warnings.append("ports: the host network is shared: ports need no publishing")

    boot = profile.bootstrap
    bootstrap = None
    if boot is not None:
        bootstrap = {"bootstrap": boot["bootstrap"], "packages": list(boot.get("packages", [])),
                     "mirror": boot.get("mirror"), "variant": boot.get("variant"),
                     "key": bootstrap_key(boot)}
    return {
        "name": profile.name,
        "image": None if boot is not None else profile.image,
        "bootstrap": bootstrap,
        "base_key": bootstrap["key"] if bootstrap else profile.image,
        "args": command_args(profile, command),
        "shell_args": [data.get("shell", DEFAULT_SHELL), "-l"],
        "env": env,
        "workdir": workdir,
        "volumes": volumes,
        "named_volumes": list(data.get("volumes", {}).items()),
        "tmpfs": list(data.get("tmpfs", [])),
        "devices": devices,
        "userns": userns,
        "user": user,
        "user_mode": user_mode,
        "network": network,
        "limits": {
            "memory": parse_size(limits["memory"]) if "memory" in limits else None,
            "cpus": float(limits["cpus"]) if "cpus" in limits else None,
            "pids": limits.get("pids"),
        },
        "ports": ports,
        "setup": list(data.get("setup", [])),
        "inputs": resolve_inputs(project_dir, data.get("inputs", []), warnings),
        "warnings": warnings,
    }
