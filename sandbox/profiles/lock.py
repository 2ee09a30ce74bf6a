"""sbx.lock: each profile's image pinned to a digest, and its setup layer's key.

Like Cargo.lock and package-lock.json, the lock sits next to the project's sbx.toml,
is written by a command (`sbx lock`) and read by every run: `sbx run` uses the
digest when the lock has one, warns when the profile and the lock disagree, and
`--locked` makes that an error (cargo's `--locked`). It is TOML, written by
tomlwrite (tomllib only reads):

    # sbx.lock: written by `sbx lock`; commit it with sbx.toml.
    version = 1

    [profiles.python]
    image = "docker.io/library/python:3.12-bookworm"
    digest = "sha256:..."
    setup = "sha256:..."            # only when the profile has setup steps

    [profiles.python.inputs]
    "requirements.txt" = "sha256:..."

A bootstrapped image has `bootstrap = "sha256:..."` (model.bootstrap_key) in place
of image and digest: what it is built from is its identity.

Digests come from an injected `resolve_digest(reference) -> digest` callable, so
this module never touches the registry or the image store; the CLI (sbx lock)
passes one that asks the local store and then the registry.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from sandbox.profiles.errors import ProfileError
from sandbox.profiles.model import Profile, bootstrap_key, hash_inputs, resolve_inputs, setup_key

LOCK_FILE = "sbx.lock"
LOCK_VERSION = 1
ENTRY_KEYS = ("image", "digest", "bootstrap", "setup", "inputs")

ResolveDigest = Callable[[str], str]


def lock_path(project_dir: str) -> str:
    """The project's lock file: sbx.lock beside sbx.toml."""
    return os.path.join(project_dir, LOCK_FILE)


class Lock:
    """The entries of one sbx.lock, by profile name."""

    __slots__ = ("entries", "path")

    def __init__(self, entries: dict[str, dict[str, Any]] | None = None,
                 path: str | None = None) -> None:
        self.entries = entries or {}
        self.path = path

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Lock) and self.entries == other.entries

    def __repr__(self) -> str:
        return f"Lock({self.entries!r})"

    def get(self, name: str) -> dict[str, Any] | None:
        return self.entries.get(name)

    def to_toml(self) -> str:
        from sandbox.profiles.tomlwrite import dumps

        data: dict[str, Any] = {"version": LOCK_VERSION}
        if self.entries:
            data["profiles"] = {n: self.entries[n] for n in sorted(self.entries)}
        return dumps(data, comment="sbx.lock: written by `sbx lock`; commit it with sbx.toml.\n"
                     "Each profile's image digest and setup layer key (docs/profiles.md).")

    def write(self, path: str | None = None) -> str:
        """Write the lock atomically (a temporary file renamed over it)."""
        path = path or self.path
        if path is None:
            raise ValueError("no path to write the lock to")
        tmp = f"{path}.tmp-{os.getpid()}"
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(self.to_toml())
            os.replace(tmp, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise ProfileError(f"can't write {path}: {exc.strerror}") from None
        self.path = path
        return path


def parse_lock(text: str, display: str = LOCK_FILE) -> Lock:
    """A lock from its text; syntax and shape errors name the file (and line)."""
    from sandbox.profiles.load import parse_toml

    data = parse_toml(text, display)
    version = data.get("version")
    if version != LOCK_VERSION:
        raise ProfileError(f"{display}: lock version {version!r} is not {LOCK_VERSION}",
                           hint="run `sbx lock` to write it again")
    profiles = data.get("profiles", {})
    problems = []
    if not isinstance(profiles, dict):
        raise ProfileError(f"{display}: profiles: expected a table")
    entries: dict[str, dict[str, Any]] = {}
    for name, entry in profiles.items():
        if not isinstance(entry, dict):
            problems.append(f"{display}: profiles.{name}: expected a table")
            continue
        for k in entry:
            if k not in ENTRY_KEYS:
                problems.append(f"{display}: profiles.{name}.{k}: unknown key")
        for k in ("image", "digest", "bootstrap", "setup"):
            if k in entry and not isinstance(entry[k], str):
                problems.append(f"{display}: profiles.{name}.{k}: expected a string")
        if "inputs" in entry and not (isinstance(entry["inputs"], dict) and all(
                isinstance(v, str) for v in entry["inputs"].values())):
            problems.append(f"{display}: profiles.{name}.inputs: expected a table of hashes")
        entries[name] = entry
    if problems:
        raise ProfileError(problems, hint="run `sbx lock` to write it again")
    return Lock(entries)


def read_lock(path: str) -> Lock | None:
    """The lock at `path`, or None when there is none."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(f"can't read {path}: {exc}") from None
    lock = parse_lock(text, path)
    lock.path = path
    return lock


# --- entries ---------------------------------------------------------------------------


def profile_setup_key(profile: Profile, base: str,
                      input_hashes: Iterable[tuple[str, str]]) -> str:
    """setup_key for this profile: its steps, and its env as written (not expanded,
    so that the key is the same on every machine; a host value that must key the
    cache belongs in an input file)."""
    env = [f"{k}={v}" for k, v in sorted(profile.data.get("env", {}).items())]
    return setup_key(base, profile.setup, input_hashes, env)


def base_of(profile: Profile, digest: str | None) -> str:
    """What the setup layer is built on: the image digest, or the bootstrap key."""
    boot = profile.bootstrap
    if boot is not None:
        return bootstrap_key(boot)
    if digest is None:
        raise ValueError(f"profile {profile.name}: no digest for {profile.image}")
    return digest


def image_digest(reference: str) -> str | None:
    """The digest a reference pins (NAME@sha256:...), if any."""
    _, at, digest = reference.partition("@")
    return digest if at else None


def make_entry(profile: Profile, project_dir: str, resolve_digest: ResolveDigest
               ) -> dict[str, Any]:
    """The lock entry for one profile; resolve_digest is asked only for an image
    given by tag (a digest in the profile is its own pin)."""
    entry: dict[str, Any] = {}
    digest = None
    if profile.bootstrap is not None:
        entry["bootstrap"] = bootstrap_key(profile.bootstrap)
    else:
        image = str(profile.image)
        digest = image_digest(image) or resolve_digest(image)
        entry["image"] = image
        entry["digest"] = digest
    if profile.setup:
        files = resolve_inputs(project_dir, profile.data.get("inputs", []))
        hashes = hash_inputs(project_dir, files)
        entry["setup"] = profile_setup_key(profile, base_of(profile, digest), hashes)
        if hashes:
            entry["inputs"] = dict(hashes)
    return entry


def lock_profiles(profiles: Iterable[Profile], project_dir: str,
                  resolve_digest: ResolveDigest, lock: Lock | None = None) -> Lock:
    """`lock` (or a new one) with an entry made afresh for each profile; entries of
    other profiles are kept, as `cargo update -p NAME` keeps the rest."""
    out = Lock(dict(lock.entries) if lock else {}, lock.path if lock else None)
    for profile in profiles:
        out.entries[profile.name] = make_entry(profile, project_dir, resolve_digest)
    return out


def locked_reference(profile: Profile, lock: Lock | None) -> str | None:
    """The image reference a run should pull: NAME@DIGEST from the lock when the lock
    agrees with the profile's image, else None (use the profile's image)."""
    if lock is None or profile.bootstrap is not None:
        return None
    entry = lock.get(profile.name)
    if not entry or entry.get("image") != profile.image or "digest" not in entry:
        return None
    image = str(profile.image)
    if image_digest(image):
        return image
    # docker ignores a tag next to a digest; keeping it shows what was locked.
    return f"{image}@{entry['digest']}"


def check_lock(profile: Profile, lock: Lock | None, project_dir: str | None = None
               ) -> list[str]:
    """Where the profile and the lock disagree, one message each; [] when they agree.
    With project_dir, the setup key is checked too (inputs hashed from there)."""
    name = profile.name
    if lock is None:
        return [f"profile {name}: there is no sbx.lock (run `sbx lock`)"]
    entry = lock.get(name)
    if entry is None:
        return [f"profile {name}: not in sbx.lock (run `sbx lock {name}`)"]
    out: list[str] = []
    digest = entry.get("digest")
    if profile.bootstrap is not None:
        if "bootstrap" not in entry:
            out.append(f"profile {name}: bootstraps its image, but sbx.lock has image "
                       f"{entry.get('image')!r}")
        elif entry["bootstrap"] != bootstrap_key(profile.bootstrap):
            out.append(f"profile {name}: the bootstrap (suite, packages, mirror) changed "
                       "since sbx.lock was written")
    else:
        image = str(profile.image)
        if entry.get("image") != image:
            was = entry.get("image") or "a bootstrapped image"
            out.append(f"profile {name}: image is {image!r}, sbx.lock has {was!r}")
        elif image_digest(image) and digest != image_digest(image):
            out.append(f"profile {name}: image pins {image_digest(image)}, sbx.lock has "
                       f"{digest}")
        elif not digest:
            out.append(f"profile {name}: sbx.lock has no digest for {image}")
    if not profile.setup:
        if "setup" in entry:
            out.append(f"profile {name}: sbx.lock has a setup layer, the profile has no "
                       "setup steps")
        return out
    if "setup" not in entry:
        out.append(f"profile {name}: has setup steps that sbx.lock does not know")
        return out
    if project_dir is None or out:
        return out
    files = resolve_inputs(project_dir, profile.data.get("inputs", []))
    hashes = hash_inputs(project_dir, files)
    key = profile_setup_key(profile, base_of(profile, digest or ""), hashes)
    if key != entry["setup"]:
        locked: Mapping[str, str] = entry.get("inputs", {})
        now = dict(hashes)
        changed = sorted(p for p in set(locked) | set(now) if locked.get(p) != now.get(p))
        if changed:
            out.append(f"profile {name}: inputs changed since sbx.lock: {', '.join(changed)}")
        else:
            out.append(f"profile {name}: setup steps or env changed since sbx.lock")
    return out
