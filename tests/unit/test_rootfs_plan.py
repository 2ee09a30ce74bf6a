"""The mount plan and its executor, against a recording fake of the syscalls."""

from sandbox.runtime import rootfs
from sandbox.runtime import syscalls as sc
from sandbox.runtime.rootfs import Executor, parse_options, plan
from sandbox.runtime.spec import IdMapping
from sandbox.runtime.specgen import RunOptions, generate
from sandbox.runtime.users import ExecUser


def _spec(root, **kw):
    opts = RunOptions(rootfs=str(root), args=["true"], **kw)
    maps = [IdMapping(0, 1000, 1)]
    return generate(opts, ExecUser(0, 0, [], "root", "/root"), maps, maps, {}, "c" * 64, "/")


def test_parse_options():
    o = parse_options(["nosuid", "noexec", "mode=755", "size=1k", "rslave", "z"])
    assert o.flags == sc.MS_NOSUID | sc.MS_NOEXEC
    assert o.data == "mode=755,size=1k"
    assert o.propagation == sc.MS_SLAVE | sc.MS_REC
    assert parse_options(["ro", "rw"]).flags == 0


def test_plan_orders_dev_symlinks_after_dev_and_masks_last(tmp_path):
    steps = plan(_spec(tmp_path, workdir="/work"))
    kinds = [(s.kind, s.dest) for s in steps]
    dev = kinds.index(("mount", "/dev"))
    assert kinds[dev + 1] == ("symlink", "/dev/fd")
    assert kinds.index(("symlink", "/dev/ptmx")) < kinds.index(("mount", "/dev/pts"))
    assert ("mkdir", "/work") in kinds
    first_mask = next(i for i, k in enumerate(kinds) if k[0] == "mask")
    assert all(k[0] in ("mask", "readonly") for k in kinds[first_mask:])


def test_executor_makes_the_calls_in_order(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    fake = sc.RecordingSyscalls()
    rootfs.setup(_spec(root, read_only=True), fake)
    mounts = [c for c in fake.calls if c[0] == "mount"]
    # First: slave propagation on /, then the rootfs bound onto itself.
    assert mounts[0][1] == (None, "/", None, sc.MS_REC | sc.MS_SLAVE, None)
    assert mounts[1][1][:2] == (str(root), str(root))
    proc = next(c for c in mounts if c[1][2] == "proc")
    assert proc[1][1] == str(root / "proc")
    # Mount points were created inside the root, never outside.
    assert (root / "proc").is_dir() and (root / "dev").is_dir()
    # Read-only root: a bind remount of the root with MS_RDONLY before pivot_root.
    names = [c[0] for c in fake.calls]
    pivot = names.index("pivot_root")
    ro = [c for c in fake.calls[:pivot] if c[0] == "mount" and c[1][1] == str(root)
          and c[1][3] & sc.MS_REMOUNT]
    assert ro and ro[-1][1][3] & sc.MS_RDONLY
    assert names[-1] == "umount2"


def test_volume_target_symlink_cannot_escape_the_root(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "mnt").symlink_to(str(outside))  # absolute link to a host dir
    src = tmp_path / "src"
    src.mkdir()
    ex = Executor(str(root), sc.RecordingSyscalls())
    step = rootfs.Step("bind", "/mnt/x", source=str(src), options=("rbind",))
    ex.run(step)
    target = ex.sys.calls[-1][1][1]
    assert target.startswith(str(root) + "/")
    assert not (outside / "x").exists()


def test_sysfs_eperm_falls_back_to_a_read_only_bind(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    import errno

    class SysfsDenied(sc.RecordingSyscalls):
        def mount(self, source, target, fstype, flags=0, data=None):
            super().mount(source, target, fstype, flags, data)
            if fstype == "sysfs":
                raise sc.SyscallError("mount sysfs", errno.EPERM, target)

    fake = SysfsDenied()
    ex = Executor(str(root), fake)
    ex.run(rootfs.Step("mount", "/sys", source="sysfs", fstype="sysfs", options=("ro",)))
    binds = [c for c in fake.calls if c[1][0] == "/sys"]
    assert binds and binds[0][1][3] == sc.MS_BIND | sc.MS_REC
