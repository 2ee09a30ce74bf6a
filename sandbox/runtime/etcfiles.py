"""The files every container gets generated for it: /etc/hostname, /etc/hosts,
/etc/resolv.conf, and /etc/passwd and /etc/group with the keep-id user added.

They are written to the container's state directory and bind-mounted over the rootfs's
own, as podman does, so the rootfs itself is never changed.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable


def _read_host(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def hosts_text(hostname: str, network: str) -> str:
    lines = [
        "127.0.0.1\tlocalhost localhost.localdomain",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        f"127.0.1.1\t{hostname}",
    ]
    if network == "host":
        # With the host's network, the host's names resolve inside too (podman).
        host = [ln for ln in _read_host("/etc/hosts").splitlines()
                if ln.strip() and not ln.lstrip().startswith("#")
                and "localhost" not in ln]
        lines += host
    return "\n".join(lines) + "\n"


def resolv_text(network: str) -> str:
    if network == "none":
        return ""
    return _read_host("/etc/resolv.conf")


def write(state_dir: str, read: Callable[[str], str], hostname: str, network: str,
          keep_id_user: tuple[str, int, int, str] | None = None) -> dict[str, str]:
    """Write the files; return {container path: host path} for those to bind-mount."""
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    files = {
        "/etc/hostname": hostname + "\n",
        "/etc/hosts": hosts_text(hostname, network),
        "/etc/resolv.conf": resolv_text(network),
    }
    if keep_id_user is not None:
        name, uid, gid, home = keep_id_user
        passwd = read("/etc/passwd")
        if not any(_field(ln, 2) == str(uid) for ln in passwd.splitlines()):
            entry = f"{name}:x:{uid}:{gid}:{name}:{home}:/bin/sh\n"
            files["/etc/passwd"] = _ensure_nl(passwd) + entry
        group = read("/etc/group")
        if not any(_field(ln, 2) == str(gid) for ln in group.splitlines()):
            files["/etc/group"] = _ensure_nl(group) + f"{name}:x:{gid}:\n"
    out = {}
    for dest, text in files.items():
        host = os.path.join(state_dir, dest.rsplit("/", 1)[1])
        with open(host, "w") as f:
            f.write(text)
        os.chmod(host, 0o644)
        out[dest] = host
    return out


def remove(state_dir: str) -> None:
    """Remove what `write` made (a flat directory; no shutil on the hot path)."""
    try:
        names = os.listdir(state_dir)
    except FileNotFoundError:
        return
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(state_dir, name))
    with contextlib.suppress(OSError):
        os.rmdir(state_dir)


def _field(line: str, n: int) -> str:
    parts = line.split(":")
    return parts[n] if len(parts) > n else ""


def _ensure_nl(text: str) -> str:
    return text if not text or text.endswith("\n") else text + "\n"
