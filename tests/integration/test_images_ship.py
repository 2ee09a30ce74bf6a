"""Shipping images as the test user: `sbx push` read back by skopeo and pulled and
run by podman; `sbx save` / `sbx load` round trips in both archive formats, and a
docker-archive from sbx loaded by podman; `sbx login` / `sbx logout` against the
registry with TLS (self-signed) and htpasswd Basic auth.

podman runs rootless as the test user with the configuration bench/startup found to
work on this host (runc, cgroupfs, events to a file, overlay storage in a temporary
folder), and its pause process is killed by pid at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import SbxRunner, User, remove_tree
from image_rig import ImageLayout, PushedImages
from registry_rig import RunningRegistry
from test_images_pull import Box, make_box

pytest_plugins = ["registry_rig", "image_rig"]


@pytest.fixture
def box(sbx: SbxRunner) -> Iterator[Box]:
    b = make_box(sbx)
    yield b
    remove_tree(b.root)  # as root: layer files belong to subordinate ids

CONTAINERS_CONF = """\
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"

[network]
network_config_dir = "{work}/net"
"""
STORAGE_CONF = """\
[storage]
driver = "overlay"
rootless_storage_path = "{work}/storage"
"""


def need(*tools: str) -> None:
    for tool in tools:
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed: run scripts/setup.sh")


def skopeo(*args: str) -> str:
    need("skopeo")
    p = subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, f"skopeo {' '.join(args)}: {p.stderr}"
    return p.stdout


@dataclass
class Podman:
    """Rootless podman as the test user, with its own storage and config."""

    user: User
    work: Path

    def env(self) -> dict[str, str]:
        return {
            **self.user.env(),
            "XDG_RUNTIME_DIR": str(self.work / "run"),
            "XDG_DATA_HOME": str(self.work / "data"),
            "CONTAINERS_CONF": str(self.work / "containers.conf"),
            "CONTAINERS_STORAGE_CONF": str(self.work / "storage.conf"),
        }

    def run(self, *args: str, timeout: float = 120) -> str:
        p = subprocess.run(
            ["podman", *args], capture_output=True, text=True, timeout=timeout,
            cwd=self.work, env=self.env(), user=self.user.uid, group=self.user.gid,
            extra_groups=[],
        )
        assert p.returncode == 0, f"podman {' '.join(args)}: exit {p.returncode}\n{p.stderr}"
        return p.stdout


@pytest.fixture
def podman(box: Box) -> Iterator[Podman]:
    need("podman", "runc")
    work = box.root / "podman"
    work.mkdir(mode=0o755)
    (work / "run").mkdir(mode=0o700)
    for name, text in (("containers.conf", CONTAINERS_CONF), ("storage.conf", STORAGE_CONF)):
        (work / name).write_text(text.format(work=work))
        (work / name).chmod(0o644)
    for path in (work, work / "run"):
        os.chown(path, box.sbx.user.uid, box.sbx.user.gid)
    pm = Podman(box.sbx.user, work)
    yield pm
    try:
        pid = int((work / "run" / "libpod" / "tmp" / "pause.pid").read_text().strip())
        os.kill(pid, signal.SIGKILL)  # the pause process this test's podman started
    except (OSError, ValueError):
        pass


def unique(name: str) -> str:
    return f"sbx/{name}-{uuid.uuid4().hex[:8]}"


# --- push ------------------------------------------------------------------------------


def test_push_is_pullable_and_runnable_by_peers(
    box: Box, podman: Podman, pushed_images: PushedImages
) -> None:
    busybox = pushed_images.busybox
    layout = busybox.layout
    assert isinstance(layout, ImageLayout)
    box.run("pull", "-q", busybox.ref)
    dest = f"{busybox.host}/{unique('pushed')}:1"
    p = box.run("push", busybox.ref, dest)
    # Same registry: the layers are mounted from the repository they came from.
    assert "mounted from sbx/busybox" in p.stderr
    info = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{dest}"))
    assert info["Layers"] == layout.layer_digests
    assert info["Digest"] == busybox.digest  # the same manifest bytes, the same digest
    raw = skopeo("inspect", "--tls-verify=false", "--raw", f"docker://{dest}")
    assert json.loads(raw) == layout.manifest()

    podman.run("pull", "-q", "--tls-verify=false", dest)
    out = podman.run("run", "--rm", "--network", "host", dest, "sh", "-c",
                     "cat /data/b; stat -c %u /home/tester/.profile; ls /data")
    assert out.split() == ["b", "1000", "b", "c", "d", "d-hardlink"]


def test_push_to_another_registry_uploads(box: Box, pushed_images: PushedImages,
                                          registry_tls_auth: RunningRegistry) -> None:
    box.run("pull", "-q", pushed_images.busybox_zstd.ref)
    reg = registry_tls_auth
    box.run("login", "--tls-verify=false", "-u", str(reg.username), "--password-stdin",
            reg.host, input=f"{reg.password}\n")
    dest = f"{reg.host}/{unique('uploaded')}:1"
    p = box.run("push", "--tls-verify=false", pushed_images.busybox_zstd.ref, dest)
    assert "Copying blob" in p.stderr and "done" in p.stderr
    info = json.loads(skopeo("inspect", "--tls-verify=false",
                             f"--creds={reg.username}:{reg.password}", f"docker://{dest}"))
    assert info["Digest"] == pushed_images.busybox_zstd.digest


# --- save and load ---------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["docker-archive", "oci-archive"])
def test_save_rmi_load_gives_the_same_image(box: Box, pushed_images: PushedImages,
                                            fmt: str) -> None:
    busybox = pushed_images.busybox
    image_id = box.run("pull", "-q", busybox.ref).stdout.strip()
    archive = box.root / "run" / f"busybox.{fmt}.tar"
    box.run("save", "--format", fmt, "-o", str(archive), busybox.ref)
    box.run("rmi", busybox.ref)
    assert box.run("images", "-q").stdout == ""
    p = box.run("load", "-i", str(archive))
    assert p.stdout.splitlines() == [f"Loaded image: {busybox.ref}"]
    doc = box.inspect(busybox.ref)
    assert doc["Id"] == image_id
    if fmt == "oci-archive":
        assert doc["Digest"] == busybox.digest
    dirs = box.layer_dirs(busybox.ref)
    assert (dirs[1] / "data" / "b").read_bytes() == b"b\n"


def test_docker_archive_loads_in_podman(box: Box, podman: Podman,
                                        pushed_images: PushedImages) -> None:
    zstd = pushed_images.busybox_zstd
    image_id = box.run("pull", "-q", zstd.ref).stdout.strip()
    archive = box.root / "run" / "busybox.tar"
    box.run("save", "-o", str(archive), zstd.ref)
    assert stat.S_IMODE(archive.stat().st_mode) == 0o644  # as with umask 022, not 0600
    out = podman.run("load", "-i", str(archive))
    assert zstd.ref in out
    ids = podman.run("images", "--no-trunc", "--format", "{{.ID}}").split()
    assert ids == [f"sha256:{image_id}"]
    out = podman.run("run", "--rm", "--network", "host", zstd.ref, "cat", "/data/c")
    assert out == "c\n"


# --- login and logout -------------------------------------------------------------------


def test_login_logout(box: Box, registry_tls_auth: RunningRegistry,
                      busybox_layout: ImageLayout) -> None:
    reg = registry_tls_auth
    ref = f"{reg.host}/{unique('private')}:1"
    skopeo("copy", "--quiet", "--insecure-policy", "--dest-tls-verify=false",
           f"--dest-creds={reg.username}:{reg.password}", busybox_layout.ref, f"docker://{ref}")
    # Self-signed: refused without --tls-verify=false (or a CA), never downgraded.
    p = box.run("pull", ref, check=False)
    assert p.returncode == 125 and "certificate" in p.stderr.lower()
    p = box.run("pull", "--tls-verify=false", ref, check=False)
    assert p.returncode == 125
    assert f"sbx login {reg.host}" in p.stderr

    p = box.run("login", "--tls-verify=false", "-u", str(reg.username), "-p", "wrong",
                reg.host, check=False)
    assert p.returncode == 125
    assert "invalid username/password" in p.stderr
    auth = box.root / "run" / "containers" / "auth.json"
    assert not auth.exists()

    p = box.run("login", "--tls-verify=false", "-u", str(reg.username), "--password-stdin",
                reg.host, input=f"{reg.password}\n")
    assert p.stdout.strip() == "Login Succeeded!"
    st = auth.stat()
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == box.sbx.user.uid
    assert reg.host in json.loads(auth.read_text())["auths"]

    image_id = box.run("pull", "-q", "--tls-verify=false", ref).stdout.strip()
    assert image_id == busybox_layout.config_digest.partition(":")[2]

    assert box.run("logout", reg.host).stdout.strip() == (
        f"Removed login credentials for {reg.host}")
    assert reg.host not in json.loads(auth.read_text())["auths"]
    p = box.run("logout", reg.host, check=False)
    assert p.returncode == 125 and f"not logged into {reg.host}" in p.stderr
    p = box.run("pull", "--tls-verify=false", ref, check=False)
    assert p.returncode == 125


def _host_tree(root: Path, tops: list[str]) -> dict[str, tuple[str, str, int, int, int]]:
    kinds = {stat.S_IFREG: "regular", stat.S_IFDIR: "directory", stat.S_IFLNK: "symlink"}
    tree = {}
    for top in tops:
        for dirpath, dirnames, filenames in os.walk(root / top):
            for name in [*dirnames, *filenames]:
                path = Path(dirpath) / name
                st = path.lstat()
                kind = kinds.get(stat.S_IFMT(st.st_mode), "other")
                size = st.st_size if kind == "regular" else 0
                rel = "/" + str(path.relative_to(root))
                tree[rel] = (kind, oct(stat.S_IMODE(st.st_mode)), st.st_uid, st.st_gid, size)
    return tree


def test_pushed_image_unpacked_by_umoci_matches_what_sbx_runs(
    box: Box, pushed_images: PushedImages, tmp_path: Path
) -> None:
    """sbx pushes; skopeo copies that to an OCI layout; umoci unpacks it; the file
    tree (names, types, modes, owners, sizes) is the one sbx's containers see."""
    need("umoci")
    busybox = pushed_images.busybox
    box.run("pull", "-q", busybox.ref)
    dest = f"{busybox.host}/{unique('umoci')}:1"
    box.run("push", busybox.ref, dest)
    layout = tmp_path / "layout"
    skopeo("copy", "--src-tls-verify=false", f"docker://{dest}", f"oci:{layout}:img")
    bundle = tmp_path / "bundle"
    p = subprocess.run(["umoci", "unpack", "--image", f"{layout}:img", str(bundle)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    tops = ["bin", "data", "etc", "home"]
    expected = _host_tree(bundle / "rootfs", tops)
    kinds = {"regular file": "regular", "regular empty file": "regular",
             "directory": "directory", "symbolic link": "symlink"}
    r = box.run("run", busybox.ref, "sh", "-c",
                "find " + " ".join(f"/{t}" for t in tops) + " -mindepth 1 | "
                "xargs stat -c '%n|%F|%a|%u|%g|%s'")
    seen = {}
    for line in r.stdout.splitlines():
        name, kind, mode, uid, gid, size = line.split("|")
        kind = kinds.get(kind, "other")
        seen[name] = (kind, oct(int(mode, 8)), int(uid), int(gid),
                      int(size) if kind == "regular" else 0)
    # Files sbx generates and binds over the image's own, as podman does.
    for generated in ("/etc/hostname", "/etc/hosts", "/etc/resolv.conf"):
        seen.pop(generated, None)
        expected.pop(generated, None)
    assert len(expected) > 50 and expected["/bin/suidtest"][1] == "0o4755"
    assert seen == expected


def test_registries_conf_marks_a_registry_insecure(
    box: Box, registry_tls_auth: RunningRegistry
) -> None:
    """podman's registries.conf `insecure = true` stands for --tls-verify=false."""
    reg = registry_tls_auth
    login = ("login", "-u", str(reg.username), "--password-stdin", reg.host)
    p = box.run(*login, input=f"{reg.password}\n", check=False)
    assert p.returncode == 125 and "certificate" in p.stderr.lower()
    conf = box.root / "config" / "containers" / "registries.conf"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text(f'[[registry]]\nlocation = "{reg.host}"\ninsecure = true\n')
    conf.chmod(0o644)
    p = box.run(*login, input=f"{reg.password}\n")
    assert p.stdout.strip() == "Login Succeeded!"
