"""`sbx run IMAGE` as the unprivileged test user: an image pulled from a real
registry (pushed there by skopeo), run on its layers under kernel overlayfs in the
user's namespace, with the image config's Cmd, Env, WorkingDir and User."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from helpers import SbxRunner, User
from image_rig import (
    BUSYBOX_ABSENT,
    BUSYBOX_EXPECTED_FILES,
    HARDLINK,
    OPAQUE_DIR,
    SUID_FILE,
    PushedImages,
)

pytest_plugins = ["registry_rig", "image_rig"]


@pytest.fixture
def image(pushed_images: PushedImages) -> str:
    return pushed_images.busybox.ref


def _run(sbx: SbxRunner, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return sbx.run("run", "--tls-verify=false", *args, **kw)


def test_image_files_whiteouts_and_opaque_dirs(sbx: SbxRunner, image: str) -> None:
    script = "; ".join(
        [f"cat /{p}; echo" for p in BUSYBOX_EXPECTED_FILES]
        + [f"test -e /{p} && echo PRESENT:{p}" for p in BUSYBOX_ABSENT]
        + [f"ls /{OPAQUE_DIR}"]
    )
    r = _run(sbx, image, "sh", "-c", script + "; true")
    assert r.returncode == 0, r.stderr
    for data in BUSYBOX_EXPECTED_FILES.values():
        assert data.decode() in r.stdout
    assert "PRESENT:" not in r.stdout
    assert r.stdout.strip().endswith("z")


def test_image_config_env_cmd_and_workdir(sbx: SbxRunner, image: str) -> None:
    r = _run(sbx, image, "sh", "-c", 'echo "$FROM_IMAGE $PATH"; pwd')
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[0].startswith("busybox /usr/local/sbin")
    # The image's Cmd is ["sh"]; without -i its stdin is empty, so it exits 0.
    assert _run(sbx, image).returncode == 0
    r = _run(sbx, "-e", "FROM_IMAGE=flag", image, "sh", "-c", "echo $FROM_IMAGE")
    assert r.stdout.strip() == "flag"


def test_image_owners_setuid_and_hard_links(sbx: SbxRunner, image: str) -> None:
    link, target = HARDLINK
    r = _run(sbx, image, "stat", "-c", "%u:%g %a %i %n", "/home/tester", f"/{SUID_FILE}",
             f"/{link}", f"/{target}")
    assert r.returncode == 0, r.stderr
    lines = [line.split() for line in r.stdout.splitlines()]
    assert lines[0][0] == "1000:1000"
    assert lines[1][1] == "4755"
    assert lines[2][2] == lines[3][2]  # one inode: still a hard link


def test_user_from_the_image_passwd(sbx: SbxRunner, image: str) -> None:
    r = _run(sbx, "-u", "tester", image, "id")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("uid=1000(tester) gid=1000")


def test_writes_go_to_the_container_and_are_gone_after(
    sbx: SbxRunner, image: str, test_user: User
) -> None:
    # The writes land in the container's own layer: a second container does not see
    # them, and `sbx rm` removes the layer, files of uid 1000 (a subordinate id) too.
    created = sbx.run("create", "--tls-verify=false", image, "sh", "-c",
                      "echo new > /data/b && rm /data/c && chown 1000 /data/b && cat /data/b")
    assert created.returncode == 0, created.stderr
    cid = created.stdout.strip()
    r = sbx.run("start", "-a", cid)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "new\n"
    r = _run(sbx, "--rm", image, "sh", "-c", "cat /data/b /data/c")
    assert r.stdout == (BUSYBOX_EXPECTED_FILES["data/b"] + BUSYBOX_EXPECTED_FILES["data/c"]
                        ).decode()
    layer = Path(sbx.base_env["XDG_DATA_HOME"]) / "sbx/containers" / cid
    assert (layer / "layer" / "upper" / "data" / "b").exists()
    assert sbx.run("rm", cid).returncode == 0
    assert not layer.exists()


def test_read_only_image_root(sbx: SbxRunner, image: str) -> None:
    r = _run(sbx, "--read-only", image, "touch", "/x")
    assert r.returncode == 1
    assert "Read-only file system" in r.stderr


def test_pull_never_for_a_missing_image(sbx: SbxRunner, pushed_images: PushedImages) -> None:
    r = _run(sbx, "--pull=never", f"{pushed_images.host}/sbx/nothing-here:1", "true")
    assert r.returncode == 125
    assert "nothing-here" in r.stderr


def test_missing_image_in_the_registry(sbx: SbxRunner, pushed_images: PushedImages) -> None:
    r = _run(sbx, f"{pushed_images.host}/sbx/nothing-here:1", "true")
    assert r.returncode == 125
    assert "not found" in r.stderr.lower()
