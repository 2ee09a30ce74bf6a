"""podman uses sbx-fs as its overlay driver's mount_program, as it would fuse-overlayfs.

Rootless podman as the test user, with the configuration that works on this host
(bench/startup: runc, cgroupfs, events to a file) and a storage.conf naming sbx-fs
under [storage.options.overlay]; the image is imported from the busybox rootfs.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import User, make_user_dir

IMAGE = "localhost/sbx-fs-test:latest"


@pytest.fixture
def podman(test_user: User, workdir: Path, busybox_rootfs: Path) -> Iterator[
        tuple[dict[str, str], Path]]:
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed: run scripts/setup.sh")
    conf = make_user_dir(workdir, "podman", test_user)
    run = make_user_dir(workdir, "run", test_user)
    run.chmod(0o700)
    sbx_fs = Path(sys.executable).parent / "sbx-fs"
    (conf / "containers.conf").write_text(
        '[engine]\nruntime = "runc"\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n\n'
        f'[network]\nnetwork_config_dir = "{conf}/net"\n')
    (conf / "storage.conf").write_text(
        f'[storage]\ndriver = "overlay"\nrootless_storage_path = "{conf}/storage"\n\n'
        f'[storage.options.overlay]\nmount_program = "{sbx_fs}"\n')
    for f in conf.iterdir():
        f.chmod(0o644)
    env = test_user.env({
        "XDG_RUNTIME_DIR": str(run),
        "XDG_DATA_HOME": str(conf / "data"),
        "CONTAINERS_CONF": str(conf / "containers.conf"),
        "CONTAINERS_STORAGE_CONF": str(conf / "storage.conf"),
    })
    tar = workdir / "rootfs.tar"
    as_user(test_user, env, ["tar", "-C", str(busybox_rootfs), "--owner=0", "--group=0",
                             "--numeric-owner", "-cf", str(tar), "."], workdir)
    as_user(test_user, env, ["podman", "import", "--quiet", str(tar), IMAGE], workdir)
    yield env, workdir
    # the pause process that keeps podman's user namespace
    try:
        pid = int((run / "libpod" / "tmp" / "pause.pid").read_text().strip())
        os.kill(pid, signal.SIGKILL)
    except (OSError, ValueError):
        pass


def as_user(user: User, env: dict[str, str], argv: list[str], cwd: Path,
            timeout: float = 120) -> str:
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env,
                       cwd=cwd, user=user.uid, group=user.gid, extra_groups=[])
    assert p.returncode == 0, f"{argv} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}"
    return p.stdout


def servers(under: Path) -> list[int]:
    """sbx-fs processes serving a mount under `under`."""
    out = []
    for pid in os.listdir("/proc"):
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(b"sbx-fs" in a for a in args[:2]) and any(str(under).encode() in a
                                                         for a in args):
            out.append(int(pid))
    return out


def test_podman_runs_a_container_on_sbx_fs(test_user: User,
                                           podman: tuple[dict[str, str], Path]) -> None:
    env, cwd = podman
    run = ["podman", "run", "--rm", "--network", "host", IMAGE]
    assert as_user(test_user, env, [*run, "echo", "ok"], cwd) == "ok\n"
    out = as_user(test_user, env, [*run, "sh", "-c",
                                   "grep ' / / ' /proc/self/mountinfo | sed 's/.* - //';"
                                   " echo hi > /tmp/x && cat /tmp/x; rm /bin/ls;"
                                   " ls /bin/ls 2>&1; ls -d /etc"], cwd)
    lines = out.splitlines()
    assert lines[0].split()[0] == "fuse.sbx-fs"
    assert lines[1] == "hi"
    assert "No such file" in lines[2]
    assert lines[3] == "/etc"
    # --userns=keep-id: podman passes uidmapping=/gidmapping=; the image's root files
    # stay root's in the container, the user's own files are the user's
    out = as_user(test_user, env, [
        "podman", "run", "--rm", "--network", "host", "--userns=keep-id", IMAGE, "sh", "-c",
        "id -u; stat -c %u:%g /etc/passwd; echo x > /tmp/k; stat -c %u /tmp/k"], cwd)
    assert out.split() == [str(test_user.uid), "0:0", str(test_user.uid)]
    # --rm removed the containers: nothing is left mounted or serving
    assert servers(cwd) == []
