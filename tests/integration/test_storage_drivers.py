"""Every storage driver runs the same image the same way, as the unprivileged user:
kernel overlayfs, sbx's own FUSE filesystem (fs/) and vfs; and keep-id on the fuse
and overlay drivers shows the image's owners as built, with the user's own uid
inside."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
from helpers import SbxRunner
from image_rig import BUSYBOX_EXPECTED_FILES, HARDLINK, OPAQUE_DIR, SUID_FILE, PushedImages

pytest_plugins = ["registry_rig", "image_rig"]

DRIVERS = ["overlay", "fuse", "vfs"]


def _run(sbx: SbxRunner, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    return sbx.run("run", "--rm", "--tls-verify=false", *args, **kw)


@pytest.mark.parametrize("driver", DRIVERS)
def test_driver_shows_the_image(sbx: SbxRunner, pushed_images: PushedImages,
                                driver: str) -> None:
    link, target = HARDLINK
    script = ("cat /data/b /data/c; ls /" + OPAQUE_DIR + "; test -e /data/a || echo gone; "
              f"stat -c '%u:%g %a' /home/tester /{SUID_FILE}; "
              f"test $(stat -c %i /{link}) = $(stat -c %i /{target}) && echo linked; "
              "echo new > /data/b && cat /data/b; id -u")
    r = _run(sbx, "--storage-driver", driver, pushed_images.busybox.ref, "sh", "-c", script)
    assert r.returncode == 0, r.stderr
    expected = (BUSYBOX_EXPECTED_FILES["data/b"] + BUSYBOX_EXPECTED_FILES["data/c"]).decode()
    assert r.stdout == expected + "z\ngone\n1000:1000 755\n0:0 4755\nlinked\nnew\n0\n"


@pytest.mark.parametrize("driver", ["overlay", "fuse"])
def test_keep_id_keeps_the_image_owners(sbx: SbxRunner, pushed_images: PushedImages,
                                        test_user: Any, driver: str) -> None:
    """keep-id shows the image as built on both drivers: fuse shifts owners on the
    fly, overlay mounts copies of the layers with owners shifted for the map (set-id
    bits, hard links and opaque directories kept)."""
    link, target = HARDLINK
    r = _run(sbx, "--storage-driver", driver, "--userns=keep-id", pushed_images.busybox.ref,
             "sh", "-c", f"id -u; stat -c %u /bin/busybox /home/tester; "
             f"stat -c '%u:%g %a' /{SUID_FILE}; ls /{OPAQUE_DIR}; "
             f"test $(stat -c %i /{link}) = $(stat -c %i /{target}) && echo linked")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(test_user.uid), "0", "1000", "0:0", "4755", "z",
                                "linked"]
    assert "cannot shift" not in r.stderr


def test_unknown_driver_is_a_clear_error(sbx: SbxRunner, pushed_images: PushedImages) -> None:
    r = _run(sbx, "--storage-driver", "zfs", pushed_images.busybox.ref, "true")
    assert r.returncode == 125
    assert "unknown storage driver 'zfs'" in r.stderr


@pytest.mark.parametrize("driver", ["overlay", "fuse"])
def test_diff_lists_added_changed_and_deleted(sbx: SbxRunner, pushed_images: PushedImages,
                                              driver: str) -> None:
    name = f"diff-{driver}"
    r = sbx.run("run", "--tls-verify=false", "--name", name, "--storage-driver", driver,
                pushed_images.busybox.ref, "sh", "-c",
                "echo x > /new-file; echo y >> /data/b; rm /data/c; mkdir /newdir")
    assert r.returncode == 0, r.stderr
    cid = sbx.run("inspect", "--format", "{{.Id}}", name).stdout.strip()
    assert len(cid) == 64
    try:
        r = sbx.run("diff", name)
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        for line in ("A /new-file", "A /newdir", "C /data/b", "D /data/c", "C /data"):
            assert line in lines
        # sbx's own mount points are not the container's changes
        assert not any(p in r.stdout for p in ("/proc", "/etc/hosts", "/dev"))
    finally:
        sbx.run("rm", "-f", name)
    # Nothing of the fuse driver is left running once the container is gone: its
    # sbx-fs names the container's layer directory on its command line.
    ps = subprocess.run(["pgrep", "-f", f"sbx-fs .*{cid}"], capture_output=True, text=True)
    assert ps.stdout.strip() == ""
