"""Registry credentials: where they are read from and how `sbx login` stores them.

Owns the credential files sbx shares with podman, skopeo and docker, read in
containers/image's order (pkg/docker/config/config.go, getAuthFilePaths), first
file with a match wins:

1. $REGISTRY_AUTH_FILE, when set (podman's override);
2. $XDG_RUNTIME_DIR/containers/auth.json;
3. $XDG_CONFIG_HOME/containers/auth.json (default ~/.config/containers/auth.json);
4. ~/.docker/config.json.

Entries are `"auths": {KEY: {"auth": base64("user:password")}}`. KEY may be a
registry ("quay.io", "localhost:5000"), a registry with a namespace
("quay.io/team", most specific first, as podman matches them), or docker's legacy
URL form ("https://index.docker.io/v1/"). Credential helpers (credsStore,
credHelpers) and identity tokens are not supported: a lookup that finds only
those raises an error saying so, rather than silently going anonymous.

Passwords never appear in reprs, messages or logs.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandbox.registry.errors import CredentialsError
from sandbox.registry.reference import DOCKER_HUB, normalize_registry


@dataclass(frozen=True)
class Credentials:
    """A username and password (or token) for one registry."""

    username: str
    password: str = field(repr=False)
    # The file the credentials came from, for messages.
    source: Path | None = field(default=None, compare=False)


def _home() -> Path:
    return Path(os.environ.get("HOME") or os.path.expanduser("~"))


def _config_home() -> Path:
    return Path(os.environ.get("XDG_CONFIG_HOME") or _home() / ".config")


def auth_file() -> Path:
    """The auth.json that `sbx login` writes, as podman chooses it:
    $REGISTRY_AUTH_FILE, else $XDG_RUNTIME_DIR/containers/auth.json when that
    directory exists, else $XDG_CONFIG_HOME/containers/auth.json."""
    override = os.environ.get("REGISTRY_AUTH_FILE")
    if override:
        return Path(override)
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return Path(runtime) / "containers" / "auth.json"
    return _config_home() / "containers" / "auth.json"


def auth_files() -> list[Path]:
    """Every file credentials are read from, in lookup order."""
    paths: list[Path] = []
    override = os.environ.get("REGISTRY_AUTH_FILE")
    if override:
        paths.append(Path(override))
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        paths.append(Path(runtime) / "containers" / "auth.json")
    paths.append(_config_home() / "containers" / "auth.json")
    paths.append(_home() / ".docker" / "config.json")
    return list(dict.fromkeys(paths))


def normalize_key(key: str) -> str:
    """The lookup form of an auths key, as containers/image normalizeAuthFileKey:
    a URL loses its scheme and path (docker's legacy "https://index.docker.io/v1/"
    form), and every name of Docker Hub becomes docker.io."""
    stripped = key.removeprefix("http://").removeprefix("https://")
    if stripped != key:
        stripped = stripped.split("/", 1)[0]
    host, slash, rest = stripped.partition("/")
    return normalize_registry(host) + slash + rest


def candidate_keys(registry: str, repository: str | None = None) -> list[str]:
    """Keys to try for an image, most specific first:
    reg/a/b/c, reg/a/b, reg/a, reg (containers/image authKeysForKey)."""
    registry = normalize_registry(registry)
    keys = []
    if repository:
        parts = repository.split("/")
        for n in range(len(parts), 0, -1):
            keys.append(f"{registry}/{'/'.join(parts[:n])}")
    keys.append(registry)
    return keys


def _read(path: Path) -> dict[str, Any] | None:
    try:
        text = path.read_text()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as err:
        raise CredentialsError(f"cannot read {path}: {err.strerror}") from None
    if not text.strip():
        return {}
    try:
        doc = json.loads(text)
    except ValueError as err:
        raise CredentialsError(
            f"cannot parse {path}: {err}", hint="fix or remove the file, then sbx login again"
        ) from None
    if not isinstance(doc, dict):
        raise CredentialsError(f"cannot parse {path}: not a JSON object")
    return doc


def _decode(path: Path, key: str, entry: dict[str, Any]) -> Credentials | None:
    auth = entry.get("auth")
    if not auth:
        return None
    try:
        decoded = base64.b64decode(auth, validate=True).decode()
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise CredentialsError(
            f"malformed credentials for {key} in {path}: 'auth' is not base64 of user:password",
            hint=f"sbx login {key}",
        ) from None
    user, sep, password = decoded.partition(":")
    if not sep or not user:
        raise CredentialsError(
            f"malformed credentials for {key} in {path}: 'auth' is not base64 of user:password",
            hint=f"sbx login {key}",
        )
    return Credentials(user, password, source=path)


def _helper_for(doc: dict[str, Any], registry: str, listed: bool) -> str | None:
    """The credential helper configured for `registry`, if any: its own entry in
    credHelpers, or the global credsStore when "auths" lists the registry."""
    helpers = doc.get("credHelpers")
    if isinstance(helpers, dict):
        for key, helper in helpers.items():
            if isinstance(key, str) and normalize_key(key) == registry:
                return str(helper)
    store = doc.get("credsStore")
    return str(store) if store and listed else None


def lookup(registry: str, repository: str | None = None) -> Credentials | None:
    """Credentials for an image on `registry` (and `repository`, for
    namespace-scoped entries), or None to go anonymous.

    Raises CredentialsError when the only configuration for the registry is a
    credential helper or an identity token, which sbx does not support."""
    registry = normalize_registry(registry)
    wanted = candidate_keys(registry, repository)
    unsupported: tuple[Path, str] | None = None
    for path in auth_files():
        doc = _read(path)
        if not doc:
            continue
        auths = doc.get("auths")
        if auths is None:
            auths = {}
        if not isinstance(auths, dict):
            raise CredentialsError(f"cannot parse {path}: 'auths' is not an object")
        by_key: dict[str, tuple[str, dict[str, Any]]] = {}
        for key, entry in auths.items():
            if isinstance(key, str) and isinstance(entry, dict):
                by_key.setdefault(normalize_key(key), (key, entry))
        listed = False
        for key in wanted:
            if key in by_key:
                listed = True
                original, entry = by_key[key]
                creds = _decode(path, original, entry)
                if creds is not None:
                    return creds
                if entry.get("identitytoken") and unsupported is None:
                    unsupported = (path, "an identity token")
        if unsupported is None:
            # docker with a credsStore lists each logged-in registry with an empty
            # entry in "auths"; a credsStore alone says nothing about this registry.
            helper = _helper_for(doc, registry, listed)
            if helper:
                unsupported = (path, f"the credential helper docker-credential-{helper}")
    if unsupported is not None:
        path, what = unsupported
        raise CredentialsError(
            f"credentials for {registry} are kept in {what} ({path}), which sbx does not support",
            hint=f"run `sbx login {registry}` to store them in {auth_file()}",
        )
    return None


def _login_key(registry: str) -> str:
    key = normalize_key(registry)
    if not key or any(c.isspace() for c in key):
        raise CredentialsError(f"invalid registry name {registry!r}")
    return key


def _write_atomic(path: Path, doc: dict[str, Any]) -> None:
    """Replace `path` with `doc`: a temporary file in the same directory, created
    0600 (never briefly world-readable), fsynced, then renamed over the old one,
    so a crash leaves the old file or the new one, never half of either."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    data = (json.dumps(doc, indent="\t") + "\n").encode()
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}-{os.urandom(4).hex()}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except OSError as err:
        raise CredentialsError(f"cannot write {path}: {err.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise CredentialsError(f"cannot write {path}: {err.strerror}") from None
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def save(registry: str, username: str, password: str, path: Path | None = None) -> Path:
    """Store credentials for `registry` (or `registry/namespace`) in auth.json,
    keeping every other entry and field. Returns the file written."""
    if not username or ":" in username:
        raise CredentialsError("a username must be non-empty and must not contain ':'")
    path = path or auth_file()
    doc = _read(path) or {}
    auths = doc.setdefault("auths", {})
    if not isinstance(auths, dict):
        raise CredentialsError(f"cannot update {path}: 'auths' is not an object")
    key = _login_key(registry)
    # One entry per registry: drop aliases of the same key (docker's URL form).
    for other in [k for k in auths if normalize_key(k) == key and k != key]:
        del auths[other]
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    auths[key] = {"auth": token}
    _write_atomic(path, doc)
    return path


def remove(registry: str, path: Path | None = None) -> bool:
    """Forget the credentials for `registry` in auth.json (every alias of its key).
    Returns whether there were any."""
    path = path or auth_file()
    doc = _read(path)
    if not doc or not isinstance(doc.get("auths"), dict):
        return False
    key = _login_key(registry)
    auths = doc["auths"]
    gone = [k for k in auths if normalize_key(k) == key]
    if not gone:
        return False
    for k in gone:
        del auths[k]
    _write_atomic(path, doc)
    return True


def remove_all(path: Path | None = None) -> None:
    """Forget every registry's credentials in auth.json (`logout --all`)."""
    path = path or auth_file()
    doc = _read(path)
    if not doc:
        return
    doc["auths"] = {}
    _write_atomic(path, doc)


__all__ = [
    "DOCKER_HUB",
    "Credentials",
    "auth_file",
    "auth_files",
    "candidate_keys",
    "lookup",
    "normalize_key",
    "remove",
    "remove_all",
    "save",
]
