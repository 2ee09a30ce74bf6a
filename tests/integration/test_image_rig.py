"""The test images themselves (tests/image_rig.py): valid OCI layouts, with the
tree they promise once unpacked by a peer (umoci), pushable and pullable back
with skopeo. Run as root (scripts/test.sh): umoci unpacks with real ownership."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import NOT_ROOT
from image_rig import (
    BUSYBOX_ABSENT,
    BUSYBOX_CONFIG,
    BUSYBOX_EXPECTED_FILES,
    HARDLINK,
    IMAGE_PATH,
    LAYER_MEDIA_TYPES,
    OCI_INDEX,
    OPAQUE_DIR,
    SUID_FILE,
    ImageLayout,
    MultiArchLayout,
    PushedImages,
    build_busybox_layout,
    host_arch,
    iter_layer_names,
    sha256_digest,
)

pytest_plugins = ["registry_rig", "image_rig"]


@pytest.fixture(autouse=True)
def _root() -> None:
    if os.geteuid() != 0:
        pytest.skip(NOT_ROOT)


def need(*tools: str) -> None:
    for tool in tools:
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed: run scripts/setup.sh")


def skopeo(*args: str, timeout: float = 300) -> str:
    need("skopeo")
    p = subprocess.run(
        ["skopeo", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    assert p.returncode == 0, f"skopeo {' '.join(args)}: {p.stderr}"
    return p.stdout


def check_blobs(layout: ImageLayout) -> None:
    """Every blob is stored under its own digest; diff_ids match the layers."""
    blobs = layout.path / "blobs" / "sha256"
    for blob in blobs.iterdir():
        assert sha256_digest(blob.read_bytes()) == f"sha256:{blob.name}"
    manifest = layout.manifest()
    assert [entry["digest"] for entry in manifest["layers"]] == layout.layer_digests
    assert layout.config()["rootfs"]["diff_ids"] == layout.diff_ids
    unpack = {"gzip": ["gzip", "-dc"], "zstd": ["zstd", "-dcq"], "tar": ["cat"]}
    kind = layout.layer_media_type.rsplit("+", 1)[-1].rsplit(".", 1)[-1]
    for digest, diff_id in zip(layout.layer_digests, layout.diff_ids, strict=True):
        with open(layout.blob(digest), "rb") as f:
            tar = subprocess.run(unpack[kind], stdin=f, capture_output=True, check=True).stdout
        assert sha256_digest(tar) == diff_id


def umoci_unpack(layout_path: Path, dest: Path) -> Path:
    need("umoci")
    p = subprocess.run(
        ["umoci", "unpack", "--image", f"{layout_path}:latest", str(dest)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert p.returncode == 0, p.stderr
    return dest / "rootfs"


def test_busybox_layout_is_valid_oci(busybox_layout: ImageLayout) -> None:
    raw = skopeo("inspect", "--raw", busybox_layout.ref)
    assert sha256_digest(raw.encode()) == busybox_layout.manifest_digest
    info = json.loads(skopeo("inspect", busybox_layout.ref))
    assert info["Architecture"] == host_arch()
    assert info["Labels"] == BUSYBOX_CONFIG["Labels"]
    assert len(info["Layers"]) == 3
    config = json.loads(skopeo("inspect", "--config", busybox_layout.ref))
    assert config["config"]["Cmd"] == ["sh"]
    assert config["config"]["Volumes"] == {"/vol": {}}
    assert busybox_layout.layer_media_type == LAYER_MEDIA_TYPES["gzip"]
    check_blobs(busybox_layout)


def test_busybox_layout_is_reproducible(busybox_layout: ImageLayout, tmp_path: Path) -> None:
    again = build_busybox_layout(tmp_path / "again")
    assert again.manifest_digest == busybox_layout.manifest_digest
    assert again.layer_digests == busybox_layout.layer_digests


def test_busybox_layers_hold_the_special_entries(busybox_layout: ImageLayout) -> None:
    third = list(iter_layer_names(busybox_layout, 2))
    assert "data/.wh.a" in third
    assert f"{OPAQUE_DIR}/.wh..wh..opq" in third
    assert third[-1] == HARDLINK[0]  # hard links after their targets


def test_umoci_unpacks_busybox_to_the_promised_tree(
    busybox_layout: ImageLayout, tmp_path: Path
) -> None:
    rootfs = umoci_unpack(busybox_layout.path, tmp_path / "bundle")
    for name, data in BUSYBOX_EXPECTED_FILES.items():
        assert (rootfs / name).read_bytes() == data, name
    for name in BUSYBOX_ABSENT:
        assert not (rootfs / name).exists(), name
    assert sorted(os.listdir(rootfs / OPAQUE_DIR)) == ["z"]
    assert sorted(os.listdir(rootfs / "data")) == ["b", "c", "d", "d-hardlink"]
    link, target = (rootfs / name for name in HARDLINK)
    assert link.stat().st_ino == target.stat().st_ino
    suid = (rootfs / SUID_FILE).stat()
    assert (suid.st_mode & 0o7777, suid.st_uid) == (0o4755, 0)
    home = (rootfs / "home/tester").stat()
    assert (home.st_uid, home.st_gid) == (1000, 1000)
    assert (rootfs / "tmp").stat().st_mode & 0o7777 == 0o1777
    assert os.readlink(rootfs / "bin/sh") == "busybox"
    out = subprocess.run(
        ["chroot", str(rootfs), "/bin/sh", "-c", "echo hi; cat /data/b"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout == "hi\nb\n"


def test_zstd_layout(busybox_layout_zstd: ImageLayout, busybox_layout: ImageLayout) -> None:
    assert busybox_layout_zstd.layer_media_type == LAYER_MEDIA_TYPES["zstd"]
    manifest = json.loads(skopeo("inspect", "--raw", busybox_layout_zstd.ref))
    assert {entry["mediaType"] for entry in manifest["layers"]} == {LAYER_MEDIA_TYPES["zstd"]}
    # The same tars, compressed differently.
    assert busybox_layout_zstd.diff_ids == busybox_layout.diff_ids
    check_blobs(busybox_layout_zstd)


def test_multiarch_layout(busybox_multiarch_layout: MultiArchLayout) -> None:
    index = json.loads(skopeo("inspect", "--raw", busybox_multiarch_layout.ref))
    assert index["mediaType"] == OCI_INDEX
    platforms = {
        (m["platform"]["architecture"], m["platform"].get("variant")) for m in index["manifests"]
    }
    assert len(platforms) == 2
    assert (host_arch(), None) in platforms


def test_pushed_images_pull_back(pushed_images: PushedImages, tmp_path: Path) -> None:
    p = pushed_images
    assert p.busybox.ref.endswith("/sbx/busybox:1")
    assert p.busybox.digest == p.busybox.layout.manifest_digest  # pushed unchanged
    assert p.busybox_zstd.digest == p.busybox_zstd.layout.manifest_digest
    assert p.multi.digest == p.multi.layout.index_digest
    for image in p.all():
        raw = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{image.ref}")
        assert sha256_digest(raw.encode()) == image.digest, image.ref
        assert json.loads(raw)["mediaType"] == image.media_type, image.ref
        dest = tmp_path / image.repository.replace("/", "-")
        skopeo(
            "copy", "--quiet", "--insecure-policy", "--src-tls-verify=false",
            f"docker://{image.by_digest}", f"oci:{dest}",
        )  # fmt: skip
        assert (dest / "index.json").is_file()
    v2s2 = json.loads(
        skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{p.busybox_v2s2.ref}")
    )
    assert {entry["mediaType"] for entry in v2s2["layers"]} == {
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    }
    index = json.loads(skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{p.multi.ref}"))
    assert {m["digest"] for m in index["manifests"]} == set(p.multi.platform_digests.values())


def test_debian_layout(debian_layout: ImageLayout, tmp_path: Path) -> None:
    assert len(debian_layout.layer_digests) == 3
    check_blobs(debian_layout)
    config = json.loads(skopeo("inspect", "--config", debian_layout.ref))
    assert config["config"]["Cmd"] == ["python3"]
    sizes = [int(entry.get("size", 0)) for entry in debian_layout.manifest()["layers"]]
    assert sum(sizes) > 40_000_000
    rootfs = umoci_unpack(debian_layout.path, tmp_path / "bundle")
    out = subprocess.run(
        ["/usr/sbin/chroot", str(rootfs), "sh", "-c", ". /etc/profile.d/sbx.sh; sbx-hello; "
         "echo $SBX_TEST_IMAGE; test ! -e /etc/motd && echo no-motd"],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": IMAGE_PATH},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("hello from CPython 3.")
    assert out.stdout.endswith("debian-python3\nno-motd\n")
    uncompressed = sum(
        int(s) for s in subprocess.run(
            ["du", "-sb", "--apparent-size", str(rootfs)], capture_output=True, text=True,
            check=True,
        ).stdout.split()[:1]
    )  # fmt: skip
    assert uncompressed >= 100_000_000
