"""Image archives: `sbx save` writes them, `sbx load` reads them. Two formats:

- "oci-archive": a tar of an OCI image layout (image-spec image-layout.md):
  `oci-layout`, `index.json`, and `blobs/<alg>/<hex>`. The stored manifest, config and
  compressed layers go in byte for byte, so the image keeps its manifest digest and
  its id. Each name is an index entry annotated `org.opencontainers.image.ref.name`
  (and `io.containerd.image.name`, which containerd and nerdctl read) with the full
  name, as podman's `oci-archive:` writes what it was given.
- "docker-archive": what `docker save` writes (docker's image/tarexport, and
  containers/image's docker/internal/tarfile): `manifest.json`, a list of
  `{"Config": "<hex>.json", "RepoTags": [...], "Layers": ["<diffid-hex>.tar", ...]}`,
  the config file, and each layer as an *uncompressed* tar (its sha256 is the
  layer's DiffID, which `docker load` and `podman load` check against the config).
  Layers stored compressed are decompressed on the way out (gzip here, zstd with the
  `zstd` command), through a temporary file since a tar member's size comes first.

Either way the config blob is kept byte for byte, so a saved image loads back with
the same id. Loading a docker-archive synthesizes an OCI manifest (the archive has
none) whose layers are the archive's tars as they are (plain, or gzip/zstd if some
tool compressed them), so its manifest digest is new, as with podman.

Reading is random access on a seekable file (`tarfile` "r:"): archive member names
are only looked up, never used as paths to write to; every blob goes through
`Store.ingest`, which checks its digest and size. Layers are unpacked through the
caller's `Unpacker`, exactly as a pull does (pull.unpack_layers).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import posixpath
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, BinaryIO, Literal

from sandbox.errors import SbxError
from sandbox.images.config import ImageConfig, check_layers, parse_config
from sandbox.images.progress import Progress, Quiet
from sandbox.images.pull import (
    Unpacker,
    name_holders,
    release_untagged,
    split_name,
    store_name,
    unpack_layers,
)
from sandbox.images.store import ImageRecord, Store
from sandbox.registry import media
from sandbox.registry.digest import validate_digest
from sandbox.registry.errors import InvalidDigestError, InvalidReferenceError
from sandbox.registry.reference import parse_reference

ArchiveFormat = Literal["oci-archive", "docker-archive"]
FORMATS: tuple[ArchiveFormat, ...] = ("oci-archive", "docker-archive")

OCI_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'
REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"
_CHUNK = 1 << 20
# Fixed member times make `sbx save` of the same image twice give the same bytes.
_MTIME = 0


class ArchiveError(SbxError):
    """An archive that is not an image archive sbx can read, or can't be written."""


# --- docker-archive's manifest.json --------------------------------------------------


@dataclass(frozen=True)
class DockerArchiveEntry:
    """One image of a docker-archive's manifest.json."""

    config: str
    repo_tags: tuple[str, ...]
    layers: tuple[str, ...]


def write_docker_manifest(entries: Sequence[DockerArchiveEntry]) -> bytes:
    """manifest.json as `docker save` writes it (a JSON list, keys capitalised)."""
    doc = [
        {"Config": e.config, "RepoTags": list(e.repo_tags), "Layers": list(e.layers)}
        for e in entries
    ]
    return json.dumps(doc, separators=(",", ":")).encode()


def read_docker_manifest(data: bytes) -> list[DockerArchiveEntry]:
    """Parse manifest.json. RepoTags may be null (an untagged image, as docker
    writes it); everything else must be there."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as err:
        raise ArchiveError(f"manifest.json is not JSON ({err})") from None
    if not isinstance(doc, list) or not doc:
        raise ArchiveError("manifest.json must be a non-empty list of images")
    out = []
    for i, item in enumerate(doc):
        if not isinstance(item, dict):
            raise ArchiveError(f"manifest.json entry {i} is not an object")
        config = item.get("Config")
        tags = item.get("RepoTags") or []
        layers = item.get("Layers")
        if not isinstance(config, str) or not config:
            raise ArchiveError(f"manifest.json entry {i}: Config missing")
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise ArchiveError(f"manifest.json entry {i}: RepoTags is not a list of strings")
        if not isinstance(layers, list) or not all(isinstance(x, str) for x in layers):
            raise ArchiveError(f"manifest.json entry {i}: Layers is not a list of strings")
        out.append(DockerArchiveEntry(config, tuple(tags), tuple(layers)))
    return out


def familiar_tag(name: str) -> str | None:
    """A stored name as `docker save` lists it in RepoTags (busybox:latest,
    quay.io/a/b:1), or None for a digest name (RepoTags hold tags only)."""
    repo, tag, _digest = split_name(name)
    if tag is None:
        return None
    try:
        return parse_reference(f"{repo}:{tag}").familiar()
    except InvalidReferenceError:
        return None


# --- writing -------------------------------------------------------------------------


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    info.mtime = _MTIME
    tar.addfile(info, io.BytesIO(data))


def _add_file(tar: tarfile.TarFile, name: str, f: IO[bytes], size: int) -> None:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    info.mtime = _MTIME
    tar.addfile(info, f)


def _add_dir(tar: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    info.mtime = _MTIME
    tar.addfile(info)


def _image_manifest(store: Store, image: ImageRecord, digest: str | None
                    ) -> tuple[str, bytes, media.Manifest]:
    data = store.read_blob(digest or image.manifest_digest)
    media_type = media.detect_media_type(data)
    manifest = media.parse_manifest(data, media_type)
    if not isinstance(manifest, media.Manifest):
        raise ArchiveError(f"image {image.short_id}: its stored manifest is an index")
    return media_type, data, manifest


def _blob_member(digest: str) -> str:
    algorithm, _, hexpart = validate_digest(digest).partition(":")
    return f"blobs/{algorithm}/{hexpart}"


def _archive_names(image: ImageRecord, names: Sequence[str] | None) -> list[str]:
    if names is not None:
        return list(names)
    return [n for n in image.names if split_name(n)[1] is not None] or list(image.names)


def save_oci(store: Store, image: ImageRecord, out: BinaryIO,
             progress: Progress | None = None, *, names: Sequence[str] | None = None,
             manifest_digest: str | None = None) -> None:
    """Write `image` to `out` as an oci-archive, with `names` (default: its tags)
    and the manifest `manifest_digest` (default: the image's current one)."""
    progress = progress or Quiet()
    manifest_digest = manifest_digest or image.manifest_digest
    media_type, data, manifest = _image_manifest(store, image, manifest_digest)
    names = _archive_names(image, names)
    entries: list[dict[str, Any]] = []
    for name in names or [None]:  # type: ignore[list-item]
        entry: dict[str, Any] = {
            "mediaType": media_type,
            "digest": manifest_digest,
            "size": len(data),
        }
        if name is not None:
            entry["annotations"] = {REF_NAME: name, CONTAINERD_NAME: name}
        entries.append(entry)
    index = {"schemaVersion": 2, "mediaType": media.OCI_INDEX, "manifests": entries}
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        _add_bytes(tar, "oci-layout", OCI_LAYOUT)
        _add_dir(tar, "blobs/")
        algorithms = sorted({d.partition(":")[0] for d in (
            manifest_digest, manifest.config.digest, *(x.digest for x in manifest.layers))})
        for algorithm in algorithms:
            _add_dir(tar, f"blobs/{algorithm}/")
        seen: set[str] = set()
        for desc in (*manifest.layers, manifest.config):
            if desc.digest in seen:
                continue
            seen.add(desc.digest)
            label = f"Copying {'config' if desc is manifest.config else 'blob'} {desc.digest}"
            progress.start(desc.digest, label, desc.size)
            with store.open_blob(desc.digest) as f:
                _add_file(tar, _blob_member(desc.digest), f, store.blob_size(desc.digest))
            progress.finish(desc.digest)
        _add_bytes(tar, _blob_member(manifest_digest), data)
        _add_bytes(tar, "index.json", json.dumps(index, separators=(",", ":")).encode())
    progress.note("Writing manifest to image destination")


@contextlib.contextmanager
def _uncompressed(store: Store, desc: media.Descriptor) -> Iterator[tuple[IO[bytes], int, str]]:
    """The layer blob as a plain tar: (file, size, its sha256 digest)."""
    compression = media.layer_compression(desc.media_type)
    with store.open_blob(desc.digest) as blob:
        head = blob.read(4)
        blob.seek(0)
        if head.startswith(b"\x1f\x8b"):
            compression = "gzip"
        elif head.startswith(b"\x28\xb5\x2f\xfd"):
            compression = "zstd"
        elif compression:
            compression = ""  # a mislabelled plain tar: take it as it is
        if not compression:
            h = hashlib.sha256()
            while chunk := blob.read(_CHUNK):
                h.update(chunk)
            blob.seek(0)
            yield blob, store.blob_size(desc.digest), f"sha256:{h.hexdigest()}"
            return
        with tempfile.TemporaryFile(prefix="sbx-save-") as tmp:
            if compression == "gzip":
                with gzip.GzipFile(fileobj=blob, mode="rb") as gz:
                    shutil.copyfileobj(gz, tmp, _CHUNK)
            else:
                zstd = shutil.which("zstd")
                if zstd is None:
                    raise ArchiveError(
                        "the zstd command is needed to decompress a zstd layer",
                        hint="install it: apt-get install zstd",
                    )
                # A fresh descriptor at offset 0: `blob` has read ahead into its buffer.
                with store.open_blob(desc.digest) as raw:
                    proc = subprocess.run([zstd, "-d", "-c", "-q"], stdin=raw, stdout=tmp,
                                          stderr=subprocess.PIPE, check=False)
                if proc.returncode != 0:
                    raise ArchiveError(
                        f"zstd could not decompress layer {desc.digest}: "
                        f"{proc.stderr.decode(errors='replace').strip()}"
                    )
            size = tmp.tell()
            tmp.seek(0)
            h = hashlib.sha256()
            while chunk := tmp.read(_CHUNK):
                h.update(chunk)
            tmp.seek(0)
            yield tmp, size, f"sha256:{h.hexdigest()}"


def save_docker(store: Store, image: ImageRecord, out: BinaryIO,
                progress: Progress | None = None, *, names: Sequence[str] | None = None,
                manifest_digest: str | None = None) -> None:
    """Write `image` to `out` as a docker-archive (uncompressed layers), with
    `names` (default: its tags) as RepoTags, its layers as `manifest_digest`
    (default: the image's current manifest) lists them."""
    progress = progress or Quiet()
    _media_type, _data, manifest = _image_manifest(store, image, manifest_digest)
    config_bytes = store.read_blob(manifest.config.digest)
    config = parse_config(config_bytes)
    check_layers(config, len(manifest.layers), f"image {image.short_id}")
    config_name = manifest.config.digest.partition(":")[2] + ".json"
    tags = [t for t in (familiar_tag(n) for n in _archive_names(image, names)) if t]
    layer_names = [diff.partition(":")[2] + ".tar" for diff in config.diff_ids]
    entry = DockerArchiveEntry(config_name, tuple(tags), tuple(layer_names))
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        written: set[str] = set()
        for desc, diff_id, name in zip(manifest.layers, config.diff_ids, layer_names,
                                       strict=True):
            if name in written:
                continue
            written.add(name)
            progress.start(desc.digest, f"Copying blob {desc.digest}", desc.size)
            with _uncompressed(store, desc) as (f, size, digest):
                if digest != diff_id:
                    raise ArchiveError(
                        f"layer {desc.digest} uncompresses to {digest}, but the image "
                        f"config says {diff_id}",
                        hint="the store is corrupted: remove the image and pull it again",
                    )
                _add_file(tar, name, f, size)
            progress.finish(desc.digest)
        _add_bytes(tar, config_name, config_bytes)
        _add_bytes(tar, "manifest.json", write_docker_manifest([entry]))
    progress.note("Writing manifest to image destination")


def save(store: Store, image: ImageRecord, out: BinaryIO, fmt: ArchiveFormat,
         progress: Progress | None = None, *, names: Sequence[str] | None = None,
         manifest_digest: str | None = None) -> None:
    """Write `image` to `out` in `fmt`, named `names` (default: its tags)."""
    if fmt == "oci-archive":
        save_oci(store, image, out, progress, names=names, manifest_digest=manifest_digest)
    elif fmt == "docker-archive":
        save_docker(store, image, out, progress, names=names, manifest_digest=manifest_digest)
    else:
        raise ArchiveError(f"unknown archive format {fmt!r}",
                           hint=f"use one of {', '.join(FORMATS)}")


# --- reading -------------------------------------------------------------------------


@dataclass
class LoadedImage:
    image: ImageRecord
    config: ImageConfig
    names: list[str] = field(default_factory=list)


def _normalize_member(name: str) -> str | None:
    norm = posixpath.normpath(name.lstrip("/"))
    if norm in (".", "") or norm.startswith("../") or norm == "..":
        return None
    return norm.removeprefix("./")


class _Archive:
    """Members of a tar, by normalized name; reads only, never extracts."""

    def __init__(self, f: BinaryIO) -> None:
        try:
            # Closed with the file it reads, which the caller owns.
            self.tar = tarfile.open(fileobj=f, mode="r:")  # noqa: SIM115
            members = self.tar.getmembers()
        except (tarfile.TarError, EOFError, OSError) as err:
            raise ArchiveError(
                f"not a tar archive ({err})",
                hint="sbx load reads oci-archive and docker-archive files (sbx/podman/docker save)",
            ) from None
        self.members: dict[str, tarfile.TarInfo] = {}
        for m in members:
            key = _normalize_member(m.name)
            if key is not None and (m.isfile() or m.issym() or m.islnk()):
                self.members[key] = m

    def has(self, name: str) -> bool:
        return _normalize_member(name) in self.members

    def open(self, name: str) -> tuple[IO[bytes], int]:
        key = _normalize_member(name)
        member = self.members.get(key) if key else None
        if member is None:
            raise ArchiveError(f"the archive has no {name!r}")
        try:
            f = self.tar.extractfile(member)
        except (KeyError, tarfile.TarError) as err:
            raise ArchiveError(f"can't read {name!r} in the archive: {err}") from None
        if f is None:
            raise ArchiveError(f"{name!r} in the archive is not a file")
        size = member.size
        if member.issym() or member.islnk():
            size = len(f.read())
            f.seek(0)
        return f, size

    def read(self, name: str, limit: int = 16 << 20) -> bytes:
        f, size = self.open(name)
        if size > limit:
            raise ArchiveError(f"{name!r} in the archive is larger than {limit} bytes")
        with f:
            return f.read()


def _ingest(store: Store, digest: str, f: IO[bytes], size: int | None) -> None:
    if store.has_blob(digest):
        return
    with store.ingest(digest, size) as w:
        while chunk := f.read(_CHUNK):
            w.write(chunk)


def _names_from(values: Sequence[str]) -> list[str]:
    names = []
    for value in values:
        try:
            ref = parse_reference(value)
        except InvalidReferenceError:
            continue
        name = store_name(ref)
        if name not in names:
            names.append(name)
    return names


def _oci_name(annotations: Mapping[str, str]) -> str | None:
    # containerd's full name first; a ref.name is often only a tag ("latest"), which
    # names nothing without a repository: only a value with a "/" is taken as a name.
    for key in (CONTAINERD_NAME, REF_NAME):
        value = annotations.get(key, "")
        if "/" in value:
            return value
    return None


def _store_image(
    store: Store,
    manifest_digest: str,
    manifest: media.Manifest,
    config_bytes: bytes,
    names: Sequence[str],
    unpacker: Unpacker,
) -> LoadedImage:
    config = parse_config(config_bytes)
    check_layers(config, len(manifest.layers), "the archived image")
    layers = [(d.digest, diff) for d, diff in zip(manifest.layers, config.diff_ids, strict=True)]
    chains, _fresh = unpack_layers(store, layers, unpacker)
    holders = name_holders(store, names) - {manifest.config.digest}
    record = store.add_image(
        config_digest=manifest.config.digest,
        manifest_digest=manifest_digest,
        chain_ids=chains,
        names=list(names),
    )
    release_untagged(store, holders)
    return LoadedImage(record, config, list(names))


def _load_oci(store: Store, archive: _Archive, unpacker: Unpacker,
              progress: Progress) -> list[LoadedImage]:
    try:
        index = media.parse_manifest(archive.read("index.json"), media.OCI_INDEX)
    except SbxError as err:
        raise ArchiveError(f"index.json: {err.message}") from None
    if not isinstance(index, media.Index):
        raise ArchiveError("index.json is not an image index")
    # manifest digest -> names; one image per manifest, however many names it has.
    wanted: dict[str, tuple[media.Descriptor, list[str]]] = {}
    for desc in index.manifests:
        if desc.media_type in media.INDEX_TYPES:
            nested = media.parse_manifest(_read_blob(archive, desc), desc.media_type)
            assert isinstance(nested, media.Index)
            chosen = media.select_manifest(nested, name="the archived index")
            target = chosen
        elif desc.media_type in media.MANIFEST_TYPES:
            target = desc
        else:
            continue
        name = _oci_name(desc.annotations)
        slot = wanted.setdefault(target.digest, (target, []))
        if name:
            slot[1].extend(n for n in _names_from([name]) if n not in slot[1])
    if not wanted:
        raise ArchiveError("index.json lists no image manifest")
    loaded = []
    for desc, names in wanted.values():
        data = _read_blob(archive, desc)
        manifest = media.parse_manifest(data, desc.media_type)
        if not isinstance(manifest, media.Manifest):
            raise ArchiveError(f"{desc.digest} is not an image manifest")
        store.put_blob_bytes(data, desc.digest)
        for blob in (manifest.config, *manifest.layers):
            label = f"Copying {'config' if blob is manifest.config else 'blob'} {blob.digest}"
            progress.start(blob.digest, label, blob.size)
            f, _size = archive.open(_blob_member(blob.digest))
            with f:
                _ingest(store, blob.digest, f, blob.size)
            progress.finish(blob.digest)
        config_bytes = store.read_blob(manifest.config.digest)
        loaded.append(_store_image(store, desc.digest, manifest, config_bytes, names, unpacker))
    return loaded


def _read_blob(archive: _Archive, desc: media.Descriptor) -> bytes:
    data = archive.read(_blob_member(desc.digest), limit=media.MANIFEST_MAX_BYTES)
    algorithm = desc.digest.partition(":")[0]
    if f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}" != desc.digest:
        raise ArchiveError(f"blob {desc.digest} in the archive does not match its digest")
    return data


def _sha256_of(f: IO[bytes]) -> str:
    h = hashlib.sha256()
    while chunk := f.read(_CHUNK):
        h.update(chunk)
    return f"sha256:{h.hexdigest()}"


def _load_docker(store: Store, archive: _Archive, unpacker: Unpacker,
                 progress: Progress) -> list[LoadedImage]:
    entries = read_docker_manifest(archive.read("manifest.json"))
    loaded = []
    for entry in entries:
        config_bytes = archive.read(entry.config)
        config_digest = "sha256:" + hashlib.sha256(config_bytes).hexdigest()
        config = parse_config(config_bytes)
        if len(config.diff_ids) != len(entry.layers):
            raise ArchiveError(
                f"{entry.config}: the config lists {len(config.diff_ids)} layers, "
                f"manifest.json {len(entry.layers)}"
            )
        store.put_blob_bytes(config_bytes, config_digest)
        layers: list[media.Descriptor] = []
        for path, diff_id in zip(entry.layers, config.diff_ids, strict=True):
            f, size = archive.open(path)
            with f:
                head = f.read(4)
                f.seek(0)
                if head.startswith(b"\x1f\x8b"):
                    media_type, digest = media.OCI_LAYER_GZIP, _sha256_of(f)
                    f.seek(0)
                elif head.startswith(b"\x28\xb5\x2f\xfd"):
                    media_type, digest = media.OCI_LAYER_ZSTD, _sha256_of(f)
                    f.seek(0)
                else:
                    # A plain tar's digest is its DiffID; ingest verifies it.
                    media_type, digest = media.OCI_LAYER_TAR, diff_id
                progress.start(digest, f"Copying blob {digest}", size)
                _ingest(store, digest, f, size)
                progress.finish(digest)
            layers.append(media.Descriptor(media_type, digest, size))
        manifest = media.Manifest(
            media_type=media.OCI_MANIFEST,
            config=media.Descriptor(media.OCI_CONFIG, config_digest, len(config_bytes)),
            layers=tuple(layers),
        )
        data = manifest.to_json()
        manifest_digest = store.put_blob_bytes(data)
        loaded.append(_store_image(store, manifest_digest, manifest, config_bytes,
                                   _names_from(entry.repo_tags), unpacker))
    return loaded


def detect_format(archive: _Archive) -> ArchiveFormat:
    if archive.has("oci-layout") and archive.has("index.json"):
        return "oci-archive"
    if archive.has("manifest.json"):
        return "docker-archive"
    raise ArchiveError(
        "not an image archive: it has neither oci-layout/index.json nor manifest.json",
        hint="sbx load reads oci-archive and docker-archive files (sbx/podman/docker save)",
    )


def load(store: Store, f: BinaryIO, unpacker: Unpacker,
         progress: Progress | None = None) -> list[LoadedImage]:
    """Load every image of the archive in seekable file `f` into the store.
    Nothing becomes visible before its layers are unpacked (Store.add_image last)."""
    progress = progress or Quiet()
    archive = _Archive(f)
    fmt = detect_format(archive)
    with store.protect():
        # Stale temp entries go now, while this process has one thread.
        store.clean_tmp()
        try:
            if fmt == "oci-archive":
                return _load_oci(store, archive, unpacker, progress)
            return _load_docker(store, archive, unpacker, progress)
        except InvalidDigestError as err:
            raise ArchiveError(f"the archive names a bad digest: {err.message}") from None


__all__ = [
    "FORMATS",
    "ArchiveError",
    "ArchiveFormat",
    "DockerArchiveEntry",
    "LoadedImage",
    "detect_format",
    "familiar_tag",
    "load",
    "read_docker_manifest",
    "save",
    "save_docker",
    "save_oci",
    "write_docker_manifest",
]
