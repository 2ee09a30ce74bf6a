"""A QEMU VM with a pure cgroup v2 hierarchy, for what this host's cgroups can't show.

The CI host has hybrid cgroups (memory, cpu and pids on v1), so sbx's resource limits
(sandbox/runtime/cgroups.py) can't apply there. This rig boots Debian's own kernel
in qemu-system-x86_64 with this machine's root filesystem shared read-only over
virtio-9p, so the guest has the same python3, sbx venv, newuidmap, users and
/etc/subuid, mounts cgroup2 on /sys/fs/cgroup, delegates a cgroup to the test user
as systemd's Delegate=yes does, and runs a script as that user. No disk image, no
network: it boots in seconds (see docs/runtime.md, "Resource limits").

    result = run_script("sbx info", job_dir, files={...}, env={...})
    result.rc, result.output, result.console, result.boot_s

How the guest starts:
- scripts/mkvm.sh (run by scripts/setup.sh) leaves the kernel in CACHE: vmlinuz and
  the modules the guest loads (virtio_pci, 9p, overlay...), never installed on the host;
  QEMU boots the uncompressed vmlinux (made here once) through its PVH entry;
- the initramfs is made here, per run, in Python (newc cpio): the host's static
  busybox, those modules in dependency order and `/init` (STAGE1), which mounts the
  9p root read-only, tmpfs on /run, /tmp and /var/tmp, the job folder (9p, read-write)
  on /run/job and switches root to run STAGE2;
- STAGE2 mounts cgroup2 (nsdelegate), enables +memory +cpu +pids at the root, makes
  /sys/fs/cgroup/sbx-vm-USER owned by the user (the directory, cgroup.procs,
  cgroup.subtree_control, cgroup.threads), puts a tmpfs on the user's home and
  /run/user/UID, moves a shell into the cgroup and runs /run/job/script.sh there as
  the user (setpriv), its output to /run/job/output, then prints the exit code on the
  serial console and powers off.

The job folder is the only way in and out: the script, any `files`, the env, the
output and the exit code. The serial console (kernel messages, the rig's markers,
SBXVM-FAIL with what failed while booting) is kept in job/console. x86_64 only:
elsewhere `unavailable_reason` says why.
"""

from __future__ import annotations

import lzma
import os
import platform
import re
import select
import shlex
import shutil
import stat
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

CACHE = Path(os.environ.get("SBX_VM_CACHE", "/var/cache/sbx-test/vm"))
QEMU = "qemu-system-x86_64"
BUSYBOX = Path("/bin/busybox")
# What the guest loads; their dependencies come from each module's modinfo.
MODULES = ("virtio_pci", "9pnet_virtio", "9p", "overlay")
BOOTED = "SBXVM-BOOTED"
EXIT = "SBXVM-EXIT"
CLEAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

STAGE1 = r"""#!/bin/busybox sh
# The initramfs's /init: modules, the host's / over 9p, then STAGE2 as pid 1.
/bin/busybox --install -s /bin
export PATH=/bin
fail() { echo "SBXVM-FAIL: $*" >/dev/console; sync; poweroff -f; }
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /modules/order); do
    insmod "/modules/$m.ko" || fail "insmod $m"
done
opts=trans=virtio,version=9p2000.L,msize=262144
mount -t 9p -o "$opts,ro,cache=loose" root /newroot || fail "mount the 9p root"
mount -t tmpfs -o mode=0755 tmpfs /newroot/run || fail "tmpfs /run"
mount -t tmpfs -o mode=1777 tmpfs /newroot/tmp || fail "tmpfs /tmp"
mount -t tmpfs -o mode=1777 tmpfs /newroot/var/tmp || fail "tmpfs /var/tmp"
mkdir -p /newroot/run/job
mount -t 9p -o "$opts" job /newroot/run/job || fail "mount the 9p job folder"
# pid 1 stays busybox (from the tmpfs): the host's programs load slowly over 9p.
mkdir -p /newroot/run/sbx-vm
cp /bin/busybox /stage2 /newroot/run/sbx-vm/
for d in proc sys dev; do mount --move "/$d" "/newroot/$d" || fail "move /$d"; done
exec switch_root /newroot /run/sbx-vm/busybox sh /run/sbx-vm/stage2
"""

STAGE2 = r"""#!/run/sbx-vm/busybox sh
# pid 1 on the host's root (read-only 9p): cgroup2 with a delegated cgroup, the job.
# Busybox's shell runs its own applets (mount, chown...) before any in PATH.
export PATH=__PATH__
fail() { echo "SBXVM-FAIL: $*" >/dev/console; sync; /run/sbx-vm/busybox poweroff -f; }
exec </dev/null >/dev/console 2>&1
mkdir -p /dev/pts /dev/shm
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5 devpts /dev/pts
ln -sf pts/ptmx /dev/ptmx 2>/dev/null
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
# What udev would add: the /dev/fd links (bash's process substitution uses them).
ln -sf /proc/self/fd /dev/fd
ln -sf /proc/self/fd/0 /dev/stdin
ln -sf /proc/self/fd/1 /dev/stdout
ln -sf /proc/self/fd/2 /dev/stderr
mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup || fail "mount cgroup2"
set -a
. /run/job/vars || fail "read /run/job/vars"
set +a
echo '+memory +cpu +pids' >/sys/fs/cgroup/cgroup.subtree_control || fail "enable controllers"
D=/sys/fs/cgroup/sbx-vm-$VM_USER
mkdir "$D" || fail "mkdir $D"
# What systemd's Delegate=yes does: the directory and these three files are the user's.
chown "$VM_UID:$VM_GID" "$D" "$D/cgroup.procs" "$D/cgroup.subtree_control" \
    "$D/cgroup.threads" || fail "chown $D"
if [ -d "$VM_HOME" ]; then
    mount -t tmpfs -o "mode=0700,uid=$VM_UID,gid=$VM_GID" tmpfs "$VM_HOME" || fail "tmpfs home"
fi
mkdir -p "/run/user/$VM_UID"
chown "$VM_UID:$VM_GID" "/run/user/$VM_UID"
chmod 0700 "/run/user/$VM_UID"
hostname sbx-vm 2>/dev/null
echo "SBXVM-BOOTED $(cut -d' ' -f1 /proc/uptime)"
sh -c 'echo $$ >"$1/cgroup.procs" || exit 125
    exec /usr/bin/setpriv --reuid="$VM_UID" --regid="$VM_GID" --init-groups -- \
        /usr/bin/env -i PATH="$2" HOME="$VM_HOME" USER="$VM_USER" LOGNAME="$VM_USER" \
        LANG=C.UTF-8 XDG_RUNTIME_DIR="/run/user/$VM_UID" $VM_ENV \
        /usr/bin/timeout -k 5 "$VM_TIMEOUT" /bin/bash /run/job/script.sh' sh "$D" "$PATH" \
    >/run/job/output 2>&1
rc=$?
echo "$rc" >/run/job/rc
sync
echo "SBXVM-EXIT $rc"
/run/sbx-vm/busybox poweroff -f
echo o >/proc/sysrq-trigger
"""


def unavailable_reason(cache: Path = CACHE) -> str | None:
    """Why the VM can't run here, or None."""
    machine = platform.machine()
    if machine != "x86_64":
        return (f"the cgroup v2 test VM is x86_64 only (qemu-system-x86_64 with Debian's "
                f"amd64 kernel); this machine is {machine}")
    if shutil.which(QEMU) is None:
        return f"{QEMU} missing: run scripts/setup.sh (Debian's qemu-system-x86)"
    if not (cache / "vmlinuz").is_file() or not (cache / "modules").is_dir():
        return f"no VM kernel in {cache}: run scripts/setup.sh (it runs scripts/mkvm.sh)"
    if not BUSYBOX.is_file():
        return f"{BUSYBOX} missing: run scripts/setup.sh (Debian's busybox-static)"
    return None


# -- kernel ----------------------------------------------------------------------------

def kernel_image(cache: Path = CACHE) -> Path:
    """The kernel to boot: CACHE/vmlinux, the uncompressed ELF, where the kernel has
    CONFIG_PVH (Debian's has): QEMU enters it directly, without the BIOS's real mode
    and the xz decompression, both slow in TCG (boot 2.5 s instead of 5 here). Made
    from vmlinuz once and kept; vmlinuz itself where that can't be done."""
    vmlinuz, vmlinux = cache / "vmlinuz", cache / "vmlinux"
    if vmlinux.is_file():
        return vmlinux
    try:
        if "\nCONFIG_PVH=y\n" not in (cache / "config").read_text():
            return vmlinuz
        data = vmlinuz.read_bytes()
        start = data.find(b"\xfd7zXZ\x00")  # CONFIG_KERNEL_XZ, Debian's choice
        if start < 0:
            return vmlinuz
        elf = lzma.LZMADecompressor(lzma.FORMAT_XZ).decompress(data[start:])
        if not elf.startswith(b"\x7fELF"):
            return vmlinuz
        tmp = cache / f".vmlinux.{os.getpid()}"
        tmp.write_bytes(elf)
        tmp.chmod(0o644)
        tmp.rename(vmlinux)
        return vmlinux
    except (OSError, lzma.LZMAError):
        return vmlinuz


# -- initramfs -------------------------------------------------------------------------

def _modinfo_depends(path: Path) -> list[str]:
    """The depends= of a (not compressed) module, from its .modinfo strings."""
    m = re.search(rb"(?:^|\0)depends=([^\0]*)\0", path.read_bytes())
    return [d for d in m.group(1).decode().split(",") if d] if m else []


def module_order(moddir: Path, wanted: tuple[str, ...] = MODULES) -> list[Path]:
    """`wanted` and what they depend on, dependencies first."""
    index = {}
    for ko in moddir.rglob("*.ko"):
        index[ko.name[:-3].replace("-", "_")] = ko
    order: list[Path] = []
    seen: set[str] = set()

    def visit(name: str, chain: tuple[str, ...]) -> None:
        key = name.replace("-", "_")
        if key in seen:
            return
        if key not in index:
            raise RuntimeError(f"module {name} (for {' <- '.join(chain) or name}) not in "
                               f"{moddir}: rerun scripts/mkvm.sh with an empty cache")
        seen.add(key)
        for dep in _modinfo_depends(index[key]):
            visit(dep, (name, *chain))
        order.append(index[key])

    for name in wanted:
        visit(name, ())
    return order


class _Cpio:
    """A newc archive, as the kernel unpacks an initramfs (no compression)."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.ino = 1

    def add(self, name: str, mode: int, body: bytes = b"", rdev: tuple[int, int] = (0, 0)
            ) -> None:
        encoded = name.encode() + b"\0"
        fields = (self.ino, mode, 0, 0, 1, 0, len(body), 0, 0, rdev[0], rdev[1],
                  len(encoded), 0)
        self.ino += 1
        self.data += b"070701" + b"".join(b"%08X" % f for f in fields) + encoded
        self.data += b"\0" * (-len(self.data) % 4)
        self.data += body
        self.data += b"\0" * (-len(self.data) % 4)

    def dir(self, name: str) -> None:
        self.add(name, stat.S_IFDIR | 0o755)

    def file(self, name: str, body: bytes, perm: int = 0o644) -> None:
        self.add(name, stat.S_IFREG | perm, body)

    def finish(self) -> bytes:
        self.add("TRAILER!!!", 0)
        return bytes(self.data)


def build_initramfs(dest: Path, cache: Path = CACHE) -> Path:
    modules = module_order(cache / "modules")
    cpio = _Cpio()
    for d in ("bin", "dev", "proc", "sys", "newroot", "modules"):
        cpio.dir(d)
    cpio.add("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1))
    cpio.file("bin/busybox", BUSYBOX.read_bytes(), 0o755)
    cpio.file("init", STAGE1.encode(), 0o755)
    cpio.file("stage2", STAGE2.replace("__PATH__", CLEAN_PATH).encode(), 0o755)
    names = []
    for ko in modules:
        name = ko.name[:-3]
        names.append(name)
        cpio.file(f"modules/{name}.ko", ko.read_bytes())
    cpio.file("modules/order", ("\n".join(names) + "\n").encode())
    dest.write_bytes(cpio.finish())
    return dest


# -- running ---------------------------------------------------------------------------

@dataclass
class VmResult:
    rc: int | None  # the script's exit status; None if the guest never told it
    output: str  # the script's stdout and stderr
    console: str  # the serial console: kernel messages and the rig's markers
    boot_s: float | None  # from starting qemu to the guest's BOOTED marker
    wall_s: float  # from starting qemu to its exit

    def describe(self) -> str:
        return (f"rc={self.rc} boot={self.boot_s} wall={self.wall_s:.1f}s\n"
                f"--- output ---\n{self.output}\n--- console (end) ---\n"
                f"{self.console[-4000:]}")


def accel() -> list[str]:
    """TCG, unless SBX_VM_ACCEL=kvm. TCG works everywhere; KVM hung on this
    project's (nested) CI machines, which have a /dev/kvm, so it is never guessed.
    qemu64 rather than max: glibc picks no AVX2 routines that TCG emulates slowly
    (sbx starts 20-40% faster)."""
    if os.environ.get("SBX_VM_ACCEL") == "kvm":
        return ["-accel", "kvm", "-cpu", "host"]
    return ["-accel", "tcg", "-cpu", "qemu64"]


def qemu_argv(kernel: Path, initrd: Path, job: Path, memory_mb: int, cpus: int) -> list[str]:
    cmdline = ("console=ttyS0 quiet loglevel=4 panic=-1 mitigations=off "
               "random.trust_cpu=on rdinit=/init")
    return [
        QEMU, "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-M", "pc", *accel(), "-m", str(memory_mb), "-smp", str(cpus),
        "-serial", "stdio", "-monitor", "none",
        "-kernel", str(kernel), "-initrd", str(initrd), "-append", cmdline,
        "-virtfs", "local,path=/,mount_tag=root,security_model=none,readonly=on,"
                   "multidevs=remap",
        "-virtfs", f"local,path={job},mount_tag=job,security_model=none",
    ]


def run_script(script: str, job: Path, *, user: str = "sbxtest",
               files: Mapping[str, Path | bytes] | None = None,
               env: Mapping[str, str] | None = None, timeout: float = 240,
               memory_mb: int = 1024, cpus: int = 2, cache: Path = CACHE) -> VmResult:
    """Boot the VM, run `script` with bash as `user` in a delegated cgroup v2, power off.

    `job` is a fresh folder for this run; `files` are copied into it (the guest sees
    them in /run/job), `env` is added to the script's environment. The script gets
    `timeout` seconds inside the guest; the VM as a whole a minute more."""
    import pwd

    pw = pwd.getpwnam(user)
    job.mkdir(parents=True, exist_ok=False)
    job.chmod(0o755)
    (job / "script.sh").write_text(script)
    for name, src in (files or {}).items():
        body = src if isinstance(src, bytes) else Path(src).read_bytes()
        (job / name).write_bytes(body)
    extra = " ".join(shlex.quote(f"{k}={v}") for k, v in (env or {}).items())
    vars_ = {"VM_USER": pw.pw_name, "VM_UID": str(pw.pw_uid), "VM_GID": str(pw.pw_gid),
             "VM_HOME": pw.pw_dir, "VM_TIMEOUT": str(int(timeout)), "VM_ENV": extra}
    # VM_ENV is expanded unquoted in STAGE2, so each KEY=VALUE stays one word only
    # without blanks: refuse the others rather than split them.
    for k, v in (env or {}).items():
        if re.search(r"\s|['\"\\$`]", f"{k}{v}"):
            raise ValueError(f"env {k}={v!r}: no blanks or shell quoting in VM env")
    (job / "vars").write_text("".join(f"{k}={shlex.quote(v)}\n" for k, v in vars_.items()))
    for p in job.iterdir():
        p.chmod(0o644)
    initrd = build_initramfs(job.parent / f"{job.name}.initramfs", cache)

    argv = qemu_argv(kernel_image(cache), initrd, job, memory_mb, cpus)
    console = bytearray()
    boot_s = None
    start = time.monotonic()
    deadline = start + timeout + 60
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                console += b"\n[vm_rig: timed out, qemu killed]\n"
                break
            ready, _, _ = select.select([fd], [], [], min(left, 1.0))
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            console += chunk
            if boot_s is None and BOOTED.encode() in console:
                boot_s = round(time.monotonic() - start, 2)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
        initrd.unlink(missing_ok=True)
    wall_s = time.monotonic() - start
    text = console.decode(errors="replace").replace("\r\n", "\n")
    (job / "console").write_text(text)
    rc = None
    m = re.search(rf"^{EXIT} (\d+)", text, re.M)
    if m:
        rc = int(m.group(1))
    output_file = job / "output"
    output = output_file.read_text(errors="replace") if output_file.exists() else ""
    return VmResult(rc, output, text, boot_s, wall_s)
