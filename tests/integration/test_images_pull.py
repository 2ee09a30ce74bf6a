"""`sbx pull` for real: as the unprivileged test user, from Debian's docker-registry,
of images pushed there by skopeo (tests/image_rig.py).

What is checked on disk is checked as root, from outside: the unpacked layers'
owners are the subordinate ids newuidmap mapped (a file of uid 1000 in the image
belongs to subuid_start + 999 on the host), setuid bits survive, whiteouts are 0/0
character devices and opaque directories carry user.overlay.opaque=y (the kernel
overlayfs form the storage driver mounts). Also: pull by digest, zstd and Docker
schema 2 images, --platform from an index, a missing image, the owner-xattr
fallback without subordinate ids, two pulls at once, and a pull killed with SIGKILL.

Every test gets its own store (XDG_DATA_HOME) and credentials (XDG_RUNTIME_DIR,
XDG_CONFIG_HOME) under a fresh directory, so tests never share state.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import SbxRunner, User, make_tmp_dir, remove_tree
from image_rig import (
    BUSYBOX_EXPECTED_FILES,
    HARDLINK,
    OPAQUE_DIR,
    SUID_FILE,
    ImageLayout,
    PushedImages,
)
from registry_rig import FakeRegistry, RunningRegistry

pytest_plugins = ["registry_rig", "image_rig"]

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


# --- the per-test sandbox (imported by the other test_images_* modules) --------------


@dataclass
class Box:
    """sbx as the test user, with a store and credentials of its own."""

    sbx: SbxRunner
    root: Path

    @property
    def env(self) -> dict[str, str]:
        return {
            "XDG_DATA_HOME": str(self.root / "data"),
            "XDG_CONFIG_HOME": str(self.root / "config"),
            "XDG_RUNTIME_DIR": str(self.root / "run"),
        }

    @property
    def storage(self) -> Path:
        return self.root / "data" / "sbx" / "storage"

    def run(self, *args: str, check: bool = True, timeout: float = 60,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        p = self.sbx.run(*args, env=self.env, timeout=timeout, input=input)
        if check:
            assert p.returncode == 0, f"sbx {' '.join(args)}: exit {p.returncode}\n{p.stderr}"
        return p

    def popen(self, *args: str, **kwargs: Any) -> subprocess.Popen[Any]:
        return self.sbx.popen(*args, env=self.env, **kwargs)

    def inspect(self, image: str) -> dict[str, Any]:
        (doc,) = json.loads(self.run("image", "inspect", image).stdout)
        return doc  # type: ignore[no-any-return]

    def layer_dirs(self, image: str) -> list[Path]:
        """The image's layer directories, lowest first, as `image inspect` says."""
        data = self.inspect(image)["GraphDriver"]["Data"]
        lower = [Path(p) for p in data["LowerDir"].split(":") if p]
        return [*reversed(lower), Path(data["UpperDir"])]


def make_box(sbx: SbxRunner) -> Box:
    root = make_tmp_dir("sbx-images-")
    for sub in ("data", "config", "run"):
        (root / sub).mkdir(mode=0o700)
    for path in (root, root / "data", root / "config", root / "run"):
        os.chown(path, sbx.user.uid, sbx.user.gid)
    return Box(sbx, root)


@pytest.fixture
def box(sbx: SbxRunner) -> Iterator[Box]:
    b = make_box(sbx)
    yield b
    remove_tree(b.root)  # as root: layer files belong to subordinate ids


@pytest.fixture
def nosub_box(sbx_nosub: SbxRunner) -> Iterator[Box]:
    b = make_box(sbx_nosub)
    yield b
    remove_tree(b.root)


def subid_start(user: User, path: str) -> int:
    for line in Path(path).read_text().splitlines():
        fields = line.strip().split(":")
        if len(fields) == 3 and fields[0] in (user.name, str(user.uid)):
            return int(fields[1])
    pytest.fail(f"{user.name} has no range in {path}: run scripts/setup.sh")


# --- pulls ---------------------------------------------------------------------------


def test_pull_unpacks_with_real_owners(box: Box, pushed_images: PushedImages,
                                       test_user: User) -> None:
    image = pushed_images.busybox
    p = box.run("pull", "--tls-verify=false", image.ref)
    layout = image.layout
    assert isinstance(layout, ImageLayout)
    assert p.stdout.strip() == layout.config_digest.partition(":")[2]
    # Not a terminal: one line per blob, as podman prints them.
    for digest in layout.layer_digests:
        assert f"Copying blob {digest} done" in p.stderr
    assert f"Copying config {layout.config_digest} done" in p.stderr

    base, second, third = box.layer_dirs(image.ref)
    uid_start = subid_start(test_user, "/etc/subuid")
    gid_start = subid_start(test_user, "/etc/subgid")
    # Root in the image is the user on the host; uid 1000 is subuid_start + 999.
    st = os.lstat(base / "bin" / "busybox")
    assert (st.st_uid, st.st_gid) == (test_user.uid, test_user.gid)
    st = os.lstat(second / "home" / "tester" / ".profile")
    assert (st.st_uid, st.st_gid) == (uid_start + 999, gid_start + 999)
    assert (second / "home" / "tester" / ".profile").read_bytes() == (
        BUSYBOX_EXPECTED_FILES["home/tester/.profile"])
    st = os.lstat(second / SUID_FILE)
    assert st.st_mode & stat.S_ISUID and stat.S_IMODE(st.st_mode) == 0o4755
    # Whiteouts as overlayfs keeps them: a 0/0 character device...
    st = os.lstat(third / "data" / "a")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    # ... and an opaque directory marked with the user.overlay xattr.
    assert os.getxattr(third / OPAQUE_DIR, "user.overlay.opaque") == b"y"
    assert not (third / OPAQUE_DIR / ".wh..wh..opq").exists()
    link, target = HARDLINK
    assert os.lstat(third / link).st_ino == os.lstat(third / target).st_ino
    # Nothing left behind in the store's temporary area.
    assert os.listdir(box.storage / "tmp") == []


def test_plain_http_on_loopback_needs_no_flag(box: Box, pushed_images: PushedImages) -> None:
    p = box.run("pull", "-q", pushed_images.busybox.ref)
    assert p.stderr == ""
    assert len(p.stdout.strip()) == 64


def test_pull_by_digest(box: Box, pushed_images: PushedImages) -> None:
    image = pushed_images.busybox
    box.run("pull", "-q", image.by_digest)
    doc = box.inspect(image.by_digest)
    assert doc["RepoDigests"] == [image.by_digest]
    assert doc["RepoTags"] == []
    assert doc["Digest"] == image.digest
    rows = box.run("images", "--format", "{{.Repository}} {{.Tag}}").stdout.split("\n")
    assert rows[0] == f"{image.host}/{image.repository} <none>"


def test_pull_zstd_and_schema2(box: Box, pushed_images: PushedImages) -> None:
    ids = {
        box.run("pull", "-q", img.ref).stdout.strip()
        for img in (pushed_images.busybox, pushed_images.busybox_zstd,
                    pushed_images.busybox_v2s2)
    }
    # The same config in three manifests: one image, with three names.
    assert len(ids) == 1
    for img in (pushed_images.busybox_zstd, pushed_images.busybox_v2s2):
        assert f"{img.host}/{img.repository}@{img.digest}" in box.inspect(img.ref)["RepoDigests"]
    zstd_dirs = box.layer_dirs(pushed_images.busybox_zstd.ref)
    assert (zstd_dirs[2] / "data" / "d").read_bytes() == BUSYBOX_EXPECTED_FILES["data/d"]


def test_platform_from_an_index(box: Box, pushed_images: PushedImages) -> None:
    multi = pushed_images.multi
    layouts = multi.layout.images  # type: ignore[union-attr]
    arm = next(lay for plat, lay in layouts.items() if plat.startswith("linux/arm64"))
    out = box.run("pull", "-q", "--platform", "linux/arm64", multi.ref).stdout.strip()
    assert out == arm.config_digest.partition(":")[2]
    doc = box.inspect(multi.ref)
    assert doc["Architecture"] == "arm64"
    assert f"{multi.host}/{multi.repository}@{arm.manifest_digest}" in doc["RepoDigests"]
    p = box.run("pull", "--platform", "linux/s390x", multi.ref, check=False)
    assert p.returncode == 125
    assert "no variant for linux/s390x; available: linux/amd64, linux/arm64" in p.stderr
    assert "--platform" in p.stderr


def test_a_missing_image(box: Box, registry: RunningRegistry) -> None:
    p = box.run("pull", f"{registry.host}/sbx/no-such-image:1", check=False)
    assert p.returncode == 125
    assert f"image not found: {registry.host}/sbx/no-such-image:1" in p.stderr
    assert box.run("images", "-q").stdout == ""


def test_without_subordinate_ids_owners_go_in_an_xattr(
    nosub_box: Box, pushed_images: PushedImages, nosub_user: User
) -> None:
    image = pushed_images.busybox
    nosub_box.run("pull", "-q", image.ref)
    _base, second, third = nosub_box.layer_dirs(image.ref)
    home = second / "home" / "tester"
    st = os.lstat(home)
    assert st.st_uid == nosub_user.uid
    assert os.getxattr(home, "user.containers.override_stat") == b"1000:1000:0755:dir"
    value = os.getxattr(second / SUID_FILE, "user.containers.override_stat")
    assert value == b"0:0:4755:file"
    assert stat.S_ISCHR(os.lstat(third / "data" / "a").st_mode)


def test_two_pulls_at_once(box: Box, pushed_images: PushedImages) -> None:
    image = pushed_images.busybox_zstd
    procs = [box.popen("pull", "-q", image.ref, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [proc.communicate(timeout=60) for proc in procs]
    for proc, (_out, err) in zip(procs, outs, strict=True):
        assert proc.returncode == 0, err
    assert outs[0][0] == outs[1][0]
    assert box.run("images", "-q").stdout.split() == [outs[0][0].strip()[:12]]
    dirs = box.layer_dirs(image.ref)
    assert (dirs[1] / "data" / "b").read_bytes() == b"b\n"
    assert len(os.listdir(box.storage / "layers")) == 3
    assert os.listdir(box.storage / "tmp") == []


# --- a pull killed mid-way --------------------------------------------------------------


def serve_image(fake: FakeRegistry, repo: str, tag: str, layout: ImageLayout,
                *, hang_layer: int | None = None) -> None:
    """Serve a layout's image from the fake registry; the layer `hang_layer`
    sends half its bytes and stalls, the first time it is asked for."""
    manifest = layout.blob(layout.manifest_digest).read_bytes()

    def manifest_route(h: Any) -> None:
        h.send_response(200)
        h.send_header("Content-Type", OCI_MANIFEST)
        h.send_header("Docker-Content-Digest", layout.manifest_digest)
        h.send_header("Content-Length", str(len(manifest)))
        h.end_headers()
        h.wfile.write(manifest)

    for ref in (tag, layout.manifest_digest):
        fake.routes[("GET", f"/v2/{repo}/manifests/{ref}")] = manifest_route
    fake.serve_blob(repo, layout.blob(layout.config_digest).read_bytes())
    for i, digest in enumerate(layout.layer_digests):
        fake.serve_blob(repo, layout.blob(digest).read_bytes(),
                        fail_first=1 if i == hang_layer else 0, failure="hang")


def test_a_pull_killed_mid_way_then_rerun(box: Box, fake_registry: FakeRegistry,
                                          busybox_layout: ImageLayout) -> None:
    serve_image(fake_registry, "sbx/slow", "1", busybox_layout, hang_layer=0)
    ref = f"{fake_registry.host}/sbx/slow:1"
    proc = box.popen("pull", ref, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                     start_new_session=True)
    hanging = f"/v2/sbx/slow/blobs/{busybox_layout.layer_digests[0]}"
    deadline = time.monotonic() + 20
    while hanging not in fake_registry.paths("GET") and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # the other layers arrive; the first one stalls half-way
    assert proc.poll() is None, proc.communicate()
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    proc.communicate()
    # Nothing half-visible: no image, no layer; only temp entries remain.
    assert box.run("images", "-q").stdout == ""
    assert os.listdir(box.storage / "layers") == []
    p = box.run("pull", "-q", ref)
    assert p.stdout.strip() == busybox_layout.config_digest.partition(":")[2]
    dirs = box.layer_dirs(ref)
    assert (dirs[0] / "bin" / "busybox").is_file()
    # The rerun fetched only the layer that had not arrived.
    gets = fake_registry.paths("GET")
    assert gets.count(hanging) == 2
    assert gets.count(f"/v2/sbx/slow/blobs/{busybox_layout.layer_digests[1]}") == 1


# --- layers that must not be unpacked ----------------------------------------------------


def serve_layers(fake: FakeRegistry, repo: str, tars: list[bytes],
                 diff_ids: list[str] | None = None) -> str:
    """Serve an image of gzip layers made from `tars` (with the given diff_ids, to
    lie about them); returns its reference."""
    import gzip
    import hashlib

    def sha(data: bytes) -> str:
        return "sha256:" + hashlib.sha256(data).hexdigest()

    blobs = [gzip.compress(t, mtime=0) for t in tars]
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers",
                                    "diff_ids": diff_ids or [sha(t) for t in tars]}}).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": sha(config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": sha(b), "size": len(b)} for b in blobs],
    }).encode()

    def route(h: Any) -> None:
        h.send_response(200)
        h.send_header("Content-Type", OCI_MANIFEST)
        h.send_header("Content-Length", str(len(manifest)))
        h.end_headers()
        h.wfile.write(manifest)

    fake.routes[("GET", f"/v2/{repo}/manifests/1")] = route
    for blob in (config, *blobs):
        fake.serve_blob(repo, blob)
    return f"{fake.host}/{repo}:1"


def _tar(name: str, data: bytes = b"x\n") -> bytes:
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_an_unsafe_or_lying_layer_is_refused(box: Box, fake_registry: FakeRegistry) -> None:
    good = _tar("ok.txt")
    evil = serve_layers(fake_registry, "sbx/evil", [good, _tar("../escape.txt")])
    p = box.run("pull", evil, check=False)
    assert p.returncode == 125
    assert "refusing layer member '../escape.txt'" in p.stderr
    assert "Traceback" not in p.stderr
    lying = serve_layers(fake_registry, "sbx/lying", [good], diff_ids=["sha256:" + "0" * 64])
    p = box.run("pull", lying, check=False)
    assert p.returncode == 125
    assert "but the image config says sha256:0000" in p.stderr
    # No image; no layer but the good one; nothing outside the store.
    assert box.run("images", "-q").stdout == ""
    assert len(os.listdir(box.storage / "layers")) == 1
    assert os.listdir(box.storage / "tmp") == []  # the failed unpacks were removed
    assert not list(box.root.rglob("escape.txt"))
