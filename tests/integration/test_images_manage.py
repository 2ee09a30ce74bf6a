"""Managing pulled images as the test user: `sbx images` (table, json, -q, templates),
`tag`, `rmi` (and the unpacked layer trees gone from disk, removed from inside the
user namespace since their files belong to subordinate ids), `image inspect`, and
`image prune`."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest
from helpers import SbxRunner, remove_tree
from image_rig import BUSYBOX_CONFIG, ImageLayout, PushedImages
from test_images_pull import Box, make_box

pytest_plugins = ["registry_rig", "image_rig"]


@pytest.fixture
def box(sbx: SbxRunner) -> Iterator[Box]:
    b = make_box(sbx)
    yield b
    remove_tree(b.root)  # as root: layer files belong to subordinate ids


def test_images_listing(box: Box, pushed_images: PushedImages) -> None:
    busybox, multi = pushed_images.busybox, pushed_images.multi
    box.run("pull", "-q", busybox.ref)
    box.run("pull", "-q", "--platform", "linux/arm64", multi.ref)
    lines = box.run("images").stdout.splitlines()
    assert lines[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    repos = sorted(line.split()[0] for line in lines[1:])
    assert repos == sorted([f"{busybox.host}/sbx/busybox", f"{multi.host}/sbx/multi"])
    assert all("ago" in line and "MB" in line for line in lines[1:])
    doc = json.loads(box.run("images", "--format", "json").stdout)
    by_tag = {d["RepoTags"][0]: d for d in doc}
    layout = busybox.layout
    assert isinstance(layout, ImageLayout)
    entry = by_tag[busybox.ref]
    assert entry["Id"] == layout.config_digest.partition(":")[2]
    assert entry["Digest"] == busybox.digest
    assert entry["RepoDigests"] == [busybox.by_digest]
    assert entry["Labels"] == BUSYBOX_CONFIG["Labels"]
    assert entry["Size"] > 2_000_000  # the uncompressed layers (busybox is ~2 MB)
    quiet = box.run("images", "-q").stdout.split()
    assert sorted(quiet) == sorted(d["Id"][:12] for d in doc)
    digests = box.run("images", "--digests", busybox.ref.rsplit(":", 1)[0]).stdout
    assert busybox.digest in digests
    out = box.run("images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}", "sbx/busybox")
    assert out.stdout.strip() == f"{busybox.ref} {entry['Id'][:12]}"


def test_tag_and_rmi(box: Box, pushed_images: PushedImages) -> None:
    busybox = pushed_images.busybox
    image_id = box.run("pull", "-q", busybox.ref).stdout.strip()
    dirs = box.layer_dirs(busybox.ref)
    assert all(d.is_dir() for d in dirs)
    box.run("tag", busybox.ref, "localhost/mine:2", "extra")
    tags = box.inspect(image_id)["RepoTags"]
    assert tags == [busybox.ref, "localhost/mine:2", "docker.io/library/extra:latest"]
    # By id, an image with several tags needs --force (podman's rule).
    p = box.run("rmi", image_id[:12], check=False)
    assert p.returncode == 125 and "more than one tag" in p.stderr
    # By name: only the name goes while others remain.
    assert box.run("rmi", "extra", "mine:2").stdout.splitlines() == [
        "Untagged: docker.io/library/extra:latest", "Untagged: localhost/mine:2"]
    assert all(d.is_dir() for d in dirs)
    out = box.run("rmi", busybox.ref).stdout.splitlines()
    assert out == [f"Untagged: {busybox.ref}", f"Deleted: {image_id}"]
    # The layer trees (with files of subordinate ids) are gone, and nothing is left
    # half-removed in the store's temporary area.
    assert not any(d.exists() for d in dirs)
    assert os.listdir(box.storage / "layers") == []
    assert os.listdir(box.storage / "tmp") == []
    assert os.listdir(box.storage / "blobs" / "sha256") == []
    p = box.run("rmi", busybox.ref, check=False)
    assert p.returncode == 125 and "image not known" in p.stderr


def test_rmi_keeps_layers_another_image_shares(box: Box, pushed_images: PushedImages) -> None:
    box.run("pull", "-q", pushed_images.busybox.ref)
    box.run("pull", "-q", "--platform", "linux/arm64", pushed_images.multi.ref)
    dirs = box.layer_dirs(pushed_images.multi.ref)
    box.run("rmi", pushed_images.busybox.ref)
    assert all(d.is_dir() for d in dirs)
    box.run("image", "inspect", pushed_images.multi.ref)


def test_image_inspect(box: Box, pushed_images: PushedImages) -> None:
    busybox = pushed_images.busybox
    box.run("pull", "-q", busybox.ref)
    layout = busybox.layout
    assert isinstance(layout, ImageLayout)
    doc = box.inspect(busybox.ref)
    assert doc["Id"] == layout.config_digest.partition(":")[2]
    assert doc["Digest"] == busybox.digest
    assert doc["RepoTags"] == [busybox.ref]
    assert doc["RepoDigests"] == [busybox.by_digest]
    assert doc["Created"] == "2023-11-14T22:13:20Z"
    assert doc["Os"] == "linux"
    assert doc["Config"]["Cmd"] == BUSYBOX_CONFIG["Cmd"]
    assert doc["Config"]["Env"] == BUSYBOX_CONFIG["Env"]
    assert doc["RootFS"] == {"Type": "layers", "Layers": layout.diff_ids}
    assert doc["ManifestType"] == "application/vnd.oci.image.manifest.v1+json"
    assert doc["Size"] > 2_000_000
    assert len(doc["History"]) == 3
    out = box.run("image", "inspect", "--format", "{{.Id}} {{.Config.Cmd}} {{.Os}}",
                  busybox.ref).stdout
    assert out.strip() == f"{doc['Id']} [sh] linux"
    p = box.run("image", "inspect", busybox.ref, "nope:1", check=False)
    assert p.returncode == 125 and "image not known: nope:1" in p.stderr
    assert len(json.loads(p.stdout)) == 1


def test_image_prune(box: Box, pushed_images: PushedImages) -> None:
    busybox, multi = pushed_images.busybox, pushed_images.multi
    old = box.run("pull", "-q", busybox.ref).stdout.strip()
    new = box.run("pull", "-q", "--platform", "linux/arm64", multi.ref).stdout.strip()
    # The busybox tag moves to the other image: the old one is left without names
    # (dangling), as a re-pulled tag leaves the old image in podman.
    box.run("tag", multi.ref, busybox.ref)
    rows = box.run("images", "--format", "{{.ID}} {{.Repository}}:{{.Tag}}").stdout
    assert f"{old[:12]} <none>:<none>" in rows
    assert box.run("image", "prune", "-f").stdout.split() == [old]
    assert box.run("images", "-q").stdout.split() == [new[:12]]
    assert box.run("image", "prune", "-f").stdout == ""
    assert box.run("image", "prune", "-a", "-f").stdout.split() == [new]
    assert os.listdir(box.storage / "layers") == []
