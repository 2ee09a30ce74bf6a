"""Manifest parsing, media types and platform selection (sandbox.registry.media)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sandbox.registry import media
from sandbox.registry.errors import ManifestError, PlatformError
from sandbox.registry.media import (
    Descriptor,
    Index,
    Manifest,
    Platform,
    host_platform,
    parse_manifest,
    parse_platform,
    select_manifest,
)

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
D3 = "sha256:" + "3" * 64


def desc(media_type: str, digest: str, size: int = 10, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": digest, "size": size, **extra}


def manifest_doc(media_type: str | None = media.OCI_MANIFEST) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "config": desc(media.OCI_CONFIG, D1, 100),
        "layers": [desc(media.OCI_LAYER_GZIP, D2, 2000), desc(media.OCI_LAYER_ZSTD, D3, 3)],
    }
    if media_type:
        doc["mediaType"] = media_type
    return doc


def plat(os_: str, arch: str, variant: str | None = None) -> dict[str, str]:
    p = {"os": os_, "architecture": arch}
    if variant:
        p["variant"] = variant
    return p


def index_of(*platforms: dict[str, str], extra: list[dict[str, Any]] | None = None) -> Index:
    entries = [
        desc(media.OCI_MANIFEST, "sha256:" + f"{i:064x}", platform=p)
        for i, p in enumerate(platforms)
    ]
    doc = {"schemaVersion": 2, "mediaType": media.OCI_INDEX, "manifests": entries + (extra or [])}
    parsed = parse_manifest(json.dumps(doc).encode())
    assert isinstance(parsed, Index)
    return parsed


def test_parse_oci_manifest() -> None:
    parsed = parse_manifest(json.dumps(manifest_doc()).encode())
    assert isinstance(parsed, Manifest)
    assert parsed.media_type == media.OCI_MANIFEST
    assert parsed.config == Descriptor(media.OCI_CONFIG, D1, 100)
    assert [layer.digest for layer in parsed.layers] == [D2, D3]
    assert [media.layer_compression(x.media_type) for x in parsed.layers] == ["gzip", "zstd"]


def test_parse_manifest_without_media_type_uses_header_then_shape() -> None:
    data = json.dumps(manifest_doc(None)).encode()
    assert parse_manifest(data, media.DOCKER_MANIFEST).media_type == media.DOCKER_MANIFEST
    assert parse_manifest(data).media_type == media.OCI_MANIFEST
    assert parse_manifest(data, "application/json").media_type == media.OCI_MANIFEST


def test_parse_docker_manifest_list() -> None:
    doc = {
        "schemaVersion": 2,
        "mediaType": media.DOCKER_MANIFEST_LIST,
        "manifests": [desc(media.DOCKER_MANIFEST, D1, platform=plat("linux", "amd64"))],
    }
    parsed = parse_manifest(json.dumps(doc).encode())
    assert isinstance(parsed, Index)
    assert parsed.manifests[0].platform == Platform("linux", "amd64")


def test_manifest_round_trip() -> None:
    parsed = parse_manifest(json.dumps(manifest_doc()).encode())
    assert isinstance(parsed, Manifest)
    assert parse_manifest(parsed.to_json()) == parsed


@pytest.mark.parametrize(
    "doc",
    [
        {"schemaVersion": 1, "name": "x", "fsLayers": []},
        {"schemaVersion": 1, "mediaType": media.DOCKER_SCHEMA1_SIGNED, "signatures": []},
        {"mediaType": media.DOCKER_SCHEMA1, "schemaVersion": 1},
    ],
)
def test_schema1_refused_with_hint(doc: dict[str, Any]) -> None:
    with pytest.raises(ManifestError) as info:
        parse_manifest(json.dumps(doc).encode())
    assert "schema 1" in info.value.message
    assert info.value.hint and "re-push" in info.value.hint


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"not json", "not JSON"),
        (b"[]", "not a JSON object"),
        (b'{"schemaVersion": 2}', "cannot tell"),
        (b'{"schemaVersion": 3, "mediaType": "' + media.OCI_MANIFEST.encode() + b'"}', "3"),
        (json.dumps({**manifest_doc(), "layers": None}).encode(), "'layers'"),
        (json.dumps({**manifest_doc(), "config": None}).encode(), "config"),
        (
            json.dumps(
                {**manifest_doc(), "layers": [desc(media.OCI_LAYER_TAR, "sha256:../x")]}
            ).encode(),
            "invalid digest",
        ),
        (
            json.dumps({**manifest_doc(), "layers": [desc(media.OCI_LAYER_TAR, D1, -1)]}).encode(),
            "negative size",
        ),
        (
            json.dumps(
                {**manifest_doc(), "layers": [desc(media.OCI_LAYER_TAR, D1, True)]}
            ).encode(),
            "'size'",
        ),
        (json.dumps({**manifest_doc(), "mediaType": "text/plain"}).encode(), "text/plain"),
        (b" " * (media.MANIFEST_MAX_BYTES + 1), "too large"),
    ],
)
def test_malformed_manifests(data: bytes, problem: str) -> None:
    with pytest.raises(ManifestError) as info:
        parse_manifest(data)
    assert problem in info.value.message


def test_unknown_layer_type() -> None:
    with pytest.raises(ManifestError):
        media.layer_compression("application/x-foo")
    assert media.layer_compression(media.DOCKER_LAYER_GZIP) == "gzip"
    assert media.layer_compression(media.OCI_LAYER_TAR) == ""


# --- platforms ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("machine", "expected"),
    [
        ("x86_64", "linux/amd64"),
        ("aarch64", "linux/arm64"),
        ("arm64", "linux/arm64"),
        ("armv7l", "linux/arm/v7"),
        ("armv6l", "linux/arm/v6"),
        ("armv8l", "linux/arm/v8"),
        ("i686", "linux/386"),
        ("ppc64le", "linux/ppc64le"),
        ("s390x", "linux/s390x"),
        ("riscv64", "linux/riscv64"),
        ("mips64el", "linux/mips64le"),
        ("weird", "linux/weird"),
    ],
)
def test_host_platform(machine: str, expected: str) -> None:
    assert str(host_platform(machine)) == expected


def test_host_platform_of_this_machine() -> None:
    assert host_platform().os == "linux"
    assert host_platform().architecture


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("linux/amd64", Platform("linux", "amd64")),
        ("linux/x86_64", Platform("linux", "amd64")),
        ("amd64", Platform("linux", "amd64")),
        ("linux/arm64/v8", Platform("linux", "arm64")),
        ("linux/aarch64", Platform("linux", "arm64")),
        ("linux/arm", Platform("linux", "arm", "v7")),
        ("linux/arm/7", Platform("linux", "arm", "v7")),
        ("linux/arm/v6", Platform("linux", "arm", "v6")),
        ("linux/armhf", Platform("linux", "arm", "v7")),
        ("Linux/AMD64", Platform("linux", "amd64")),
    ],
)
def test_parse_platform(text: str, expected: Platform) -> None:
    assert parse_platform(text) == expected


@pytest.mark.parametrize("text", ["", "/", "linux/", "a/b/c/d", "linux//v7"])
def test_parse_platform_errors(text: str) -> None:
    with pytest.raises(PlatformError):
        parse_platform(text)


def test_select_exact_platform() -> None:
    index = index_of(
        plat("linux", "amd64"), plat("linux", "arm64", "v8"), plat("linux", "arm", "v7")
    )
    assert select_manifest(index, Platform("linux", "amd64")) is index.manifests[0]
    assert select_manifest(index, Platform("linux", "arm64")) is index.manifests[1]
    assert select_manifest(index, parse_platform("linux/arm64/v8")) is index.manifests[1]
    assert select_manifest(index, Platform("linux", "arm", "v7")) is index.manifests[2]


def test_select_defaults_to_host() -> None:
    index = index_of(plat("linux", host_platform().architecture, host_platform().variant or None))
    assert select_manifest(index) is index.manifests[0]


def test_select_prefers_exact_variant_then_older() -> None:
    index = index_of(
        plat("linux", "arm", "v5"), plat("linux", "arm", "v7"), plat("linux", "arm", "v6")
    )
    assert select_manifest(index, Platform("linux", "arm", "v7")).platform == Platform(
        "linux", "arm", "v7"
    )
    assert select_manifest(index, Platform("linux", "arm", "v8")).platform == Platform(
        "linux", "arm", "v7"
    )
    assert select_manifest(index, Platform("linux", "arm", "v6")).platform == Platform(
        "linux", "arm", "v6"
    )
    # A v6 host cannot run v7.
    only_v7 = index_of(plat("linux", "arm", "v7"))
    with pytest.raises(PlatformError):
        select_manifest(only_v7, Platform("linux", "arm", "v6"))


def test_select_first_of_equals_and_skips_attestations() -> None:
    attestation = desc(
        media.OCI_MANIFEST,
        D3,
        platform=plat("unknown", "unknown"),
        annotations={"vnd.docker.reference.type": "attestation-manifest"},
    )
    index = index_of(plat("linux", "amd64"), plat("linux", "amd64"), extra=[attestation])
    assert select_manifest(index, Platform("linux", "amd64")) is index.manifests[0]
    assert [str(p) for p in media.available_platforms(index)] == ["linux/amd64", "linux/amd64"]


def test_no_matching_platform_lists_available() -> None:
    index = index_of(plat("linux", "amd64"), plat("linux", "arm", "v7"), plat("windows", "amd64"))
    with pytest.raises(PlatformError) as info:
        select_manifest(index, Platform("linux", "s390x"), name="docker.io/library/x:1")
    message = info.value.message
    assert "docker.io/library/x:1" in message
    assert "linux/s390x" in message
    assert "available: linux/amd64, linux/arm/v7, windows/amd64" in message
    assert info.value.hint and "--platform" in info.value.hint


def test_no_platforms_at_all() -> None:
    doc = {
        "schemaVersion": 2,
        "mediaType": media.OCI_INDEX,
        "manifests": [desc(media.OCI_MANIFEST, D1)],
    }
    index = parse_manifest(json.dumps(doc).encode())
    assert isinstance(index, Index)
    with pytest.raises(PlatformError, match="available: none"):
        select_manifest(index, Platform("linux", "amd64"))
