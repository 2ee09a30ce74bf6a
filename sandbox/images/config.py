"""The image configuration: what an image says about how to run it.

Owns the meaning of an image's config blob, the JSON document whose digest is the
image id: the OCI image-spec's config.md ("application/vnd.oci.image.config.v1+json")
and Docker's image JSON ("application/vnd.docker.container.image.v1+json", a superset
with `container_config`, `docker_version` and friends, which are kept in `raw` but not
interpreted). Parsing is pure (bytes in, `ImageConfig` out); `load_config` is the one
helper that reads the blob from the store.

What `sbx run` takes from here: Entrypoint, Cmd, Env, WorkingDir, User, StopSignal,
Volumes, ExposedPorts, Labels, and the os/architecture/variant the layers are for.
`rootfs.diff_ids` names the layers' uncompressed digests, from which the store's
chain ids follow (config.md, "Layer ChainID").

Must not import the registry's network code or the runtime.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sandbox.errors import SbxError
from sandbox.registry.digest import validate_digest
from sandbox.registry.errors import InvalidDigestError

if TYPE_CHECKING:
    from sandbox.images.store import ImageRecord, Store


class ImageConfigError(SbxError):
    """A config blob that is not a usable image configuration."""

    def __init__(self, problem: str) -> None:
        super().__init__(
            f"malformed image configuration: {problem}",
            hint="the image is broken or not a container image; rebuild or re-push it",
        )


@dataclass(frozen=True)
class HistoryEntry:
    """One step of how the image was built (config.md, "history")."""

    created: str | None = None
    created_by: str | None = None
    author: str | None = None
    comment: str | None = None
    empty_layer: bool = False


@dataclass(frozen=True)
class ImageConfig:
    """An image's configuration, parsed.

    `entrypoint` and `cmd` are None when the image does not set them, which is not
    the same as an empty list: docker and podman treat an explicit `[]` Entrypoint
    as "reset" when building, and the run code needs to tell them apart.
    """

    architecture: str
    os: str
    variant: str = ""
    created: str | None = None
    author: str | None = None
    user: str = ""
    env: tuple[str, ...] = ()
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    working_dir: str = ""
    stop_signal: str | None = None
    volumes: tuple[str, ...] = ()
    exposed_ports: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    diff_ids: tuple[str, ...] = ()
    history: tuple[HistoryEntry, ...] = ()
    # The whole document, for `image inspect` and for fields sbx does not model.
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def platform(self) -> str:
        """os/architecture[/variant], as --platform spells it."""
        base = f"{self.os}/{self.architecture}"
        return f"{base}/{self.variant}" if self.variant else base

    @property
    def run_config(self) -> Mapping[str, Any]:
        """The `config` object as the image has it (podman's inspect `Config`)."""
        value = self.raw.get("config")
        return value if isinstance(value, dict) else {}

    def env_dict(self) -> dict[str, str]:
        """Env as a mapping; a later KEY wins, as execve's last duplicate does for
        getenv(3) in most libcs and as docker merges them."""
        out: dict[str, str] = {}
        for item in self.env:
            key, _, value = item.partition("=")
            out[key] = value
        return out

    def created_at(self) -> datetime | None:
        return parse_time(self.created)


def parse_time(value: str | None) -> datetime | None:
    """An RFC 3339 time as images carry it (Go writes nanoseconds and "Z"), or None.
    Python 3.11's fromisoformat takes "Z" but at most 6 fractional digits."""
    if not value:
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    date, dot, rest = text.partition(".")
    if dot:
        digits = ""
        i = 0
        while i < len(rest) and rest[i].isdigit():
            digits += rest[i]
            i += 1
        text = f"{date}.{(digits + '000000')[:6]}{rest[i:]}"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _str(doc: Mapping[str, Any], key: str, where: str) -> str:
    value = doc.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ImageConfigError(f"{where}{key} is not a string")
    return value


def _opt_str(doc: Mapping[str, Any], key: str, where: str) -> str | None:
    return _str(doc, key, where) or None


def _str_list(doc: Mapping[str, Any], key: str, where: str) -> tuple[str, ...] | None:
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ImageConfigError(f"{where}{key} is not a list of strings")
    return tuple(value)


def _set_keys(doc: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    # Volumes and ExposedPorts are JSON objects used as sets: {"/data": {}}.
    value = doc.get(key)
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise ImageConfigError(f"{where}{key} is not an object")
    return tuple(sorted(str(k) for k in value))


def _labels(doc: Mapping[str, Any], where: str) -> dict[str, str]:
    value = doc.get("Labels")
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ImageConfigError(f"{where}Labels must map strings to strings")
    return dict(value)


def _diff_ids(doc: Mapping[str, Any]) -> tuple[str, ...]:
    rootfs = doc.get("rootfs")
    if not isinstance(rootfs, dict):
        raise ImageConfigError("rootfs is missing or not an object")
    if rootfs.get("type") != "layers":
        raise ImageConfigError(f"rootfs.type is {rootfs.get('type')!r}, not 'layers'")
    ids = rootfs.get("diff_ids")
    if ids is None:
        return ()
    if not isinstance(ids, list):
        raise ImageConfigError("rootfs.diff_ids is not a list")
    for i, d in enumerate(ids):
        try:
            validate_digest(d)
        except InvalidDigestError as err:
            raise ImageConfigError(f"rootfs.diff_ids[{i}]: {err.message}") from None
    return tuple(ids)


def _history(doc: Mapping[str, Any]) -> tuple[HistoryEntry, ...]:
    value = doc.get("history")
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ImageConfigError("history is not a list")
    out = []
    for i, h in enumerate(value):
        if not isinstance(h, dict):
            raise ImageConfigError(f"history[{i}] is not an object")
        where = f"history[{i}]."
        out.append(
            HistoryEntry(
                created=_opt_str(h, "created", where),
                created_by=_opt_str(h, "created_by", where),
                author=_opt_str(h, "author", where),
                comment=_opt_str(h, "comment", where),
                empty_layer=bool(h.get("empty_layer", False)),
            )
        )
    return tuple(out)


def parse_config(data: bytes) -> ImageConfig:
    """Parse a config blob. Raises ImageConfigError naming the bad field."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as err:
        raise ImageConfigError(f"not JSON ({err})") from None
    if not isinstance(doc, dict):
        raise ImageConfigError("not a JSON object")
    run = doc.get("config")
    if run is None:
        run = {}
    if not isinstance(run, dict):
        raise ImageConfigError("config is not an object")
    where = "config."
    return ImageConfig(
        architecture=_str(doc, "architecture", ""),
        os=_str(doc, "os", ""),
        variant=_str(doc, "variant", ""),
        created=_opt_str(doc, "created", ""),
        author=_opt_str(doc, "author", ""),
        user=_str(run, "User", where),
        env=_str_list(run, "Env", where) or (),
        entrypoint=_str_list(run, "Entrypoint", where),
        cmd=_str_list(run, "Cmd", where),
        working_dir=_str(run, "WorkingDir", where),
        stop_signal=_opt_str(run, "StopSignal", where),
        volumes=_set_keys(run, "Volumes", where),
        exposed_ports=_set_keys(run, "ExposedPorts", where),
        labels=_labels(run, where),
        diff_ids=_diff_ids(doc),
        history=_history(doc),
        raw=doc,
    )


def load_config(store: Store, image: ImageRecord | str) -> ImageConfig:
    """The configuration of an image in the store (a record, or its id)."""
    image_id = image if isinstance(image, str) else image.id
    return parse_config(store.read_blob(image_id))


def check_layers(config: ImageConfig, layer_count: int, what: str = "image") -> None:
    """A manifest and its config must agree on the number of layers (image-spec
    manifest.md: the config's diff_ids are the manifest's layers, uncompressed)."""
    if len(config.diff_ids) != layer_count:
        raise ImageConfigError(
            f"{what} has {layer_count} layers but its config lists "
            f"{len(config.diff_ids)} diff_ids"
        )


def history_for_inspect(entries: Sequence[HistoryEntry]) -> list[dict[str, Any]]:
    """History as podman's inspect prints it (omitempty field names of config.md)."""
    out = []
    for h in entries:
        item: dict[str, Any] = {}
        if h.created:
            item["created"] = h.created
        if h.created_by:
            item["created_by"] = h.created_by
        if h.author:
            item["author"] = h.author
        if h.comment:
            item["comment"] = h.comment
        if h.empty_layer:
            item["empty_layer"] = True
        out.append(item)
    return out


__all__ = [
    "HistoryEntry",
    "ImageConfig",
    "ImageConfigError",
    "check_layers",
    "load_config",
    "parse_config",
    "parse_time",
]
