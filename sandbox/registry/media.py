"""Media types, manifest and index parsing, and platform selection.

Owns what the bytes of a manifest mean: the OCI image spec (manifest.md,
image-index.md, descriptor.md, config.md) and Docker's Image Manifest V2 Schema 2
(distribution docs/spec/manifest-v2-2.md). Docker's schema 1 (signed JWS manifests,
deprecated since 2017 and refused by current docker and registries) is detected
and refused with a hint. Pure functions over bytes; no I/O.
"""

from __future__ import annotations

import json
import platform as _platform
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sandbox.registry.digest import validate_digest
from sandbox.registry.errors import InvalidDigestError, ManifestError, PlatformError

# --- media types -------------------------------------------------------------
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
# "Non-distributable" layers: deprecated in image-spec 1.1, still found in the wild.
OCI_LAYER_NONDIST_TAR = "application/vnd.oci.image.layer.nondistributable.v1.tar"
OCI_LAYER_NONDIST_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
OCI_LAYER_NONDIST_ZSTD = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_FOREIGN_GZIP = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"

MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
SCHEMA1_TYPES = frozenset({DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED})
CONFIG_TYPES = frozenset({OCI_CONFIG, DOCKER_CONFIG})

# layer media type -> compression ("" for none). Docker's layer type has no
# uncompressed variant in practice; zstd layers exist only under OCI types.
LAYER_COMPRESSION: dict[str, str] = {
    OCI_LAYER_TAR: "",
    OCI_LAYER_GZIP: "gzip",
    OCI_LAYER_ZSTD: "zstd",
    OCI_LAYER_NONDIST_TAR: "",
    OCI_LAYER_NONDIST_GZIP: "gzip",
    OCI_LAYER_NONDIST_ZSTD: "zstd",
    DOCKER_LAYER_GZIP: "gzip",
    DOCKER_LAYER_FOREIGN_GZIP: "gzip",
}

# The Accept header for manifest requests: every type sbx can read, so a registry
# never has to down-convert to schema 1 (which it does when a client sends no
# Accept header; distribution docs/spec/manifest-v2-2.md, "Backward compatibility").
MANIFEST_ACCEPT: tuple[str, ...] = (
    OCI_INDEX,
    OCI_MANIFEST,
    DOCKER_MANIFEST_LIST,
    DOCKER_MANIFEST,
)

# Manifests are small; refuse a huge one before parsing it (containerd and
# containers/image cap them at 4 MiB for the same reason).
MANIFEST_MAX_BYTES = 4 * 1024 * 1024

_SCHEMA1_HINT = (
    "this image uses Docker's schema 1 manifest format, deprecated since 2017; "
    "re-push it with a current tool (docker, podman, skopeo or sbx push) "
    "to store it as schema 2 / OCI"
)


def layer_compression(media_type: str) -> str:
    """The compression of a layer media type: "", "gzip" or "zstd"."""
    try:
        return LAYER_COMPRESSION[media_type]
    except KeyError:
        raise ManifestError(
            f"unsupported layer media type {media_type!r}",
            hint="sbx reads OCI and Docker image layers (tar, tar+gzip, tar+zstd)",
        ) from None


# --- platforms ---------------------------------------------------------------
# uname -m -> (GOARCH, variant). GOARCH names are what image indexes use (image-spec
# image-index.md says architecture values are those of Go's GOARCH). The variants
# follow containerd's platforms.Normalize.
_MACHINE_ARCH: dict[str, tuple[str, str]] = {
    "x86_64": ("amd64", ""),
    "amd64": ("amd64", ""),
    "i386": ("386", ""),
    "i486": ("386", ""),
    "i586": ("386", ""),
    "i686": ("386", ""),
    "aarch64": ("arm64", ""),
    "arm64": ("arm64", ""),
    "armv8l": ("arm", "v8"),
    "armv7l": ("arm", "v7"),
    "armv7": ("arm", "v7"),
    "armhf": ("arm", "v7"),
    "armv6l": ("arm", "v6"),
    "armel": ("arm", "v6"),
    "armv5tel": ("arm", "v5"),
    "armv5l": ("arm", "v5"),
    "ppc64le": ("ppc64le", ""),
    "s390x": ("s390x", ""),
    "riscv64": ("riscv64", ""),
    "mips64": ("mips64", ""),
    "mips64el": ("mips64le", ""),
    "loongarch64": ("loong64", ""),
}


@dataclass(frozen=True)
class Platform:
    """os/architecture[/variant], normalized as containerd's platforms.Normalize does."""

    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        base = f"{self.os}/{self.architecture}"
        return f"{base}/{self.variant}" if self.variant else base

    def normalized(self) -> Platform:
        os_name = self.os.lower()
        arch = self.architecture.lower()
        variant = self.variant.lower()
        if arch in _MACHINE_ARCH and arch not in ("arm", "arm64"):
            mapped, mapped_variant = _MACHINE_ARCH[arch]
            arch, variant = mapped, variant or mapped_variant
        if arch in ("aarch64", "arm64"):
            arch = "arm64"
            # arm64 is v8 unless stated otherwise; "arm64/v8" == "arm64".
            if variant in ("8", "v8", "v8.0"):
                variant = ""
        elif arch == "arm":
            if variant in ("", "7"):
                variant = "v7"
            elif variant in ("5", "6", "8"):
                variant = "v" + variant
        elif arch == "amd64" and variant == "v1":
            variant = ""
        return Platform(os_name, arch, variant)

    def compatible(self) -> list[Platform]:
        """Platforms this one can run, best first: the exact one, then older
        variants of the same architecture (containerd platforms.Only: an arm/v7
        host runs v7, v6 and v5 images; amd64/v3 runs v2 and v1)."""
        p = self.normalized()
        out = [p]
        if p.architecture == "arm" and p.variant in ("v8", "v7", "v6"):
            for v in ("v7", "v6", "v5"):
                if v < p.variant:
                    out.append(Platform(p.os, "arm", v))
        elif p.architecture == "amd64" and p.variant in ("v2", "v3", "v4"):
            for v in ("v3", "v2", ""):
                if v < p.variant:
                    out.append(Platform(p.os, "amd64", v))
        return out


def host_platform(machine: str | None = None, os_name: str = "linux") -> Platform:
    """The platform of this machine, from `uname -m` (platform.machine())."""
    raw = (machine if machine is not None else _platform.machine()).lower()
    arch, variant = _MACHINE_ARCH.get(raw, (raw, ""))
    return Platform(os_name, arch, variant).normalized()


def parse_platform(text: str) -> Platform:
    """Parse --platform: os/arch[/variant], or just arch (os defaults to linux)."""
    parts = text.strip().split("/")
    if any(not p for p in parts) or not 1 <= len(parts) <= 3:
        raise PlatformError(
            f"invalid platform {text!r}",
            hint="write OS/ARCH[/VARIANT], e.g. linux/amd64 or linux/arm/v7",
        )
    if len(parts) == 1:
        parts = ["linux", *parts]
    return Platform(*parts).normalized()


# --- descriptors, manifests, indexes -----------------------------------------
@dataclass(frozen=True)
class Descriptor:
    """A content descriptor (image-spec descriptor.md)."""

    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)
    urls: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        }
        if self.urls:
            out["urls"] = list(self.urls)
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.platform:
            out["platform"] = {"architecture": self.platform.architecture, "os": self.platform.os}
            if self.platform.variant:
                out["platform"]["variant"] = self.platform.variant
        return out


@dataclass(frozen=True)
class Manifest:
    """An image manifest: one config blob and its layers, in order, base first."""

    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]
    annotations: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> bytes:
        """Serialize for pushing. The digest of these exact bytes names the manifest."""
        doc: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": self.media_type,
            "config": self.config.to_dict(),
            "layers": [layer.to_dict() for layer in self.layers],
        }
        if self.annotations:
            doc["annotations"] = dict(self.annotations)
        return json.dumps(doc, indent=2).encode()


@dataclass(frozen=True)
class Index:
    """An image index / Docker manifest list: one manifest per platform."""

    media_type: str
    manifests: tuple[Descriptor, ...]
    annotations: Mapping[str, str] = field(default_factory=dict)


def _field(doc: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    value = doc.get(key)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise ManifestError(f"malformed {where}: {key!r} missing or not a {kind.__name__}")
    return value


def _str_map(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ManifestError(f"malformed {where}: annotations must map strings to strings")
    return dict(value)


def parse_descriptor(doc: Any, where: str = "descriptor") -> Descriptor:
    if not isinstance(doc, dict):
        raise ManifestError(f"malformed {where}: not an object")
    media_type = _field(doc, "mediaType", str, where)
    digest = _field(doc, "digest", str, where)
    try:
        validate_digest(digest)
    except InvalidDigestError as err:
        raise ManifestError(f"malformed {where}: {err.message}") from None
    size = _field(doc, "size", int, where)
    if size < 0:
        raise ManifestError(f"malformed {where}: negative size")
    plat = None
    raw_platform = doc.get("platform")
    if raw_platform is not None:
        if not isinstance(raw_platform, dict):
            raise ManifestError(f"malformed {where}: platform is not an object")
        plat = Platform(
            str(raw_platform.get("os", "")),
            str(raw_platform.get("architecture", "")),
            str(raw_platform.get("variant", "") or ""),
        )
    urls = doc.get("urls") or []
    if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
        raise ManifestError(f"malformed {where}: urls must be a list of strings")
    return Descriptor(
        media_type=media_type,
        digest=digest,
        size=size,
        platform=plat,
        annotations=_str_map(doc.get("annotations"), where),
        urls=tuple(urls),
    )


def detect_media_type(data: bytes, content_type: str | None = None) -> str:
    """The media type of manifest bytes: the document's own `mediaType` when it has
    one, else the HTTP Content-Type, else guessed from the fields present (OCI
    manifests may omit mediaType; image-spec manifest.md says SHOULD)."""
    doc = _load(data)
    declared = doc.get("mediaType")
    if isinstance(declared, str) and declared:
        return declared
    if doc.get("schemaVersion") == 1:
        return DOCKER_SCHEMA1
    ctype = (content_type or "").split(";")[0].strip()
    if ctype in MANIFEST_TYPES or ctype in INDEX_TYPES or ctype in SCHEMA1_TYPES:
        return ctype
    if "manifests" in doc:
        return OCI_INDEX
    if "config" in doc or "layers" in doc:
        return OCI_MANIFEST
    raise ManifestError("cannot tell the manifest's media type: no mediaType field")


def _load(data: bytes) -> dict[str, Any]:
    if len(data) > MANIFEST_MAX_BYTES:
        raise ManifestError(f"manifest too large ({len(data)} bytes)")
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as err:
        raise ManifestError(f"malformed manifest: not JSON ({err})") from None
    if not isinstance(doc, dict):
        raise ManifestError("malformed manifest: not a JSON object")
    return doc


def parse_manifest(data: bytes, content_type: str | None = None) -> Manifest | Index:
    """Parse manifest or index bytes. Schema 1 is refused with a hint."""
    media_type = detect_media_type(data, content_type)
    doc = _load(data)
    if media_type in SCHEMA1_TYPES or doc.get("schemaVersion") == 1:
        raise ManifestError("unsupported manifest: Docker schema 1", hint=_SCHEMA1_HINT)
    if doc.get("schemaVersion") != 2:
        raise ManifestError(f"unsupported manifest schemaVersion {doc.get('schemaVersion')!r}")
    annotations = _str_map(doc.get("annotations"), "manifest")
    if media_type in INDEX_TYPES:
        entries = _field(doc, "manifests", list, "index")
        return Index(
            media_type=media_type,
            manifests=tuple(parse_descriptor(e, f"index entry {i}") for i, e in enumerate(entries)),
            annotations=annotations,
        )
    if media_type in MANIFEST_TYPES:
        layers = doc.get("layers")
        if not isinstance(layers, list):
            raise ManifestError("malformed manifest: 'layers' missing or not a list")
        return Manifest(
            media_type=media_type,
            config=parse_descriptor(doc.get("config"), "manifest config"),
            layers=tuple(parse_descriptor(x, f"layer {i}") for i, x in enumerate(layers)),
            annotations=annotations,
        )
    raise ManifestError(
        f"unsupported manifest media type {media_type!r}",
        hint="sbx reads OCI image manifests and indexes and Docker schema 2 manifests and lists",
    )


def _is_attestation(desc: Descriptor) -> bool:
    # BuildKit stores provenance/SBOM attestations in the index as entries with
    # platform unknown/unknown and this annotation (buildkit docs/attestations).
    return "vnd.docker.reference.type" in desc.annotations or (
        desc.platform is not None and desc.platform.os == "unknown"
    )


def available_platforms(index: Index) -> list[Platform]:
    """The runnable platforms an index offers, in index order."""
    return [
        d.platform.normalized()
        for d in index.manifests
        if d.platform is not None and not _is_attestation(d)
    ]


def select_manifest(
    index: Index, want: Platform | None = None, *, name: str | None = None
) -> Descriptor:
    """The index entry to pull for `want` (default: this host).

    Exact matches first, then older variants this platform can run; among equals
    the first in the index wins, as docker and containerd do. `name` is only used
    in the error, which lists what the index offers."""
    target = (want or host_platform()).normalized()
    candidates = [d for d in index.manifests if d.platform is not None and not _is_attestation(d)]
    for acceptable in target.compatible():
        for desc in candidates:
            assert desc.platform is not None
            if desc.platform.normalized() == acceptable:
                return desc
    offered = _unique(str(p) for p in available_platforms(index)) or ["none"]
    subject = f" {name}" if name else ""
    raise PlatformError(
        f"image{subject} has no variant for {target}; available: {', '.join(offered)}",
        hint="choose one of those with --platform OS/ARCH[/VARIANT]",
    )


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))
