"""RegistryClient against a real registry (Debian's docker-registry, plain HTTP on
127.0.0.1): push and pull blobs and manifests, verified and streamed; mounts,
chunked uploads, tag lists, indexes, parallel downloads; and interop with skopeo
both ways."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
from registry_rig import RunningRegistry, make_image, make_layer_tar, sha256

from sandbox.registry import media
from sandbox.registry.client import RegistryClient
from sandbox.registry.errors import DigestMismatchError, NotFoundError
from sandbox.registry.media import Index, Manifest, Platform, parse_manifest, select_manifest

pytest_plugins = ["registry_rig"]


@pytest.fixture
def client(registry: RunningRegistry) -> RegistryClient:
    c = RegistryClient(registry.host, timeout=10)
    yield c  # type: ignore[misc]
    c.close()


def push_image(client: RegistryClient, repo: str, tag: str, files: dict[str, bytes]):
    image = make_image(files)
    for blob in (image.layer, image.config):
        if not client.blob_exists(repo, sha256(blob)):
            client.push_blob(repo, sha256(blob), len(blob), io.BytesIO(blob))
    digest = client.put_manifest(repo, tag, media.OCI_MANIFEST, image.manifest)
    assert digest == image.manifest_digest
    return image


def test_push_then_pull_round_trip(client: RegistryClient, tmp_path: Path) -> None:
    image = push_image(client, "sbx/roundtrip", "v1", {"hello.txt": b"hello\n" * 5000})

    media_type, digest, data = client.get_manifest("sbx/roundtrip", "v1")
    assert (media_type, digest, data) == (media.OCI_MANIFEST, image.manifest_digest, image.manifest)
    # By digest too: the content is checked against the digest asked for.
    assert client.get_manifest("sbx/roundtrip", digest)[2] == image.manifest

    manifest = parse_manifest(data, media_type)
    assert isinstance(manifest, Manifest)
    assert client.read_blob("sbx/roundtrip", manifest.config.digest) == image.config

    layer = manifest.layers[0]
    seen: list[tuple[int, int | None]] = []
    target = tmp_path / "layer"
    with open(target, "wb") as out:
        n = client.fetch_blob(
            "sbx/roundtrip",
            layer.digest,
            out,
            expected_size=layer.size,
            progress=lambda done, total: seen.append((done, total)),
        )
    assert n == layer.size
    assert target.read_bytes() == image.layer
    assert seen and seen[-1] == (layer.size, layer.size)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_fetch_blob_streams_in_chunks(client: RegistryClient) -> None:
    """A 3 MiB blob arrives in many writes, never as one buffer."""
    data = os.urandom(3 * 1024 * 1024)
    digest = sha256(data)
    client.push_blob("sbx/big", digest, len(data), io.BytesIO(data))

    class Recorder(io.BytesIO):
        sizes: list[int] = []

        def write(self, b: bytes) -> int:  # type: ignore[override]
            self.sizes.append(len(b))
            return super().write(b)

    out = Recorder()
    client.fetch_blob("sbx/big", digest, out)
    assert out.getvalue() == data
    assert len(out.sizes) >= 12 and max(out.sizes) <= 256 * 1024


def test_chunked_upload(client: RegistryClient) -> None:
    data = os.urandom(300_000)
    digest = sha256(data)
    progress: list[int] = []
    client.push_blob(
        "sbx/chunked",
        digest,
        len(data),
        io.BytesIO(data),
        chunk_size=64 * 1024,
        progress=lambda done, total: progress.append(done),
    )
    assert progress[-1] == len(data)
    out = io.BytesIO()
    client.fetch_blob("sbx/chunked", digest, out, expected_size=len(data))
    assert out.getvalue() == data


def test_push_of_corrupt_data_is_refused(client: RegistryClient) -> None:
    data = b"the real content"
    with pytest.raises(DigestMismatchError) as info:
        client.push_blob("sbx/corrupt", sha256(b"something else"), len(data), io.BytesIO(data))
    assert info.value.code == "DIGEST_INVALID"
    assert sha256(data) in info.value.message
    assert not client.blob_exists("sbx/corrupt", sha256(b"something else"))


def test_head_manifest_and_missing(client: RegistryClient) -> None:
    image = push_image(client, "sbx/head", "t", {"a": b"a"})
    desc = client.head_manifest("sbx/head", "t")
    assert desc is not None
    assert (desc.media_type, desc.digest, desc.size) == (
        media.OCI_MANIFEST,
        image.manifest_digest,
        len(image.manifest),
    )
    assert client.head_manifest("sbx/head", "nope") is None
    assert client.head_manifest("sbx/never-pushed", "t") is None


def test_image_not_found(client: RegistryClient, registry: RunningRegistry) -> None:
    with pytest.raises(NotFoundError) as info:
        client.get_manifest("sbx/missing", "v9")
    assert info.value.message == f"image not found: {registry.host}/sbx/missing:v9"
    assert info.value.code == "MANIFEST_UNKNOWN"
    missing = "sha256:" + "0" * 64
    with pytest.raises(NotFoundError) as info:
        client.get_manifest("sbx/missing", missing)
    assert info.value.message == f"image not found: {registry.host}/sbx/missing@{missing}"


def test_blob_not_found_leaves_output_empty(client: RegistryClient, tmp_path: Path) -> None:
    with open(tmp_path / "out", "wb") as out:
        with pytest.raises(NotFoundError) as info:
            client.fetch_blob("sbx/missing", "sha256:" + "1" * 64, out)
        assert "sha256:" + "1" * 64 in info.value.message
        assert "sbx/missing" in info.value.message
    assert (tmp_path / "out").read_bytes() == b""


def test_mount_blob(client: RegistryClient) -> None:
    image = push_image(client, "sbx/mount-src", "t", {"m": b"mount me"})
    assert client.mount_blob("sbx/mount-dst", image.layer_digest, "sbx/mount-src") is True
    assert client.blob_exists("sbx/mount-dst", image.layer_digest)
    # The source lacks this blob: the registry opens an upload instead (202).
    data = b"not in the source"
    assert client.mount_blob("sbx/mount-dst", sha256(data), "sbx/mount-src") is False
    client.push_blob("sbx/mount-dst", sha256(data), len(data), io.BytesIO(data))
    assert client.blob_exists("sbx/mount-dst", sha256(data))


def test_tags_list_follows_pages(client: RegistryClient) -> None:
    for tag in ("a", "b", "c", "d", "e"):
        push_image(client, "sbx/tags", tag, {"f": b"same"})
    assert sorted(client.tags_list("sbx/tags", page_size=2)) == ["a", "b", "c", "d", "e"]
    with pytest.raises(NotFoundError, match="repository not found"):
        client.tags_list("sbx/no-such-repo")


def test_index_push_and_platform_selection(client: RegistryClient) -> None:
    entries = []
    for arch in ("amd64", "arm64"):
        image = make_image({"arch": arch.encode()}, arch=arch)
        for blob in (image.layer, image.config):
            client.push_blob("sbx/multi", sha256(blob), len(blob), io.BytesIO(blob))
        client.put_manifest("sbx/multi", image.manifest_digest, media.OCI_MANIFEST, image.manifest)
        entries.append(
            {
                "mediaType": media.OCI_MANIFEST,
                "digest": image.manifest_digest,
                "size": len(image.manifest),
                "platform": {"os": "linux", "architecture": arch},
            }
        )
    index_bytes = json.dumps(
        {"schemaVersion": 2, "mediaType": media.OCI_INDEX, "manifests": entries}
    ).encode()
    client.put_manifest("sbx/multi", "latest", media.OCI_INDEX, index_bytes)

    media_type, _, data = client.get_manifest("sbx/multi", "latest")
    assert media_type == media.OCI_INDEX
    index = parse_manifest(data, media_type)
    assert isinstance(index, Index)
    chosen = select_manifest(index, Platform("linux", "arm64"))
    _, _digest, data = client.get_manifest("sbx/multi", chosen.digest)
    manifest = parse_manifest(data)
    assert isinstance(manifest, Manifest)
    config = json.loads(client.read_blob("sbx/multi", manifest.config.digest))
    assert config["architecture"] == "arm64"


def test_parallel_downloads_share_one_client(client: RegistryClient) -> None:
    blobs = [os.urandom(200_000 + i) for i in range(6)]
    for blob in blobs:
        client.push_blob("sbx/parallel", sha256(blob), len(blob), io.BytesIO(blob))
    results: dict[int, bytes] = {}
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            for _ in range(3):
                out = io.BytesIO()
                client.fetch_blob(
                    "sbx/parallel", sha256(blobs[i]), out, expected_size=len(blobs[i])
                )
                results[i] = out.getvalue()
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(blobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert results == dict(enumerate(blobs))
    # Connections went back to the pool for reuse, none leaked past its cap.
    assert 1 <= client._transport.idle_connections() <= 8


def test_sequential_requests_reuse_one_connection(client: RegistryClient) -> None:
    push_image(client, "sbx/keepalive", "t", {"k": b"k"})
    client.close()
    for _ in range(5):
        client.get_manifest("sbx/keepalive", "t")
    assert client._transport.idle_connections() == 1


# --- skopeo interop --------------------------------------------------------------
def write_oci_layout(directory: Path, files: dict[str, bytes]) -> str:
    """An OCI image layout (image-spec image-layout.md) with one uncompressed
    layer, made by hand; returns the manifest digest."""
    tar = make_layer_tar(files)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [sha256(tar)]},
        }
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": media.OCI_MANIFEST,
            "config": {
                "mediaType": media.OCI_CONFIG,
                "digest": sha256(config),
                "size": len(config),
            },
            "layers": [{"mediaType": media.OCI_LAYER_TAR, "digest": sha256(tar), "size": len(tar)}],
        }
    ).encode()
    blobs = directory / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    for blob in (tar, config, manifest):
        (blobs / hashlib.sha256(blob).hexdigest()).write_bytes(blob)
    (directory / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": media.OCI_MANIFEST,
                "digest": sha256(manifest),
                "size": len(manifest),
                "annotations": {"org.opencontainers.image.ref.name": "v1"},
            }
        ],
    }
    (directory / "index.json").write_text(json.dumps(index))
    return sha256(manifest)


def skopeo(*args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("skopeo") is None:
        pytest.skip("skopeo not installed: run scripts/setup.sh")
    return subprocess.run(
        ["skopeo", "--insecure-policy", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def test_pull_what_skopeo_pushed(client: RegistryClient, registry: RunningRegistry, tmp_path: Path):
    files = {"etc/os-release": b"ID=sbx\n", "bin/hello": b"#!/bin/sh\necho hi\n"}
    write_oci_layout(tmp_path / "layout", files)
    skopeo(
        "copy",
        "--dest-tls-verify=false",
        f"oci:{tmp_path / 'layout'}:v1",
        f"docker://{registry.host}/sbx/from-skopeo:v1",
    )
    media_type, _, data = client.get_manifest("sbx/from-skopeo", "v1")
    manifest = parse_manifest(data, media_type)
    assert isinstance(manifest, Manifest)
    config = json.loads(client.read_blob("sbx/from-skopeo", manifest.config.digest))
    out = io.BytesIO()
    client.fetch_blob("sbx/from-skopeo", manifest.layers[0].digest, out)
    import tarfile

    layer = out.getvalue()
    if media.layer_compression(manifest.layers[0].media_type) == "gzip":
        import gzip

        layer = gzip.decompress(layer)
    assert config["rootfs"]["diff_ids"] == [sha256(layer)]
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        got = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
    assert got == files


def test_skopeo_reads_what_we_pushed(client: RegistryClient, registry: RunningRegistry) -> None:
    image = push_image(client, "sbx/for-skopeo", "v2", {"x": b"from sbx"})
    result = skopeo(
        "inspect", "--tls-verify=false", "--raw", f"docker://{registry.host}/sbx/for-skopeo:v2"
    )
    assert result.stdout.encode().strip() == image.manifest
    info = json.loads(
        skopeo(
            "inspect", "--tls-verify=false", f"docker://{registry.host}/sbx/for-skopeo:v2"
        ).stdout
    )
    assert info["Digest"] == image.manifest_digest
    assert info["Layers"] == [image.layer_digest]
