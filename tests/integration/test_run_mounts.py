"""`sbx run` mounts, seen from inside: masked and read-only kernel files, /dev, /sys,
volumes, --read-only and --tmpfs.

The masked and read-only paths are podman's defaults (containers/common); paths the
host kernel lacks (no /proc/kcore without CONFIG_PROC_KCORE) must simply not leak.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path

import pytest
from helpers import SbxRunner, User

MASKED_FILES = ("/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug")
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")


def run(sbx: SbxRunner, rootfs: Path, script: str, *opts: str
        ) -> subprocess.CompletedProcess[str]:
    return sbx.run("run", "--rootfs", rootfs, *opts, "--", "sh", "-c", script, timeout=30)


def run_sh(sbx: SbxRunner, rootfs: Path, script: str, *opts: str) -> str:
    result = run(sbx, rootfs, script, *opts)
    assert result.returncode == 0, (
        f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    )
    return result.stdout


def mountinfo(text: str) -> dict[str, tuple[str, str, str]]:
    """Mount point -> (mount options, fstype, super options), from /proc/self/mountinfo."""
    points = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 10 or "-" not in fields:
            continue
        sep = fields.index("-")
        points[fields[4]] = (fields[5], fields[sep + 1], fields[sep + 3])
    return points


# -- /proc and /sys ---------------------------------------------------------------------
def test_masked_proc_files_read_empty(sbx: SbxRunner, busybox_rootfs: Path) -> None:
    script = "; ".join(
        f"printf '%s %s\\n' {p} $(cat {p} 2>/dev/null | wc -c)" for p in MASKED_FILES
    ) + "; echo --; cat /proc/self/mountinfo"
    out = run_sh(sbx, busybox_rootfs, script)
    sizes_text, _, info = out.partition("--\n")
    sizes = dict(line.split() for line in sizes_text.splitlines())
    points = mountinfo(info)
    checked = 0
    for path in MASKED_FILES:
        assert sizes[path] == "0", f"{path} leaks {sizes[path]} bytes"
        if os.path.exists(path):  # the host has it: it must be covered inside
            assert path in points, f"{path} is not masked"
            checked += 1
    # /proc/keys and /proc/timer_list exist on any kernel sbx supports.
    assert checked >= 2


def test_masked_sys_firmware_is_empty(sbx: SbxRunner, busybox_rootfs: Path) -> None:
    result = run(sbx, busybox_rootfs, "ls -A /sys/firmware | wc -l; touch /sys/firmware/x")
    assert result.stdout.strip() == "0"
    assert result.returncode != 0  # the mask is read-only
    if Path("/sys/firmware").is_dir():
        assert os.listdir("/sys/firmware"), "the host's /sys/firmware is empty too"


@pytest.mark.parametrize("path", ["/proc/sys/kernel/hostname", "/proc/sysrq-trigger"])
def test_proc_writes_fail(sbx: SbxRunner, busybox_rootfs: Path, path: str) -> None:
    result = run(sbx, busybox_rootfs, f"echo x > {path}")
    assert result.returncode != 0
    if os.path.exists(path):  # absent without CONFIG_MAGIC_SYSRQ: the write fails anyway
        assert "Read-only file system" in result.stderr, result.stderr


def test_proc_sys_is_a_read_only_mount(sbx: SbxRunner, busybox_rootfs: Path) -> None:
    points = mountinfo(run_sh(sbx, busybox_rootfs, "cat /proc/self/mountinfo"))
    assert points["/proc"][1] == "proc"
    assert points["/proc/sys"][0].split(",")[0] == "ro"


@pytest.mark.parametrize("network", ["host", "none"])
def test_sys_is_read_only(sbx: SbxRunner, busybox_rootfs: Path, network: str) -> None:
    result = run(sbx, busybox_rootfs,
                 "ls /sys/class/net >/dev/null && touch /sys/x; echo --; cat /proc/self/mountinfo",
                 "--network", network)
    assert "touch: /sys/x: Read-only file system" in result.stderr
    points = mountinfo(result.stdout.partition("--\n")[2])
    assert points["/sys"][0].split(",")[0] == "ro"


# -- /dev -------------------------------------------------------------------------------
def test_dev_has_the_standard_devices(sbx: SbxRunner, busybox_rootfs: Path) -> None:
    script = "; ".join(f"test -c /dev/{d} && echo {d}" for d in DEVICES)
    script += "; echo x > /dev/null && echo null-writable"
    script += "; head -c 8 /dev/zero | wc -c; head -c 8 /dev/urandom | wc -c"
    script += "; echo x > /dev/full || echo full-is-full"
    out = run_sh(sbx, busybox_rootfs, script)
    assert out.split() == [*DEVICES, "null-writable", "8", "8", "full-is-full"]


def test_dev_submounts(sbx: SbxRunner, busybox_rootfs: Path) -> None:
    out = run_sh(sbx, busybox_rootfs,
                 "stat -c %a /dev/shm; touch /dev/shm/f && echo shm-writable; "
                 "echo --; cat /proc/self/mountinfo")
    head, _, info = out.partition("--\n")
    assert head.split() == ["1777", "shm-writable"]
    points = mountinfo(info)
    assert points["/dev"][1] == "tmpfs"
    assert points["/dev/pts"][1] == "devpts"
    assert points["/dev/shm"][1] == "tmpfs"
    assert points["/dev/mqueue"][1] == "mqueue"


def test_dev_shm_is_private_to_the_container(sbx: SbxRunner, busybox_rootfs: Path) -> None:
    run_sh(sbx, busybox_rootfs, "echo x > /dev/shm/leftover")
    assert run_sh(sbx, busybox_rootfs, "ls -A /dev/shm").strip() == ""


# -- volumes ----------------------------------------------------------------------------
def test_volume_is_shared_both_ways(
    sbx: SbxRunner, busybox_rootfs: Path, workdir: Path, test_user: User
) -> None:
    (workdir / "from-host").write_text("hello from the host\n")
    test_user.chown(workdir / "from-host")
    out = run_sh(sbx, busybox_rootfs,
                 "cat /mnt/from-host; echo 'hello from inside' > /mnt/from-inside",
                 "-v", f"{workdir}:/mnt")
    assert out == "hello from the host\n"
    assert (workdir / "from-inside").read_text() == "hello from inside\n"


def test_read_only_volume(
    sbx: SbxRunner, busybox_rootfs: Path, workdir: Path, test_user: User
) -> None:
    (workdir / "f").write_text("original\n")
    test_user.chown(workdir / "f")  # root's inside: writable but for :ro
    result = run(sbx, busybox_rootfs, "cat /mnt/f; echo changed > /mnt/f; touch /mnt/new",
                 "-v", f"{workdir}:/mnt:ro")
    assert result.stdout == "original\n"
    assert "can't create /mnt/f: Read-only file system" in result.stderr
    assert "touch: /mnt/new: Read-only file system" in result.stderr
    assert (workdir / "f").read_text() == "original\n"
    assert not (workdir / "new").exists()


def test_single_file_volume(
    sbx: SbxRunner, busybox_rootfs: Path, workdir: Path, test_user: User
) -> None:
    (workdir / "motd").write_text("file volume\n")
    test_user.chown(workdir / "motd")
    out = run_sh(sbx, busybox_rootfs, "cat /etc/motd; echo appended >> /etc/motd",
                 "-v", f"{workdir}/motd:/etc/motd")
    assert out == "file volume\n"
    assert (workdir / "motd").read_text() == "file volume\nappended\n"


def test_relative_volume_is_relative_to_the_current_directory(
    sbx: SbxRunner, busybox_rootfs: Path, workdir: Path
) -> None:
    (workdir / "marker").write_text("relative\n")
    result = sbx.run("run", "--rootfs", busybox_rootfs, "-v", "./:/here",
                     "cat", "/here/marker", cwd=workdir, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "relative\n"


def test_volume_target_cannot_escape_through_a_rootfs_symlink(
    sbx: SbxRunner, busybox_rootfs: Path, workdir: Path, test_user: User
) -> None:
    """A rootfs symlink to a host path is resolved inside the rootfs (securejoin)."""
    outside = workdir / "outside"
    outside.mkdir()
    test_user.chown(outside)
    link = busybox_rootfs / f"escape-{secrets.token_hex(4)}"
    link.symlink_to(outside)
    os.lchown(link, test_user.uid, test_user.gid)
    source = workdir / "src"
    source.mkdir()
    (source / "payload").write_text("x")
    run_sh(sbx, busybox_rootfs, f"ls /{link.name}/sub/payload",
           "-v", f"{source}:/{link.name}/sub")
    assert list(outside.iterdir()) == []


# -- --read-only and --tmpfs ------------------------------------------------------------
def test_read_only_root(sbx: SbxRunner, busybox_rootfs: Path) -> None:
    result = run(sbx, busybox_rootfs,
                 "touch /new-file; touch /etc/new-file; "
                 "touch /dev/shm/f && echo shm-ok; touch /tmp/f && echo tmp-ok; "
                 "echo --; cat /proc/self/mountinfo",
                 "--read-only", "--tmpfs", "/tmp")
    head, _, info = result.stdout.partition("--\n")
    assert head.split() == ["shm-ok", "tmp-ok"]
    assert "touch: /new-file: Read-only file system" in result.stderr
    assert "touch: /etc/new-file: Read-only file system" in result.stderr
    points = mountinfo(info)
    assert points["/"][0].split(",")[0] == "ro"
    assert points["/tmp"][1] == "tmpfs"
    assert not (busybox_rootfs / "new-file").exists()


def test_tmpfs_mount(sbx: SbxRunner, busybox_rootfs: Path) -> None:
    out = run_sh(sbx, busybox_rootfs,
                 "grep ' /scratch ' /proc/mounts; echo x > /scratch/f && cat /scratch/f",
                 "--tmpfs", "/scratch")
    mount_line, content = out.splitlines()
    _device, point, fstype, options = mount_line.split()[:4]
    assert (point, fstype) == ("/scratch", "tmpfs")
    # podman's defaults for --tmpfs.
    assert {"rw", "nosuid", "nodev", "noexec"} <= set(options.split(","))
    assert content == "x"


def test_tmpfs_is_noexec_by_default(sbx: SbxRunner, busybox_rootfs: Path) -> None:
    result = run(sbx, busybox_rootfs, "cp /bin/busybox /scratch/true && /scratch/true",
                 "--tmpfs", "/scratch")
    assert result.returncode == 126
    assert "Permission denied" in result.stderr
    exec_ok = run(sbx, busybox_rootfs, "cp /bin/busybox /scratch/true && /scratch/true",
                  "--tmpfs", "/scratch:exec")
    assert exec_ok.returncode == 0, exec_ok.stderr


def test_tmpfs_options(sbx: SbxRunner, busybox_rootfs: Path) -> None:
    out = run_sh(sbx, busybox_rootfs, "stat -c %a /scratch; grep ' /scratch ' /proc/mounts",
                 "--tmpfs", "/scratch:size=1m,mode=0700")
    mode, mount_line = out.splitlines()
    assert mode == "700"
    assert "size=1024k" in mount_line.split()[3].split(",")


def test_device_is_bound_in(sbx: SbxRunner, busybox_rootfs: Path) -> None:
    """--device binds the host's node (rootless can't mknod): /dev/fuse, a character
    device any user may open here, under its own name and under another; a folder of
    devices (/dev/dri for a GPU) goes whole; a missing one is a clear error."""
    out = run_sh(sbx, busybox_rootfs,
                 "stat -c '%t:%T %F' /dev/fuse /dev/myfuse; test -w /dev/fuse && echo w",
                 "--device", "/dev/fuse", "--device", "/dev/fuse:/dev/myfuse:rw")
    host = os.stat("/dev/fuse")
    major, minor = f"{os.major(host.st_rdev):x}", f"{os.minor(host.st_rdev):x}"
    assert out.splitlines() == [f"{major}:{minor} character special file"] * 2 + ["w"]
    missing = run(sbx, busybox_rootfs, "true", "--device", "/dev/no-such-device")
    assert missing.returncode == 125 and "/dev/no-such-device" in missing.stderr
