"""sandbox.images.push with a fake registry: skip what is there, mount what the
registry has in another repository, upload the rest, the manifest last and byte
for byte."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pytest
from test_pull import UNPACKER, FakeRegistry, make_image, sha

from sandbox.images import pull as p
from sandbox.images.push import PushError, mount_sources, push
from sandbox.images.store import Store
from sandbox.registry.reference import parse_reference


@dataclass
class FakeTarget:
    registry: str = "registry.test"
    have: set[tuple[str, str]] = field(default_factory=set)  # (repo, digest)
    mountable: set[str] = field(default_factory=set)  # repos a mount may come from
    calls: list[tuple[str, ...]] = field(default_factory=list)
    uploaded: dict[str, bytes] = field(default_factory=dict)
    manifests: dict[tuple[str, str], tuple[str, bytes]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def blob_exists(self, repository: str, digest: str) -> bool:
        with self.lock:
            self.calls.append(("exists", repository, digest))
        return (repository, digest) in self.have

    def mount_blob(self, repository: str, digest: str, from_repository: str) -> bool:
        with self.lock:
            self.calls.append(("mount", repository, digest, from_repository))
        return from_repository in self.mountable

    def push_blob(self, repository: str, digest: str, size: int, fileobj: IO[bytes], *,
                  progress: Callable[[int, int | None], None] | None = None) -> None:
        data = fileobj.read()
        assert len(data) == size and sha(data) == digest
        with self.lock:
            self.calls.append(("push", repository, digest))
            self.uploaded[digest] = data

    def put_manifest(self, repository: str, reference: str, media_type: str, data: bytes) -> str:
        with self.lock:
            self.calls.append(("manifest", repository, reference))
            self.manifests[(repository, reference)] = (media_type, data)
        return sha(data)


@pytest.fixture
def pulled(tmp_path: Path) -> tuple[Store, p.PullResult]:
    store = Store(tmp_path / "store", sync_layers=False)
    fake = FakeRegistry()
    fake.add("src/app", "1", make_image([{"a": b"a\n"}, {"b": b"b\n"}]))
    return store, p.pull(parse_reference("registry.test/src/app:1"), store, fake, UNPACKER)


def test_push_uploads_then_puts_the_same_manifest(pulled: tuple[Store, p.PullResult]) -> None:
    store, result = pulled
    target = FakeTarget(registry="other.test")
    out = push(store, result.image, parse_reference("other.test/dst:2"), target)
    assert out.manifest_digest == result.image.manifest_digest
    manifest_call = target.calls[-1]
    assert manifest_call == ("manifest", "dst", "2")
    _media_type, data = target.manifests[("dst", "2")]
    assert data == store.read_blob(result.image.manifest_digest)
    assert set(target.uploaded) == {*(d.digest for d in result.resolved.manifest.layers),
                                    result.image.id}
    # Another registry: nothing to mount from.
    assert not [c for c in target.calls if c[0] == "mount"]


def test_push_skips_existing_and_mounts_from_the_source_repo(
    pulled: tuple[Store, p.PullResult]
) -> None:
    store, result = pulled
    layers = [d.digest for d in result.resolved.manifest.layers]
    target = FakeTarget(have={("dst", layers[0])}, mountable={"src/app"})
    out = push(store, result.image, parse_reference("registry.test/dst:1"), target)
    assert out.existing == [layers[0]]
    assert sorted(out.mounted) == sorted([layers[1], result.image.id])
    assert out.uploaded == []
    assert mount_sources(result.image, parse_reference("registry.test/dst:1")) == ["src/app"]
    assert mount_sources(result.image, parse_reference("registry.test/src/app:2")) == []


def test_push_by_digest_must_be_the_images(pulled: tuple[Store, p.PullResult]) -> None:
    store, result = pulled
    with pytest.raises(PushError, match="its manifest is"):
        push(store, result.image, parse_reference("registry.test/dst@sha256:" + "0" * 64),
             FakeTarget())
    out = push(store, result.image,
               parse_reference(f"registry.test/dst@{result.image.manifest_digest}"), FakeTarget())
    assert out.manifest_digest == result.image.manifest_digest


def test_push_refuses_an_image_with_missing_blobs(pulled: tuple[Store, p.PullResult]) -> None:
    store, result = pulled
    layer = result.resolved.manifest.layers[1].digest
    store.blob_path(layer).unlink()
    with pytest.raises(PushError, match="blobs missing") as info:
        push(store, result.image, parse_reference("registry.test/dst:1"), FakeTarget())
    assert "pull the image again" in (info.value.hint or "")
