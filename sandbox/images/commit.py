"""Commit: a new image from a base image plus one layer (a container's changes).

`commit_image` takes the base image's record, a layer blob already staged in the
store (storage/layertar.py wrote it from the container's upper directory) and the
container's settings, and writes what `podman commit` writes:

- the config: the base's, with the new diff id appended to rootfs.diff_ids, a
  history entry (created_by: the container's command, comment: --message), the
  container's Cmd and Entrypoint (as docker and podman commit keep them), then the
  `--change` instructions applied in order;
- an OCI manifest listing the base's layer descriptors and the new one (an
  uncompressed tar, as podman keeps it locally; `push` sends it as it is);
- the unpacked layer, through the same Unpacker a pull uses, so the new layer has
  the store's on-disk form and is shared like any other.

`--change` takes the Dockerfile instructions podman's commit takes (CMD, ENTRYPOINT,
ENV, EXPOSE, LABEL, STOPSIGNAL, USER, VOLUME, WORKDIR; buildah's
`imagebuildah.ChangeInstructions`), in the shell or JSON form.

Names without a registry become `localhost/NAME:latest`, as podman names what it
commits and builds (a docker.io/library name would suggest the image came from
there). This module never touches namespaces: the caller's unpacker does.
"""

from __future__ import annotations

import copy
import json
import shlex
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sandbox.errors import SbxError, UsageError
from sandbox.registry import media

if TYPE_CHECKING:
    from sandbox.images.pull import Unpacker
    from sandbox.images.store import ImageRecord, Store

CHANGE_KEYS = ("CMD", "ENTRYPOINT", "ENV", "EXPOSE", "LABEL", "STOPSIGNAL", "USER",
               "VOLUME", "WORKDIR")


class CommitError(SbxError):
    """A commit was refused or failed."""


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def commit_name(text: str) -> str:
    """The stored name for `sbx commit C NAME`: localhost/ for a name without a
    registry (podman's rule), then normalized as the store keeps names."""
    from sandbox.images.pull import store_name
    from sandbox.registry.reference import parse_reference

    first, slash, _rest = text.partition("/")
    has_registry = bool(slash) and ("." in first or ":" in first or first == "localhost")
    ref = parse_reference(text if has_registry else f"localhost/{text}")
    if ref.digest:
        raise UsageError(f"can't commit to a digest: {text}",
                         hint="a digest names content; give NAME or NAME:TAG")
    return store_name(ref)


def _json_or_shell(value: str) -> list[str]:
    """A Dockerfile instruction's exec form (a JSON array) or shell form."""
    text = value.strip()
    if text.startswith("["):
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        if isinstance(parsed, list) and all(isinstance(x, str) for x in parsed):
            return parsed
    return ["/bin/sh", "-c", text]


def _pairs(value: str, what: str) -> list[tuple[str, str]]:
    """KEY=VALUE pairs (shell-quoted), or the old `KEY VALUE` form."""
    try:
        words = shlex.split(value)
    except ValueError as exc:
        raise UsageError(f"--change {what} {value}: {exc}") from None
    if words and "=" not in words[0]:
        return [(words[0], value.strip()[len(words[0]):].strip())]
    out = []
    for word in words:
        key, eq, val = word.partition("=")
        if not key or not eq:
            raise UsageError(f"--change {what} {value}: {word!r} is not KEY=VALUE")
        out.append((key, val))
    return out


def apply_change(config: dict[str, Any], change: str) -> None:
    """Apply one `--change` instruction to a config's `config` object."""
    key, _, value = change.strip().partition(" ")
    key = key.upper()
    if key not in CHANGE_KEYS:
        raise UsageError(f"invalid --change {change!r}: {key or '(empty)'} is not an "
                         "instruction commit can apply",
                         hint="use one of " + ", ".join(CHANGE_KEYS))
    value = value.strip()
    if key == "CMD":
        config["Cmd"] = _json_or_shell(value)
    elif key == "ENTRYPOINT":
        config["Entrypoint"] = _json_or_shell(value)
    elif key == "ENV":
        env = [e for e in config.get("Env") or []]
        for k, v in _pairs(value, key):
            env = [e for e in env if e.partition("=")[0] != k] + [f"{k}={v}"]
        config["Env"] = env
    elif key == "LABEL":
        labels = dict(config.get("Labels") or {})
        labels.update(_pairs(value, key))
        config["Labels"] = labels
    elif key in ("EXPOSE", "VOLUME"):
        field = "ExposedPorts" if key == "EXPOSE" else "Volumes"
        items = _json_or_shell(value) if value.startswith("[") else value.split()
        if items[:2] == ["/bin/sh", "-c"]:
            items = value.split()
        current = dict(config.get(field) or {})
        for item in items:
            if key == "EXPOSE" and "/" not in item:
                item += "/tcp"
            current[item] = {}
        config[field] = current
    elif key == "STOPSIGNAL":
        config["StopSignal"] = value
    elif key == "USER":
        config["User"] = value
    elif key == "WORKDIR":
        config["WorkingDir"] = value


def _base_manifest(store: Store, base: ImageRecord) -> media.Manifest:
    manifest = media.parse_manifest(store.read_blob(base.manifest_digest))
    if not isinstance(manifest, media.Manifest):
        raise CommitError(f"image {base.short_id}: its manifest is an index")
    return manifest


def _descriptor(d: media.Descriptor) -> dict[str, Any]:
    out: dict[str, Any] = {"mediaType": d.media_type, "digest": d.digest, "size": d.size}
    if d.annotations:
        out["annotations"] = dict(d.annotations)
    return out


def commit_image(store: Store, base: ImageRecord, layer_digest: str, layer_size: int,
                 unpacker: Unpacker, *, names: Sequence[str] = (),
                 cmd: Sequence[str] | None = None, entrypoint: Sequence[str] | None = None,
                 created_by: str = "", message: str = "", author: str = "",
                 changes: Sequence[str] = (), labels: Mapping[str, str] | None = None,
                 ) -> ImageRecord:
    """Record base + the staged layer `layer_digest` (an uncompressed tar, so its
    digest is its diff id) as a new image; see the module docstring."""
    doc = json.loads(store.read_blob(base.id))
    config = copy.deepcopy(doc.get("config") or {})
    if cmd is not None:
        config["Cmd"] = list(cmd)
    if entrypoint is not None:
        config["Entrypoint"] = list(entrypoint) or None
    if labels:
        config["Labels"] = {**(config.get("Labels") or {}), **labels}
    for change in changes:
        apply_change(config, change)
    created = now_rfc3339()
    doc["config"] = {k: v for k, v in config.items() if v is not None}
    doc["created"] = created
    if author:
        doc["author"] = author
    rootfs = doc.setdefault("rootfs", {"type": "layers", "diff_ids": []})
    rootfs["diff_ids"] = [*rootfs.get("diff_ids", []), layer_digest]
    entry = {"created": created, "created_by": created_by}
    if message:
        entry["comment"] = message
    if author:
        entry["author"] = author
    doc["history"] = [*doc.get("history", []), entry]
    doc.pop("container", None)
    doc.pop("container_config", None)

    manifest = _base_manifest(store, base)
    layers = [_descriptor(d) for d in manifest.layers]
    layers.append({"mediaType": media.OCI_LAYER_TAR, "digest": layer_digest,
                   "size": layer_size})
    return store_image(store, doc, layers, unpacker, names)


def store_image(store: Store, config_doc: dict[str, Any], layers: list[dict[str, Any]],
                unpacker: Unpacker, names: Sequence[str]) -> ImageRecord:
    """Write config and OCI manifest for layer blobs already in the store (`layers`:
    descriptors, base first, paired in order with the config's diff ids), unpack the
    layers not unpacked yet, and add the image under `names`."""
    from sandbox.images.pull import name_holders, release_untagged, unpack_layers

    config_bytes = json.dumps(config_doc, separators=(",", ":")).encode()
    diff_ids = config_doc["rootfs"]["diff_ids"]
    with store.protect():
        config_digest = store.put_blob_bytes(config_bytes)
        manifest_doc = {
            "schemaVersion": 2,
            "mediaType": media.OCI_MANIFEST,
            "config": {"mediaType": media.OCI_CONFIG, "digest": config_digest,
                       "size": len(config_bytes)},
            "layers": layers,
        }
        manifest_digest = store.put_blob_bytes(json.dumps(manifest_doc, indent=2).encode())
        pairs = [(d["digest"], diff) for d, diff in zip(layers, diff_ids, strict=True)]
        chains, _fresh = unpack_layers(store, pairs, unpacker)
        holders = name_holders(store, names) - {config_digest}
        record = store.add_image(config_digest=config_digest,
                                 manifest_digest=manifest_digest, chain_ids=chains,
                                 names=list(names))
        release_untagged(store, holders)
    return record
