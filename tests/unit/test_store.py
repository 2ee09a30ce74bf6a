"""The image store in one process: layout, blobs, layers, the image index, prune."""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
from pathlib import Path

import hostile_layers as h
import pytest

from sandbox.images import extract_layer
from sandbox.images.extract import UnsafeMember
from sandbox.images.store import (
    STORE_VERSION,
    AmbiguousImage,
    BlobNotFound,
    DigestMismatch,
    ImageInUse,
    ImageNotFound,
    InvalidDigest,
    LayerNotFound,
    Store,
    StoreError,
    StoreVersionError,
    chain_id,
    validate_digest,
)


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store", sync_layers=False)


# -- digests ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "sha256:",
        "sha256:" + "A" * 64,  # uppercase
        "sha256:" + "a" * 63,
        "sha256:" + "a" * 65,
        "sha256:" + "a" * 64 + "\n",
        "sha512:" + "a" * 64,
        "md5:" + "a" * 32,
        "sha256:../../" + "a" * 58,
        "sha256/" + "a" * 64,
        "a" * 64,
    ],
)
def test_invalid_digests_never_become_paths(store: Store, bad: str) -> None:
    with pytest.raises(InvalidDigest):
        store.blob_path(bad)
    with pytest.raises(InvalidDigest):
        store.has_blob(bad)
    with pytest.raises(InvalidDigest):
        store.layer_path(bad)


def test_valid_digests() -> None:
    assert validate_digest("sha256:" + "0" * 64) == ("sha256", "0" * 64)
    assert validate_digest("sha512:" + "f" * 128) == ("sha512", "f" * 128)


def test_chain_id_follows_the_image_spec() -> None:
    a, b, c = sha(b"a"), sha(b"b"), sha(b"c")
    assert chain_id([a]) == a
    ab = "sha256:" + hashlib.sha256(f"{a} {b}".encode()).hexdigest()
    assert chain_id([a, b]) == ab
    assert chain_id([a, b, c]) == "sha256:" + hashlib.sha256(f"{ab} {c}".encode()).hexdigest()
    with pytest.raises(ValueError):
        chain_id([])


# -- layout and version -----------------------------------------------------------


def test_layout_and_version_file(tmp_path: Path) -> None:
    root = tmp_path / "s"
    Store(root)
    assert (root / "version").read_text() == f"{STORE_VERSION}\n"
    for d in ("blobs/sha256", "blobs/sha512", "layers", "tmp", "locks"):
        assert (root / d).is_dir(), d
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    Store(root)  # opens again


def test_newer_storage_version_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "s"
    Store(root)
    (root / "version").write_text(f"{STORE_VERSION + 1}\n")
    with pytest.raises(StoreVersionError, match=r"upgrade|knows") as info:
        Store(root)
    assert "upgrade sbx" in (info.value.hint or "")


# -- blobs --------------------------------------------------------------------------


def test_ingest_verifies_and_stores(store: Store) -> None:
    data = b"hello world" * 1000
    d = sha(data)
    with store.ingest(d, len(data)) as w:
        for i in range(0, len(data), 777):
            w.write(data[i : i + 777])
    assert store.has_blob(d)
    assert store.blob_path(d).read_bytes() == data
    assert stat.S_IMODE(store.blob_path(d).stat().st_mode) == 0o444
    assert store.tmp_entries() == []
    with store.open_blob(d) as f:
        assert f.read() == data


def test_ingest_digest_mismatch_leaves_nothing(store: Store) -> None:
    wrong = sha(b"something else")
    with pytest.raises(DigestMismatch) as info, store.ingest(wrong, 5) as w:
        w.write(b"hello")
    assert info.value.expected == wrong and info.value.actual == sha(b"hello")
    assert wrong in str(info.value)
    assert not store.has_blob(wrong) and not store.has_blob(sha(b"hello"))
    assert store.tmp_entries() == []


def test_ingest_size_mismatch(store: Store) -> None:
    data = b"hello"
    with pytest.raises(DigestMismatch, match="not 6"), store.ingest(sha(data), 6) as w:
        w.write(data)
    with (
        pytest.raises(DigestMismatch, match="more than the 4 promised"),
        store.ingest(sha(data), 4) as w,
    ):
        w.write(data)  # stops at once: a server can't stream forever
    assert store.tmp_entries() == []


def test_ingest_exception_in_body_leaves_nothing(store: Store) -> None:
    with pytest.raises(RuntimeError), store.ingest(sha(b"x"), 1) as w:
        w.write(b"x")
        raise RuntimeError("network died")
    assert not store.has_blob(sha(b"x")) and store.tmp_entries() == []


def test_ingest_without_size(store: Store) -> None:
    with store.ingest(sha(b"abc")) as w:
        w.write(b"abc")
    assert store.blob_size(sha(b"abc")) == 3


def test_put_and_read_blob(store: Store) -> None:
    d = store.put_blob_bytes(b'{"a": 1}')
    assert d == sha(b'{"a": 1}')
    assert store.read_blob(d) == b'{"a": 1}'
    assert store.put_blob_bytes(b'{"a": 1}') == d  # already there
    d512 = "sha512:" + hashlib.sha512(b"x").hexdigest()
    assert store.put_blob_bytes(b"x", d512) == d512
    assert store.blob_path(d512).parent.name == "sha512"


def test_read_blob_detects_corruption_and_size(store: Store) -> None:
    d = store.put_blob_bytes(b"original")
    p = store.blob_path(d)
    p.chmod(0o644)
    p.write_bytes(b"tampered")
    with pytest.raises(DigestMismatch) as info:
        store.read_blob(d)
    assert "corrupted" in (info.value.hint or "")
    big = store.put_blob_bytes(b"x" * 100)
    with pytest.raises(StoreError, match="larger than 10"):
        store.read_blob(big, max_size=10)


def test_missing_blob(store: Store) -> None:
    with pytest.raises(BlobNotFound):
        store.open_blob(sha(b"nope"))
    with pytest.raises(BlobNotFound):
        store.blob_size(sha(b"nope"))


# -- layers ----------------------------------------------------------------------------


def layer_tar(*names: str) -> bytes:
    return h.tar_bytes([h.file(n, n.encode()) for n in names])


def add_layer(store: Store, tar: bytes, parent: str | None = None, **opts: str) -> str:
    diff = sha(tar)
    chain = store.chain_id_of(parent, diff)

    def unpack(dest: Path) -> object:
        return extract_layer(io.BytesIO(tar), dest, owners="xattr", expected_diff_id=diff)

    store.add_layer(chain, diff, unpack, parent=parent, options=opts or None)
    return chain


def test_add_layer_and_info(store: Store) -> None:
    tar = layer_tar("a", "b")
    chain = add_layer(store, tar)
    assert store.has_layer(chain)
    info = store.layer_info(chain)
    assert info.diff_id == sha(tar) and info.parent is None and info.size == 2
    assert (store.layer_path(chain) / "a").read_bytes() == b"a"
    assert store.layer_path(chain) == info.path
    assert json.loads((info.path.parent / "layer.json").read_text())["chain_id"] == chain
    assert store.tmp_entries() == []
    top = add_layer(store, layer_tar("c"), parent=chain)
    assert store.layer_info(top).parent == chain
    assert store.list_layers() == sorted([chain, top])
    assert store.check() == []


def test_add_layer_reuses_and_unpacks_once(store: Store) -> None:
    calls = []

    def unpack(dest: Path) -> None:
        calls.append(dest)
        (dest / "f").write_text("x")

    diff = sha(b"layer")
    info1 = store.add_layer(diff, diff, unpack)
    info2 = store.add_layer(diff, diff, unpack)
    assert len(calls) == 1 and info1.path == info2.path
    assert info1.size == 1  # measured: unpack returned no stats


def test_add_layer_checks_chain_parent_and_options(store: Store) -> None:
    diff = sha(b"layer")
    with pytest.raises(StoreError, match="does not follow"):
        store.add_layer(sha(b"other"), diff, lambda d: None)
    parent = sha(b"parent")
    with pytest.raises(LayerNotFound):
        store.add_layer(store.chain_id_of(parent, diff), diff, lambda d: None, parent=parent)
    store.add_layer(diff, diff, lambda d: None, options={"owners": "xattr"})
    with pytest.raises(StoreError, match="unpacked with"):
        store.add_layer(diff, diff, lambda d: None, options={"owners": "real"})


def test_failed_unpack_leaves_no_layer(store: Store) -> None:
    tar = h.symlink_then_write("/tmp/x")
    with pytest.raises(UnsafeMember):
        add_layer(store, tar)
    assert not store.has_layer(sha(tar))
    assert store.list_layers() == [] and store.tmp_entries() == []
    assert store.check() == []
    good = layer_tar("ok")  # the store still works
    assert store.has_layer(add_layer(store, good))


def test_a_directory_left_without_layer_json_is_replaced(store: Store) -> None:
    diff = sha(b"layer")
    broken = store.layer_path(diff).parent
    broken.mkdir()
    (broken / "junk").write_text("x")
    assert not store.has_layer(diff)
    store.add_layer(diff, diff, lambda d: (d / "f").write_text("y"))
    assert (store.layer_path(diff) / "f").read_text() == "y"
    assert not (broken / "junk").exists()


def test_sync_layers_default(tmp_path: Path) -> None:
    s = Store(tmp_path / "s")
    assert s.sync_layers
    diff = sha(b"l")
    s.add_layer(diff, diff, lambda d: (d / "f").write_text("y"))
    assert s.has_layer(diff)


# -- images ----------------------------------------------------------------------------


def make_image(store: Store, *names: str, files: tuple[str, ...] = ("f",)) -> str:
    tar = layer_tar(*files)
    chain = add_layer(store, tar)
    config = json.dumps({"rootfs": {"diff_ids": [sha(tar)]}, "n": list(names)}).encode()
    config_digest = store.put_blob_bytes(config)
    layer_blob = store.put_blob_bytes(h.gzip_bytes(tar))
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "config": {"digest": config_digest},
            "layers": [{"digest": layer_blob}],
        }
    ).encode()
    manifest_digest = store.put_blob_bytes(manifest)
    store.add_image(
        config_digest=config_digest,
        manifest_digest=manifest_digest,
        chain_ids=[chain],
        names=list(names),
    )
    return config_digest


def test_add_and_list_images(store: Store) -> None:
    image = make_image(store, "docker.io/library/busybox:latest")
    [record] = store.list_images()
    assert record.id == image and record.names == ("docker.io/library/busybox:latest",)
    assert record.size == 1 and record.created.endswith("Z")
    assert record.short_id == image[7:19]
    assert store.get_image(image) == record
    assert store.check() == []


def test_add_image_requires_its_content(store: Store) -> None:
    with pytest.raises(StoreError, match="not in the store"):
        store.add_image(config_digest=sha(b"c"), manifest_digest=sha(b"m"), chain_ids=[sha(b"l")])
    assert store.list_images() == []


def test_add_image_again_adds_names(store: Store) -> None:
    image = make_image(store, "r/a:1")
    record = store.get_image(image)
    store.add_image(
        config_digest=image,
        manifest_digest=record.manifest_digest,
        chain_ids=record.layers,
        names=["r/a:2"],
    )
    assert store.get_image(image).names == ("r/a:1", "r/a:2")
    assert store.get_image(image).created == record.created


def test_tag_moves_a_name_and_untag(store: Store) -> None:
    one = make_image(store, "r/app:latest", files=("one",))
    two = make_image(store, files=("two",))
    store.tag(two, "r/app:latest")
    assert store.get_image(one).names == ()
    assert store.get_image(two).names == ("r/app:latest",)
    store.tag(two, "r/app:v2")
    assert store.untag("r/app:latest") == two
    assert store.get_image(two).names == ("r/app:v2",)
    with pytest.raises(ImageNotFound):
        store.untag("r/app:latest")
    with pytest.raises(ImageNotFound):
        store.tag(sha(b"nope"), "r/x:1")


@pytest.mark.parametrize(
    "bad", ["", "no-tag", "has space:1", "sha256:" + "a" * 64, "abc123", "x:\n"]
)
def test_invalid_names(store: Store, bad: str) -> None:
    image = make_image(store)
    with pytest.raises(StoreError):
        store.tag(image, bad)


def test_resolve(store: Store) -> None:
    image = make_image(store, "docker.io/library/busybox:latest")
    hexpart = image.partition(":")[2]
    for ref in (
        "docker.io/library/busybox:latest",
        image,
        hexpart[:3],
        hexpart[:12],
        "sha256:" + hexpart[:5],
        hexpart,
    ):
        assert store.resolve(ref).id == image, ref
    for ref in ("busybox:latest", "docker.io/library/busybox:other", "sha512:" + hexpart[:6]):
        with pytest.raises(ImageNotFound):
            store.resolve(ref)


def test_resolve_ambiguous_prefix(store: Store) -> None:
    # Ids sharing a prefix, written straight into the index: resolve only reads it.
    ids = ["sha256:abc1" + "0" * 60, "sha256:abc2" + "0" * 60]
    record = {"names": [], "manifest": sha(b"m"), "layers": [], "created": "", "size": 0}
    (store.root / "images.json").write_text(json.dumps({"images": dict.fromkeys(ids, record)}))
    with pytest.raises(AmbiguousImage) as info:
        store.resolve("abc")
    assert info.value.candidates == ids
    assert "abc1000000000" not in str(info.value) and "abc100000000" in str(info.value)
    assert "more digits" in (info.value.hint or "")
    assert store.resolve("abc2").id == ids[1]
    assert store.resolve("sha256:abc1").id == ids[0]
    with pytest.raises(ImageNotFound):
        store.resolve("ab")  # under 3 digits: never a prefix


def test_remove_image_respects_in_use(tmp_path: Path) -> None:
    used: set[str] = set()
    store = Store(tmp_path / "s", in_use=used.__contains__, sync_layers=False)
    image = make_image(store, "r/a:1")
    used.add(image)
    with pytest.raises(ImageInUse):
        store.remove_image(image)
    assert store.get_image(image)
    removed = store.remove_image(image, force=True)
    assert removed.id == image and store.list_images() == []
    with pytest.raises(ImageNotFound):
        store.remove_image(image)


# -- prune -------------------------------------------------------------------------------


def test_prune_frees_what_no_image_needs(store: Store) -> None:
    keep = make_image(store, "r/keep:1", files=("k",))
    drop = make_image(store, "r/drop:1", files=("d",))
    stray = store.put_blob_bytes(b"stray")
    drop_record = store.get_image(drop)
    store.remove_image(drop)
    result = store.prune()
    assert stray in result.blobs and drop in result.blobs
    assert drop_record.manifest_digest in result.blobs
    assert result.layers == list(drop_record.layers)
    assert result.bytes_freed > 0
    keep_record = store.get_image(keep)
    manifest = json.loads(store.read_blob(keep_record.manifest_digest))
    for d in (keep, keep_record.manifest_digest, manifest["layers"][0]["digest"]):
        assert store.has_blob(d), d
    assert store.has_layer(keep_record.layers[0])
    assert not store.has_layer(drop_record.layers[0])
    assert store.check() == [] and store.tmp_entries() == []
    assert store.prune().blobs == []


def test_prune_keeps_parent_layers(store: Store) -> None:
    base = add_layer(store, layer_tar("base"))
    top = add_layer(store, layer_tar("top"), parent=base)
    config = store.put_blob_bytes(b"{}")
    manifest = store.put_blob_bytes(
        json.dumps({"config": {"digest": config}, "layers": []}).encode()
    )
    # A (sloppy) image listing only its top layer still keeps the base.
    store.add_image(config_digest=config, manifest_digest=manifest, chain_ids=[top])
    assert store.prune().layers == []
    assert store.has_layer(base)


def test_prune_inside_protect_is_refused(store: Store) -> None:
    with store.protect(), pytest.raises(StoreError, match="wait for itself"):
        store.prune()


def test_prune_removes_layers_with_read_only_directories(store: Store) -> None:
    tar = h.tar_bytes([h.directory("ro", mode=0o555), h.file("ro/f", b"x", mode=0o400)])
    chain = add_layer(store, tar)
    assert store.prune().layers == [chain]
    assert store.list_layers() == []


def test_check_reports_missing_content(store: Store) -> None:
    image = make_image(store, "r/a:1")
    record = store.get_image(image)
    store.blob_path(record.manifest_digest).unlink()
    os.rename(store.layer_path(record.layers[0]).parent / "layer.json", store.root / "moved")
    problems = store.check()
    assert any("blob" in p and record.manifest_digest in p for p in problems)
    assert any("layer" in p and "missing" in p for p in problems)
    assert any("no layer.json" in p for p in problems)


def test_corrupt_index_is_a_clear_error(store: Store) -> None:
    (store.root / "images.json").write_text("{not json")
    with pytest.raises(StoreError, match="corrupt"):
        store.list_images()
