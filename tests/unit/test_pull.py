"""sandbox.images.pull with a fake registry: the order of a pull, parallel downloads
that really overlap, failures that leave nothing half-visible, platform selection,
naming, and ensure_image's policies.

Layers are unpacked in this process (`run_here`) with owners="xattr" and aufs
whiteouts, which need no privilege; the user-namespace runner is exercised by the
integration tests.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest
from image_rig import layer_tar

from sandbox.images import pull as p
from sandbox.images.config import ImageConfigError
from sandbox.images.progress import Lines
from sandbox.images.store import DigestMismatch, ImageNotFound, Store
from sandbox.registry import media
from sandbox.registry.errors import (
    ManifestError,
    NotFoundError,
    PlatformError,
    RegistryConnectionError,
)
from sandbox.registry.reference import parse_reference

UNPACKER = p.Unpacker(runner=p.run_here, owners="xattr", whiteout_format="aufs")


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Image:
    layers: list[bytes]  # compressed blobs
    diff_ids: list[str]
    config: bytes
    manifest: bytes
    media_type: str = media.OCI_MANIFEST

    @property
    def id(self) -> str:
        return sha(self.config)

    @property
    def digest(self) -> str:
        return sha(self.manifest)


def make_image(
    layers: list[dict[str, Any]], *, arch: str = "amd64", cmd: list[str] | None = None,
    config_media_type: str = media.OCI_CONFIG,
) -> Image:
    tars = [layer_tar(entries) for entries in layers]
    blobs = [gzip.compress(t, mtime=0) for t in tars]
    diff_ids = [sha(t) for t in tars]
    config = json.dumps({
        "architecture": arch,
        "os": "linux",
        "config": {"Cmd": cmd or ["sh"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }, sort_keys=True).encode()
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": media.OCI_MANIFEST,
        "config": {"mediaType": config_media_type, "digest": sha(config), "size": len(config)},
        "layers": [{"mediaType": media.OCI_LAYER_GZIP, "digest": sha(b), "size": len(b)}
                   for b in blobs],
    }).encode()
    return Image(blobs, diff_ids, config, manifest)


def three_layers() -> Image:
    return make_image([
        {"bin": None, "bin/sh": b"#!shell\n", "etc": None,
         "etc/passwd": b"root:x:0:0::/:/bin/sh\n"},
        {"data": None, "data/a": b"a\n", "data/b": b"b\n"},
        {"data": None, "data/.wh.a": b"", "data/c": b"c\n"},
    ])


@dataclass
class FakeRegistry:
    """A RegistrySource: manifests by (repository, reference), blobs by digest."""

    registry: str = "registry.test"
    manifests: dict[tuple[str, str], tuple[str, bytes]] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)
    fail: dict[str, int] = field(default_factory=dict)  # digest -> failures left
    on_fetch: Callable[[str], None] | None = None
    fetched: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, repo: str, tag: str, image: Image) -> None:
        self.manifests[(repo, tag)] = (image.media_type, image.manifest)
        self.manifests[(repo, image.digest)] = (image.media_type, image.manifest)
        self.blobs[image.id] = image.config
        for blob in image.layers:
            self.blobs[sha(blob)] = blob

    def add_index(self, repo: str, tag: str, entries: list[tuple[str, str, Image]]) -> str:
        index = json.dumps({
            "schemaVersion": 2,
            "mediaType": media.OCI_INDEX,
            "manifests": [
                {"mediaType": media.OCI_MANIFEST, "digest": img.digest,
                 "size": len(img.manifest), "platform": {"os": "linux", "architecture": arch,
                                                          **({"variant": v} if v else {})}}
                for arch, v, img in entries
            ],
        }).encode()
        for _, _, img in entries:
            self.add(repo, img.digest, img)
        self.manifests[(repo, tag)] = (media.OCI_INDEX, index)
        self.manifests[(repo, sha(index))] = (media.OCI_INDEX, index)
        return sha(index)

    def get_manifest(self, repository: str, reference: str) -> tuple[str, str, bytes]:
        try:
            media_type, data = self.manifests[(repository, reference)]
        except KeyError:
            raise NotFoundError(
                f"image not found: {self.registry}/{repository}:{reference}"
            ) from None
        return media_type, sha(data), data

    def fetch_blob(self, repository: str, digest: str, out: IO[bytes], *,
                   expected_size: int | None = None,
                   progress: Callable[[int, int | None], None] | None = None) -> int:
        with self.lock:
            self.fetched.append(digest)
        if self.on_fetch is not None:
            self.on_fetch(digest)
        data = self.blobs[digest]
        with self.lock:
            left = self.fail.get(digest, 0)
            if left:
                self.fail[digest] = left - 1
        if left:
            out.write(data[: len(data) // 2])
            raise RegistryConnectionError(f"connection reset fetching {digest}")
        for i in range(0, len(data), 4096):
            out.write(data[i:i + 4096])
            if progress:
                progress(min(i + 4096, len(data)), len(data))
        return len(data)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store", sync_layers=False)


@pytest.fixture
def fake() -> FakeRegistry:
    return FakeRegistry()


def do_pull(store: Store, fake: FakeRegistry, ref: str, **kw: Any) -> p.PullResult:
    return p.pull(parse_reference(ref), store, fake, UNPACKER, **kw)


def test_pull_stores_blobs_layers_and_the_image(store: Store, fake: FakeRegistry) -> None:
    image = three_layers()
    fake.add("app", "1", image)
    result = do_pull(store, fake, "registry.test/app:1")
    record = result.image
    assert record.id == image.id
    assert record.manifest_digest == image.digest
    assert record.names == ("registry.test/app:1", f"registry.test/app@{image.digest}")
    assert len(record.layers) == 3
    assert result.unpacked == list(record.layers)
    # Blobs are kept (push needs the compressed layers); layers are unpacked in order.
    for blob in (image.config, image.manifest, *image.layers):
        assert store.has_blob(sha(blob))
    dirs = p.layer_dirs(store, record)
    assert [d.name for d in dirs] == ["diff"] * 3
    assert (dirs[0] / "bin" / "sh").read_bytes() == b"#!shell\n"
    assert (dirs[2] / "data" / ".wh.a").exists()  # aufs whiteout recorded, not applied
    assert store.layer_info(record.layers[0]).options == {"owners": "xattr", "whiteouts": "aufs"}
    assert store.check() == []
    assert result.config.cmd == ("sh",)


def test_second_pull_downloads_nothing(store: Store, fake: FakeRegistry) -> None:
    image = three_layers()
    fake.add("app", "1", image)
    do_pull(store, fake, "registry.test/app:1")
    fake.fetched.clear()
    result = do_pull(store, fake, "registry.test/app:1")
    assert fake.fetched == []
    assert result.downloaded == [] and result.unpacked == []


def test_shared_layers_are_not_downloaded_again(store: Store, fake: FakeRegistry) -> None:
    base = {"bin": None, "bin/sh": b"#!shell\n"}
    first = make_image([base, {"a": b"a\n"}])
    second = make_image([base, {"b": b"b\n"}])
    fake.add("first", "1", first)
    fake.add("second", "1", second)
    do_pull(store, fake, "registry.test/first:1")
    fake.fetched.clear()
    result = do_pull(store, fake, "registry.test/second:1")
    assert sha(first.layers[0]) not in fake.fetched
    assert result.downloaded == [sha(second.layers[1])]
    assert len(result.unpacked) == 1


def test_downloads_run_in_parallel(store: Store, fake: FakeRegistry) -> None:
    image = three_layers()
    fake.add("app", "1", image)
    layer_digests = {sha(b) for b in image.layers}
    # Each layer download waits until all three are in flight: only parallel
    # downloads get past the barrier (a serial pull would time out on it).
    barrier = threading.Barrier(3, timeout=10)
    threads: set[str] = set()

    def gate(digest: str) -> None:
        if digest in layer_digests:
            threads.add(threading.current_thread().name)
            barrier.wait()

    fake.on_fetch = gate
    do_pull(store, fake, "registry.test/app:1")
    assert len(threads) == 3
    # Joined before unpacking: no download thread outlives the pull.
    assert not [t for t in threading.enumerate() if t.name.startswith("sbx-pull")]


def test_at_most_three_downloads_at_once(store: Store, fake: FakeRegistry) -> None:
    image = make_image([{f"f{i}": b"x" * i} for i in range(6)])
    fake.add("app", "1", image)
    active = 0
    peak = 0
    lock = threading.Lock()

    def track(digest: str) -> None:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.05)
        with lock:
            active -= 1

    fake.on_fetch = track
    do_pull(store, fake, "registry.test/app:1")
    assert peak == p.MAX_WORKERS


def test_a_failed_download_leaves_no_image_and_the_next_pull_works(
    store: Store, fake: FakeRegistry
) -> None:
    image = three_layers()
    fake.add("app", "1", image)
    fake.fail[sha(image.layers[1])] = 1
    with pytest.raises(RegistryConnectionError):
        do_pull(store, fake, "registry.test/app:1")
    assert store.list_images() == []
    assert store.list_layers() == []  # nothing unpacked before every download is in
    assert not store.has_blob(sha(image.layers[1]))
    assert store.tmp_entries() == []  # the half-written blob is gone
    assert store.check() == []
    result = do_pull(store, fake, "registry.test/app:1")
    assert result.image.id == image.id
    assert store.check() == []


def test_a_wrong_layer_is_refused_and_nothing_is_named(store: Store, fake: FakeRegistry) -> None:
    image = three_layers()
    fake.add("app", "1", image)
    # The registry serves other bytes under the layer's digest: the store's
    # ingest refuses them (the real client would too, while streaming).
    fake.blobs[sha(image.layers[2])] = gzip.compress(b"not a tar" * 10)
    with pytest.raises(DigestMismatch):
        do_pull(store, fake, "registry.test/app:1")
    assert store.list_images() == []


def test_not_found_is_the_registrys_error(store: Store, fake: FakeRegistry) -> None:
    with pytest.raises(NotFoundError, match="image not found"):
        do_pull(store, fake, "registry.test/nope:1")


def test_an_index_is_narrowed_to_the_wanted_platform(store: Store, fake: FakeRegistry) -> None:
    amd = make_image([{"arch": b"amd64\n"}], arch="amd64")
    arm = make_image([{"arch": b"arm64\n"}], arch="arm64")
    index_digest = fake.add_index("multi", "1", [("amd64", "", amd), ("arm64", "v8", arm)])
    result = do_pull(store, fake, "registry.test/multi:1",
                     platform=media.parse_platform("linux/arm64"))
    assert result.image.id == arm.id
    assert result.resolved.index_digest == index_digest
    assert index_digest in result.image.extra_blobs
    assert result.warnings == []
    result = do_pull(store, fake, "registry.test/multi:1",
                     platform=media.parse_platform("linux/amd64"))
    assert result.image.id == amd.id


def test_no_matching_platform_lists_what_there_is(store: Store, fake: FakeRegistry) -> None:
    amd = make_image([{"arch": b"amd64\n"}], arch="amd64")
    fake.add_index("multi", "1", [("amd64", "", amd)])
    with pytest.raises(PlatformError, match=r"no variant for linux/s390x; available: linux/amd64"):
        do_pull(store, fake, "registry.test/multi:1",
                platform=media.parse_platform("linux/s390x"))
    assert store.list_images() == []


def test_a_single_manifest_for_another_platform_is_a_warning(
    store: Store, fake: FakeRegistry
) -> None:
    image = make_image([{"a": b"a"}], arch="s390x")
    fake.add("app", "1", image)
    result = do_pull(store, fake, "registry.test/app:1",
                     platform=media.parse_platform("linux/amd64"))
    assert result.warnings == [
        "image platform (linux/s390x) does not match the expected platform (linux/amd64)"
    ]


def test_schema1_is_refused(store: Store, fake: FakeRegistry) -> None:
    fake.manifests[("old", "1")] = (
        media.DOCKER_SCHEMA1_SIGNED, json.dumps({"schemaVersion": 1, "name": "old"}).encode()
    )
    with pytest.raises(ManifestError, match="schema 1") as info:
        do_pull(store, fake, "registry.test/old:1")
    assert "re-push" in (info.value.hint or "")


def test_an_artifact_is_not_an_image(store: Store, fake: FakeRegistry) -> None:
    image = make_image([{"a": b"a"}], config_media_type="application/vnd.cncf.helm.config.v1+json")
    fake.add("chart", "1", image)
    with pytest.raises(p.PullError, match="not a container image"):
        do_pull(store, fake, "registry.test/chart:1")


def test_config_and_manifest_must_agree_on_layers(store: Store, fake: FakeRegistry) -> None:
    image = three_layers()
    doc = json.loads(image.config)
    doc["rootfs"]["diff_ids"] = doc["rootfs"]["diff_ids"][:2]
    config = json.dumps(doc).encode()
    manifest = json.loads(image.manifest)
    manifest["config"].update(digest=sha(config), size=len(config))
    broken = Image(image.layers, image.diff_ids, config, json.dumps(manifest).encode())
    fake.add("app", "1", broken)
    with pytest.raises(ImageConfigError, match="3 layers but its config lists 2"):
        do_pull(store, fake, "registry.test/app:1")


def test_pull_by_digest_names_the_digest(store: Store, fake: FakeRegistry) -> None:
    image = three_layers()
    fake.add("app", "1", image)
    result = do_pull(store, fake, f"registry.test/app@{image.digest}")
    assert result.image.names == (f"registry.test/app@{image.digest}",)
    assert p.repo_tags(result.image) == []
    assert p.repo_digests(result.image) == [f"registry.test/app@{image.digest}"]


def test_progress_lines(store: Store, fake: FakeRegistry) -> None:
    image = three_layers()
    fake.add("app", "1", image)
    out = io.StringIO()
    do_pull(store, fake, "registry.test/app:1", progress=Lines(out))
    lines = out.getvalue().splitlines()
    assert lines[0] == f"Copying config {image.id} done"
    assert sorted(lines[1:4]) == sorted(f"Copying blob {sha(b)} done" for b in image.layers)
    assert lines[-1] == "Writing manifest to image destination"
    out = io.StringIO()
    do_pull(store, fake, "registry.test/app:1", progress=Lines(out))
    assert f"Copying blob {sha(image.layers[0])} skipped: already exists" in out.getvalue()


def test_the_same_config_in_two_manifests_keeps_both(store: Store, fake: FakeRegistry) -> None:
    image = three_layers()
    fake.add("gzip", "1", image)
    # The same image with its manifest written differently (as a zstd or schema 2
    # copy would be): one image id, two manifests.
    other = json.loads(image.manifest)
    other["annotations"] = {"copy": "2"}
    copy = Image(image.layers, image.diff_ids, image.config, json.dumps(other).encode())
    fake.add("copy", "1", copy)
    do_pull(store, fake, "registry.test/gzip:1")
    record = do_pull(store, fake, "registry.test/copy:1").image
    assert record.manifest_digest == copy.digest
    assert image.digest in record.extra_blobs  # the first manifest survives prune
    assert p.manifest_for(store, record, "registry.test/gzip:1") == image.digest
    assert p.manifest_for(store, record, "registry.test/copy:1") == copy.digest
    store.prune()
    assert store.has_blob(image.digest)


# --- ensure_image -------------------------------------------------------------------


def test_ensure_image_policies(store: Store, fake: FakeRegistry) -> None:
    image = three_layers()
    fake.add("app", "1", image)
    connect = lambda ref: fake  # noqa: E731
    with pytest.raises(ImageNotFound):
        p.ensure_image("registry.test/app:1", store, "never", unpacker=UNPACKER,
                       connect_fn=connect)
    record = p.ensure_image("registry.test/app:1", store, "missing", unpacker=UNPACKER,
                            connect_fn=connect)
    assert record.id == image.id
    fake.fetched.clear()
    fake.manifests.clear()  # "missing" must not ask the registry again
    assert p.ensure_image("registry.test/app:1", store, unpacker=UNPACKER,
                          connect_fn=connect).id == image.id
    assert p.ensure_image(image.id, store, "never", unpacker=UNPACKER).id == image.id
    assert p.ensure_image(image.id[7:19], store, "always", unpacker=UNPACKER).id == image.id
    with pytest.raises(NotFoundError):
        p.ensure_image("registry.test/app:1", store, "always", unpacker=UNPACKER,
                       connect_fn=connect)
    with pytest.raises(ImageNotFound):
        p.ensure_image("sha256:" + "0" * 64, store, "missing", unpacker=UNPACKER,
                       connect_fn=connect)


def test_ensure_image_refuses_an_unknown_policy(store: Store) -> None:
    with pytest.raises(Exception, match="unknown pull policy"):
        p.ensure_image("busybox", store, "sometimes", unpacker=UNPACKER)  # type: ignore[arg-type]


def test_a_repulled_tag_leaves_the_old_image_dangling(store: Store, fake: FakeRegistry) -> None:
    old = make_image([{"v": b"1\n"}])
    new = make_image([{"v": b"2\n"}])
    fake.add("app", "1", old)
    do_pull(store, fake, "registry.test/app:1")
    fake.add("app", "1", new)
    do_pull(store, fake, "registry.test/app:1")
    # As in podman: the tag moved, and the old image has no names left.
    assert store.get_image(old.id).names == ()
    assert store.get_image(new.id).names == (
        "registry.test/app:1", f"registry.test/app@{new.digest}")
