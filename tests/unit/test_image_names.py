"""How references become store names, and how the store is searched by name or id
(sandbox.images.pull: store_name, pull_names, find_local_name, repo_tags/digests)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sandbox.images import pull as p
from sandbox.images.store import AmbiguousImage, ImageNotFound, ImageRecord, Store
from sandbox.registry.reference import parse_reference

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("busybox", "docker.io/library/busybox:latest"),
        ("busybox:1.36", "docker.io/library/busybox:1.36"),
        ("user/app", "docker.io/user/app:latest"),
        ("127.0.0.1:5000/sbx/busybox:1", "127.0.0.1:5000/sbx/busybox:1"),
        ("localhost/app", "localhost/app:latest"),
        (f"quay.io/a/b@{D1}", f"quay.io/a/b@{D1}"),
        # docker ignores a tag beside a digest: the digest is what was pulled.
        (f"quay.io/a/b:1@{D1}", f"quay.io/a/b@{D1}"),
    ],
)
def test_store_name(text: str, name: str) -> None:
    assert p.store_name(parse_reference(text)) == name


def _resolved(ref: str, manifest: str, index: str | None = None) -> p.ResolvedImage:
    from sandbox.registry import media

    m = media.Manifest(media.OCI_MANIFEST, media.Descriptor(media.OCI_CONFIG, D2, 2), ())
    return p.ResolvedImage(parse_reference(ref), manifest, media.OCI_MANIFEST, b"{}", m, index)


def test_pull_names() -> None:
    assert p.pull_names(parse_reference("r.io/a:1"), _resolved("r.io/a:1", D1)) == [
        "r.io/a:1", f"r.io/a@{D1}"]
    assert p.pull_names(parse_reference(f"r.io/a@{D1}"), _resolved(f"r.io/a@{D1}", D1)) == [
        f"r.io/a@{D1}"]
    # By the digest of an index: the instance's digest, and the index's.
    assert p.pull_names(parse_reference(f"r.io/a@{D2}"), _resolved(f"r.io/a@{D2}", D1, D2)) == [
        f"r.io/a@{D1}", f"r.io/a@{D2}"]


@pytest.mark.parametrize(
    ("name", "parts"),
    [
        ("r.io/a:1", ("r.io/a", "1", None)),
        ("r.io:5000/a/b:latest", ("r.io:5000/a/b", "latest", None)),
        (f"r.io:5000/a@{D1}", ("r.io:5000/a", None, D1)),
    ],
)
def test_split_name(name: str, parts: tuple[str, str | None, str | None]) -> None:
    assert p.split_name(name) == parts


def test_repo_tags_and_digests() -> None:
    record = ImageRecord(
        id=D2, names=("r.io/a:1", f"r.io/a@{D1}", "q.io/b:2", "q.io/b:3"),
        manifest_digest=D1, layers=(), created="", size=0,
    )
    assert p.repo_tags(record) == ["r.io/a:1", "q.io/b:2", "q.io/b:3"]
    # A repository with only tags gets the current manifest's digest, once.
    assert p.repo_digests(record) == [f"r.io/a@{D1}", f"q.io/b@{D1}"]


# --- find_local ----------------------------------------------------------------------


def _add(store: Store, names: list[str], content: bytes) -> ImageRecord:
    config = json.dumps({"c": content.decode()}).encode()
    cid = store.put_blob_bytes(config)
    manifest = store.put_blob_bytes(json.dumps({"config": {"digest": cid}, "layers": []}).encode())
    return store.add_image(config_digest=cid, manifest_digest=manifest, chain_ids=[],
                           names=names)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store", sync_layers=False)


def test_find_by_name_short_name_digest_and_id(store: Store) -> None:
    bb = _add(store, ["docker.io/library/busybox:latest"], b"bb")
    local = _add(store, ["127.0.0.1:5000/sbx/app:1", f"127.0.0.1:5000/sbx/app@{D1}"], b"app")
    assert p.find_local_name(store, "busybox") == (bb, "docker.io/library/busybox:latest")
    assert p.find_local_name(store, "docker.io/busybox:latest")[0] == bb
    # A name typed without its registry finds the one stored name it ends.
    assert p.find_local_name(store, "sbx/app:1") == (local, "127.0.0.1:5000/sbx/app:1")
    assert p.find_local_name(store, "app:1") == (local, "127.0.0.1:5000/sbx/app:1")
    assert p.find_local(store, f"127.0.0.1:5000/sbx/app@{D1}") == local
    assert p.find_local_name(store, local.id) == (local, None)
    assert p.find_local_name(store, local.id[7:]) == (local, None)
    assert p.find_local_name(store, local.id[7:19]) == (local, None)
    with pytest.raises(ImageNotFound):
        p.find_local(store, "sbx/app:2")
    with pytest.raises(ImageNotFound):
        p.find_local(store, "pp:1")  # a suffix match is by whole path components


def test_a_repo_digest_matches_the_manifest(store: Store) -> None:
    record = _add(store, ["r.io/a:1"], b"x")
    assert p.find_local(store, f"r.io/a@{record.manifest_digest}") == record
    with pytest.raises(ImageNotFound):
        p.find_local(store, f"r.io/other@{record.manifest_digest}")


def test_ambiguous_short_names(store: Store) -> None:
    _add(store, ["r.io/x/app:1"], b"1")
    _add(store, ["q.io/y/app:1"], b"2")
    with pytest.raises(AmbiguousImage):
        p.find_local(store, "app:1")


def test_an_id_prefix_that_is_also_a_name(store: Store) -> None:
    record = _add(store, ["r.io/a:1"], b"x")
    prefix = record.id[7:13]
    named = _add(store, [f"docker.io/library/{prefix}:latest"], b"y")
    # Names win over id prefixes, as in podman.
    assert p.find_local(store, prefix) == named
