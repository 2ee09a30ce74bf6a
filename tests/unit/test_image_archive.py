"""sandbox.images.archive: docker-archive's manifest.json, and save/load round trips
in both formats (in this process; the integration tests run them as the test user
and against podman)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import tarfile
from pathlib import Path

import pytest
from test_pull import UNPACKER, FakeRegistry, make_image

from sandbox.images import archive
from sandbox.images import pull as p
from sandbox.images.store import Store
from sandbox.registry import media
from sandbox.registry.reference import parse_reference


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_docker_manifest_round_trip() -> None:
    entries = [archive.DockerArchiveEntry("abc.json", ("busybox:latest", "r.io/a:1"),
                                          ("1.tar", "2.tar"))]
    data = archive.write_docker_manifest(entries)
    assert json.loads(data) == [{"Config": "abc.json", "RepoTags": ["busybox:latest", "r.io/a:1"],
                                 "Layers": ["1.tar", "2.tar"]}]
    assert archive.read_docker_manifest(data) == entries


def test_docker_manifest_untagged_as_docker_writes_it() -> None:
    data = b'[{"Config":"c.json","RepoTags":null,"Layers":["a/layer.tar"]}]'
    assert archive.read_docker_manifest(data) == [
        archive.DockerArchiveEntry("c.json", (), ("a/layer.tar",))]


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"{", "not JSON"),
        (b"{}", "non-empty list"),
        (b"[]", "non-empty list"),
        (b"[1]", "not an object"),
        (b'[{"RepoTags":[],"Layers":[]}]', "Config missing"),
        (b'[{"Config":"c","RepoTags":"x","Layers":[]}]', "RepoTags"),
        (b'[{"Config":"c","Layers":"x"}]', "Layers"),
    ],
)
def test_docker_manifest_malformed(data: bytes, problem: str) -> None:
    with pytest.raises(archive.ArchiveError, match=problem):
        archive.read_docker_manifest(data)


@pytest.mark.parametrize(
    ("name", "tag"),
    [("docker.io/library/busybox:latest", "busybox:latest"),
     ("docker.io/user/app:1", "user/app:1"),
     ("127.0.0.1:5000/sbx/busybox:1", "127.0.0.1:5000/sbx/busybox:1"),
     ("r.io/a@sha256:" + "1" * 64, None)],
)
def test_familiar_tag(name: str, tag: str | None) -> None:
    assert archive.familiar_tag(name) == tag


@pytest.fixture
def pulled(tmp_path: Path) -> tuple[Store, p.PullResult]:
    store = Store(tmp_path / "store", sync_layers=False)
    fake = FakeRegistry()
    image = make_image([
        {"bin": None, "bin/sh": b"#!shell\n"},
        {"data": None, "data/a": b"a\n"},
        {"data": None, "data/.wh.a": b"", "data/b": b"b\n"},
    ])
    fake.add("app", "1", image)
    result = p.pull(parse_reference("registry.test/app:1"), store, fake, UNPACKER)
    return store, result


def _save(store: Store, record: object, fmt: archive.ArchiveFormat) -> bytes:
    out = io.BytesIO()
    archive.save(store, record, out, fmt)  # type: ignore[arg-type]
    return out.getvalue()


def test_docker_archive_is_what_docker_save_writes(pulled: tuple[Store, p.PullResult]) -> None:
    store, result = pulled
    data = _save(store, result.image, "docker-archive")
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        (entry,) = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
        assert entry["RepoTags"] == ["registry.test/app:1"]
        assert entry["Config"] == result.image.id[7:] + ".json"
        assert tar.extractfile(entry["Config"]).read() == store.read_blob(result.image.id)  # type: ignore[union-attr]
        # Layers are plain tars whose digests are the config's diff ids.
        layers = [tar.extractfile(name).read() for name in entry["Layers"]]  # type: ignore[union-attr]
        assert [sha(x) for x in layers] == list(result.config.diff_ids)
        assert all(tarfile.is_tarfile(io.BytesIO(x)) for x in layers)
    assert _save(store, result.image, "docker-archive") == data  # reproducible


def test_oci_archive_keeps_the_manifest(pulled: tuple[Store, p.PullResult]) -> None:
    store, result = pulled
    data = _save(store, result.image, "oci-archive")
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert json.loads(tar.extractfile("oci-layout").read()) == {  # type: ignore[union-attr]
            "imageLayoutVersion": "1.0.0"}
        index = json.loads(tar.extractfile("index.json").read())  # type: ignore[union-attr]
        (desc,) = index["manifests"]
        assert desc["digest"] == result.image.manifest_digest
        assert desc["annotations"]["org.opencontainers.image.ref.name"] == "registry.test/app:1"
        blob = tar.extractfile("blobs/sha256/" + desc["digest"][7:]).read()  # type: ignore[union-attr]
        assert sha(blob) == desc["digest"]


@pytest.mark.parametrize("fmt", archive.FORMATS)
def test_save_rmi_load_gives_the_same_image(
    pulled: tuple[Store, p.PullResult], fmt: archive.ArchiveFormat
) -> None:
    store, result = pulled
    data = _save(store, result.image, fmt)
    store.remove_image(result.image.id)
    store.prune()
    assert store.list_images() == [] and store.list_layers() == []
    (loaded,) = archive.load(store, io.BytesIO(data), UNPACKER)  # type: ignore[arg-type]
    assert loaded.image.id == result.image.id
    assert loaded.image.layers == result.image.layers
    assert loaded.names == ["registry.test/app:1"]
    if fmt == "oci-archive":
        assert loaded.image.manifest_digest == result.image.manifest_digest
    dirs = p.layer_dirs(store, loaded.image)
    assert (dirs[0] / "bin" / "sh").read_bytes() == b"#!shell\n"
    assert store.check() == []


def test_load_a_docker_archive_with_gzip_layers(tmp_path: Path) -> None:
    store = Store(tmp_path / "store", sync_layers=False)
    image = make_image([{"x": b"x\n"}])
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, blob in (("cfg.json", image.config), ("l/layer.tar", image.layers[0]),
                           ("manifest.json", archive.write_docker_manifest([
                               archive.DockerArchiveEntry("cfg.json", ("x:1",),
                                                          ("./l/layer.tar",))]))):
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    buf.seek(0)
    (loaded,) = archive.load(store, buf, UNPACKER)  # type: ignore[arg-type]
    assert loaded.image.id == image.id
    assert loaded.names == ["docker.io/library/x:1"]
    manifest = media.parse_manifest(store.read_blob(loaded.image.manifest_digest))
    assert isinstance(manifest, media.Manifest)
    assert manifest.layers[0].media_type == media.OCI_LAYER_GZIP
    assert manifest.layers[0].digest == sha(image.layers[0])


def test_load_refuses_what_is_not_an_image_archive(tmp_path: Path) -> None:
    store = Store(tmp_path / "store", sync_layers=False)
    with pytest.raises(archive.ArchiveError, match="not a tar archive"):
        archive.load(store, io.BytesIO(gzip.compress(b"hello")), UNPACKER)  # type: ignore[arg-type]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("hello.txt")
        tar.addfile(info, io.BytesIO(b""))
    buf.seek(0)
    with pytest.raises(archive.ArchiveError, match="neither oci-layout"):
        archive.load(store, buf, UNPACKER)  # type: ignore[arg-type]


def test_a_manifest_naming_a_missing_member_fails_cleanly(tmp_path: Path) -> None:
    store = Store(tmp_path / "store", sync_layers=False)
    image = make_image([{"x": b"x\n"}])
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, blob in (("cfg.json", image.config),
                           ("manifest.json", archive.write_docker_manifest([
                               archive.DockerArchiveEntry("cfg.json", (),
                                                          ("../../etc/passwd",))]))):
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    buf.seek(0)
    with pytest.raises(archive.ArchiveError, match=re.escape("no '../../etc/passwd'")):
        archive.load(store, buf, UNPACKER)  # type: ignore[arg-type]
    assert store.list_images() == []
