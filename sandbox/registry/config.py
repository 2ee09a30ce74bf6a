"""Per-registry settings from podman's registries.conf: which registries are insecure.

sbx reads the files podman reads (containers-registries.conf(5)), first match wins:
$XDG_CONFIG_HOME/containers/registries.conf (default ~/.config/...), then
/etc/containers/registries.conf. Both formats are understood:

    # version 2
    [[registry]]
    location = "registry.lan:5000"
    insecure = true

    # version 1
    [registries.insecure]
    registries = ["registry.lan:5000"]

`insecure` means what it means to podman: TLS without certificate verification,
and plain HTTP allowed. A `--tls-verify` given on the command line still wins.
"""

from __future__ import annotations

import os
import tomllib
from typing import Any

from sandbox.registry.errors import RegistryError

_SYSTEM = "/etc/containers/registries.conf"


def config_files() -> list[str]:
    home = os.environ.get("HOME") or os.path.expanduser("~")
    user = os.path.join(os.environ.get("XDG_CONFIG_HOME") or os.path.join(home, ".config"),
                        "containers", "registries.conf")
    return [user, _SYSTEM]


def _load(path: str) -> dict[str, Any] | None:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        return None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise RegistryError(f"can't read {path}: {exc}",
                            hint="fix the file's TOML (containers-registries.conf(5))") from None


def _matches(pattern: str, registry: str) -> bool:
    """A location or prefix matches the registry itself or a namespace under it;
    `*.example.com` matches subdomains, as containers/image does."""
    pattern = pattern.rstrip("/")
    if pattern.startswith("*."):
        return registry.endswith(pattern[1:])
    return registry == pattern or registry.startswith(pattern + "/")


def insecure(registry: str, files: list[str] | None = None) -> bool:
    """Whether registries.conf marks `registry` (host[:port]) insecure."""
    for path in files if files is not None else config_files():
        doc = _load(path)
        if doc is None:
            continue
        # The first file found is the configuration (a user file replaces the system
        # one, as in podman), so the answer comes from it alone.
        for entry in doc.get("registry", []) or []:
            if not isinstance(entry, dict):
                continue
            pattern = entry.get("prefix") or entry.get("location") or ""
            if pattern and _matches(str(pattern), registry):
                return bool(entry.get("insecure", False))
        v1 = doc.get("registries", {}).get("insecure", {}).get("registries", [])
        return any(_matches(str(p), registry) for p in v1 or [])
    return False
