"""fs/overlay.py driven directly, without FUSE: the union's decisions (what to copy
up, where whiteouts go) checked against the upper directory, fast. Runs as root, as
scripts/test.sh runs pytest (chown and the whiteout device need it); the same
semantics through a real mount, as an unprivileged user, are in
tests/integration/test_fs_semantics.py.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from fs import copyup, syscalls
from fs.mapping import IdMap, parse_mapping
from fs.node import ROOT_INO
from fs.overlay import Attr, Overlay, SetAttr

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown, mknod 0/0): "
                                "run scripts/test.sh")


def build(root: Path, spec: dict[str, str | None]) -> Path:
    """path -> data (a file), "/" suffix (a directory), None (a whiteout device)."""
    root.mkdir(parents=True, exist_ok=True)
    for rel, data in spec.items():
        p = root / rel.rstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith("/"):
            p.mkdir(exist_ok=True)
        elif data is None:
            os.mknod(p, stat.S_IFCHR | 0o600, 0)
        else:
            p.write_text(data)
    return root


@pytest.fixture
def layers(tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    l1 = build(tmp_path / "l1", {"a": "l1a", "d/y": "y", "cw": None, ".wh.aufs": ""})
    l2 = build(tmp_path / "l2", {"a": "l2a", "b": "b", "d/x": "x", "cw": "c", "aufs": "a",
                                 "only2/z": "z"})
    return l1, l2, tmp_path / "u", tmp_path / "w"


@pytest.fixture
def fs(layers: tuple[Path, Path, Path, Path]) -> Iterator[Overlay]:
    l1, l2, u, w = layers
    u.mkdir()
    o = Overlay([str(l1), str(l2)], str(u), str(w))
    yield o
    o.close()


def look(fs: Overlay, path: str) -> Attr | None:
    ino = ROOT_INO
    attr = None
    for name in path.split("/"):
        attr = fs.lookup(ino, name.encode())
        if attr is None:
            return None
        ino = attr.ino
    return attr


def ino(fs: Overlay, path: str) -> int:
    attr = look(fs, path)
    assert attr is not None, path
    return attr.ino


def names(fs: Overlay, path: str = "") -> list[str]:
    fh = fs.opendir(ino(fs, path) if path else ROOT_INO)
    out: list[str] = []
    fs.readdir(fh, 0, lambda n, a, off: out.append(n.decode()) is None)
    fs.releasedir(fh)
    return sorted(out)


def errno_of(fn: object, *args: object) -> int:
    with pytest.raises(OSError) as exc:
        fn(*args)  # type: ignore[operator]
    return exc.value.errno or 0


def kind(p: Path) -> str:
    try:
        st = p.lstat()
    except FileNotFoundError:
        return "missing"
    if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
        return "whiteout"
    return "dir" if stat.S_ISDIR(st.st_mode) else "file"


def read(fs: Overlay, path: str) -> bytes:
    fh = fs.open(ino(fs, path), os.O_RDONLY, 0)
    try:
        return fs.read(fh, 0, 1 << 20)
    finally:
        fs.release(fh)


def test_lookup_and_listing(fs: Overlay) -> None:
    assert names(fs) == [".", "..", "a", "b", "d", "only2"]
    assert names(fs, "d") == [".", "..", "x", "y"]
    assert read(fs, "a") == b"l1a"
    assert look(fs, "cw") is None and look(fs, "aufs") is None
    assert look(fs, ".wh.aufs") is None
    d = look(fs, "d")
    assert d is not None and d.nlink == 1 and stat.S_ISDIR(d.mode)


def test_lookup_counts_follow_the_replies(fs: Overlay) -> None:
    a = ino(fs, "a")
    ino(fs, "a")
    assert fs.table.get(a).lookups == 2
    fs.forget([(a, 2)])
    assert errno_of(fs.table.get, a) == errno.ESTALE
    # readdirplus: an entry the reply has no room for takes no count
    fh = fs.opendir(ROOT_INO)
    taken: list[str] = []
    fs.readdir(fh, 0, lambda n, at, off: len(taken) < 3 and taken.append(n.decode()) is None)
    fs.releasedir(fh)
    counted = [i for i in fs.table if i.ino != ROOT_INO and i.lookups]
    assert len(counted) == 1  # ".", ".." and one entry: only the entry counts


def test_write_copies_up_with_metadata(fs: Overlay, layers: tuple[Path, ...]) -> None:
    l1, _, u, w = layers
    os.chmod(l1 / "a", 0o640)
    os.chown(l1 / "a", 12, 34)
    os.setxattr(l1 / "a", "user.k", b"v")
    os.setxattr(l1 / "a", "user.overlay.private", b"x")  # the union's: not copied
    os.utime(l1 / "a", ns=(10**9, 2 * 10**9))
    fh = fs.open(ino(fs, "a"), os.O_WRONLY, 0)
    fs.write(fh, 0, b"L")
    fs.release(fh)
    st = (u / "a").lstat()
    assert (u / "a").read_bytes() == b"L1a"
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o640, 12, 34)
    assert os.listxattr(u / "a") == ["user.k"]
    assert os.listdir(w / "work") == []  # the copy was built there and moved


def test_truncating_open_copies_no_data(fs: Overlay, layers: tuple[Path, ...],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    def no_copy(*a: object) -> None:
        raise AssertionError("data copied for O_TRUNC")

    monkeypatch.setattr(copyup, "copy_data", no_copy)
    fh = fs.open(ino(fs, "b"), os.O_WRONLY | os.O_TRUNC, 0)
    fs.release(fh)
    assert (layers[2] / "b").read_bytes() == b""


def test_whiteouts(fs: Overlay, layers: tuple[Path, ...]) -> None:
    u = layers[2]
    fs.unlink(ROOT_INO, b"b")
    assert kind(u / "b") == "whiteout"
    d = ino(fs, "d")
    assert errno_of(fs.rmdir, ROOT_INO, b"d") == errno.ENOTEMPTY
    fs.unlink(d, b"x")
    fs.unlink(d, b"y")
    fs.rmdir(ROOT_INO, b"d")
    assert kind(u / "d") == "whiteout"
    fs.mkdir(ROOT_INO, b"d", 0o755, 0, 0)
    # trusted.overlay.opaque as real root, user.overlay.opaque in a user namespace
    assert {os.getxattr(u / "d", n) for n in os.listxattr(u / "d")} == {b"y"}
    assert names(fs, "d") == [".", ".."]
    fh, _ = fs.create(ROOT_INO, b"b", 0o644, os.O_WRONLY, 0, 0)
    fs.release(fh)
    assert kind(u / "b") == "file"
    assert errno_of(fs.mknod, ROOT_INO, b"wh", stat.S_IFCHR | 0o600, 0, 0, 0) == errno.EPERM
    assert errno_of(fs.mkdir, ROOT_INO, b".wh.x", 0o755, 0, 0) == errno.EINVAL


def test_aufs_whiteouts_when_the_device_cannot_be_made(layers: tuple[Path, ...],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    l1, l2, u, w = layers
    u.mkdir()
    monkeypatch.setenv("FUSE_OVERLAYFS_DISABLE_OVL_WHITEOUT", "1")
    fs = Overlay([str(l1), str(l2)], str(u), str(w))
    try:
        fs.unlink(ROOT_INO, b"b")
        assert kind(u / "b") == "missing" and kind(u / ".wh.b") == "file"
        assert look(fs, "b") is None
        fs.symlink(ROOT_INO, b"b", b"t", 0, 0)
        assert kind(u / ".wh.b") == "missing" and os.readlink(u / "b") == "t"
    finally:
        fs.close()


def test_rename_rules(fs: Overlay, layers: tuple[Path, ...]) -> None:
    u = layers[2]
    assert errno_of(fs.rename, ROOT_INO, b"d", ROOT_INO, b"d2", 0) == errno.EXDEV
    fs.rename(ROOT_INO, b"b", ROOT_INO, b"b2", 0)
    assert kind(u / "b") == "whiteout" and (u / "b2").read_text() == "b"
    nd = fs.mkdir(ROOT_INO, b"nd", 0o755, 0, 0)
    fs.mkdir(nd.ino, b"in", 0o755, 0, 0)
    fs.rename(ROOT_INO, b"nd", ino(fs, "d"), b"moved", 0)
    assert names(fs, "d/moved") == [".", "..", "in"]
    assert errno_of(fs.rename, ROOT_INO, b"a", ROOT_INO, b"b2",
                    syscalls.RENAME_NOREPLACE) == errno.EEXIST
    fs.rename(ROOT_INO, b"a", ROOT_INO, b"b2", syscalls.RENAME_EXCHANGE)
    assert read(fs, "a") == b"b" and read(fs, "b2") == b"l1a"
    assert errno_of(fs.rename, ROOT_INO, b"a", ROOT_INO, b"d", 0) == errno.EISDIR


def test_hard_links_of_a_lower_file(tmp_path: Path) -> None:
    l1 = build(tmp_path / "l1", {"h1": "same", "s/": ""})
    os.link(l1 / "h1", l1 / "s" / "h2")
    (tmp_path / "u").mkdir()
    fs = Overlay([str(l1)], str(tmp_path / "u"), str(tmp_path / "w"))
    try:
        a, b = ino(fs, "h1"), ino(fs, "s/h2")
        assert a == b
        fh = fs.open(a, os.O_RDWR, 0)
        fs.write(fh, 0, b"SAME")
        fs.release(fh)
        assert read(fs, "s/h2") == b"SAME"
        assert os.stat(tmp_path / "u" / "h1").st_ino == os.stat(tmp_path / "u/s/h2").st_ino
    finally:
        fs.close()


def test_setattr(fs: Overlay, layers: tuple[Path, ...]) -> None:
    u = layers[2]
    a = ino(fs, "a")
    attr = fs.setattr(a, SetAttr(mode=stat.S_IFREG | 0o4755), None, 0)
    assert stat.S_IMODE(attr.mode) == 0o4755
    attr = fs.setattr(a, SetAttr(uid=7, gid=8), None, 0)
    # chown clears setuid (chown(2)); the filesystem must, libfuse leaves it to us
    assert (attr.uid, attr.gid, stat.S_IMODE(attr.mode)) == (7, 8, 0o755)
    attr = fs.setattr(a, SetAttr(size=1, mtime_ns=5 * 10**9), None, 0)
    assert attr.size == 1 and attr.mtime_ns == 5 * 10**9
    assert (u / "a").read_text() == "l"
    d = ino(fs, "d")
    fs.setattr(d, SetAttr(mode=stat.S_IFDIR | 0o700), None, 0)
    assert stat.S_IMODE((u / "d").stat().st_mode) == 0o700 and kind(u / "d/x") == "missing"


def test_fallocate(fs: Overlay, layers: tuple[Path, ...]) -> None:
    """fallocate of the upper file, the mode passed through (the kernel comparison is
    in tests/integration/test_fs_semantics.py)."""
    u = layers[2]
    fh = fs.open(ino(fs, "a"), os.O_WRONLY, 1000)  # copies up
    os.chmod(u / "a", 0o4755)
    fs.fallocate(fh, 0, 0, 1 << 16)
    st = (u / "a").stat()
    assert (u / "a").read_bytes()[:3] == b"l1a" and st.st_size == 1 << 16
    assert st.st_blocks * 512 >= 1 << 16
    assert stat.S_IMODE(st.st_mode) == 0o755  # an unprivileged writer's, as write()
    fs.fallocate(fh, syscalls.FALLOC_FL_KEEP_SIZE, 1 << 16, 1 << 16)
    st = (u / "a").stat()
    assert st.st_size == 1 << 16 and st.st_blocks * 512 >= 1 << 17
    fs.fallocate(fh, syscalls.FALLOC_FL_PUNCH_HOLE | syscalls.FALLOC_FL_KEEP_SIZE, 0, 2)
    assert (u / "a").read_bytes()[:3] == b"\0\0a"
    assert errno_of(fs.fallocate, fh, syscalls.FALLOC_FL_PUNCH_HOLE, 0, 1) == errno.EOPNOTSUPP
    assert errno_of(fs.fallocate, fh, 0, 0, 0) == errno.EINVAL
    fs.release(fh)
    fh = fs.open(ino(fs, "b"), os.O_RDONLY, 0)  # the kernel never sends this one
    assert errno_of(fs.fallocate, fh, 0, 0, 1) == errno.EBADF
    fs.release(fh)
    assert kind(u / "b") == "missing"


def test_xattr_names(fs: Overlay, layers: tuple[Path, ...]) -> None:
    u = layers[2]
    b = ino(fs, "b")
    fs.setxattr(b, b"user.overlay.nested", b"1")
    assert os.listxattr(u / "b") == ["user.overlay.overlay.nested"]
    assert fs.listxattr(b) == [b"user.overlay.nested"]
    assert fs.getxattr(b, b"user.overlay.nested") == b"1"
    assert errno_of(fs.setxattr, b, b"user.fuseoverlayfs.x", b"1") == errno.EPERM
    assert fs.getxattr(b, b"trusted.overlay.opaque") is None  # ENODATA
    fs.removexattr(b, b"user.overlay.nested")
    assert fs.listxattr(b) == []


def test_uidmapping(layers: tuple[Path, ...]) -> None:
    l1, l2, u, w = layers
    u.mkdir()
    fs = Overlay([str(l1), str(l2)], str(u), str(w),
                 uids=IdMap(parse_mapping("0:1000:1")), gids=IdMap(parse_mapping("0:1000:1")))
    try:
        a = look(fs, "a")
        assert a is not None and (a.uid, a.gid) == (1000, 1000)
        fh, attr = fs.create(ROOT_INO, b"mine", 0o644, os.O_WRONLY, 1000, 1000)
        fs.release(fh)
        assert (attr.uid, attr.gid) == (1000, 1000)
        assert ((u / "mine").stat().st_uid, (u / "mine").stat().st_gid) == (0, 0)
    finally:
        fs.close()


def test_read_only(layers: tuple[Path, ...]) -> None:
    l1, l2, _, _ = layers
    fs = Overlay([str(l1), str(l2)])
    try:
        assert read(fs, "a") == b"l1a"
        assert errno_of(fs.open, ino(fs, "a"), os.O_WRONLY, 0) == errno.EROFS
        assert errno_of(fs.unlink, ROOT_INO, b"a") == errno.EROFS
        assert errno_of(fs.mkdir, ROOT_INO, b"n", 0o755, 0, 0) == errno.EROFS
    finally:
        fs.close()


def test_a_failed_copy_up_leaves_nothing_behind(fs: Overlay, layers: tuple[Path, ...],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    u, w = layers[2], layers[3]
    real_rename = os.rename
    fail_at: list[bytes] = []

    def failing(src: object, dst: object, **kw: object) -> None:
        if isinstance(src, bytes) and src.startswith(b"#sbx-fs") and dst in fail_at:
            raise OSError(errno.ENOSPC, "no space")
        real_rename(src, dst, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "rename", failing)
    x = ino(fs, "d/x")
    fail_at[:] = [b"d"]  # the parent directory's copy fails
    assert errno_of(fs.open, x, os.O_WRONLY, 0) == errno.ENOSPC
    assert os.listdir(w / "work") == [] and kind(u / "d") == "missing"
    fail_at[:] = [b"x"]  # then the file's
    assert errno_of(fs.open, x, os.O_WRONLY, 0) == errno.ENOSPC
    assert os.listdir(w / "work") == [] and kind(u / "d") == "dir"
    assert kind(u / "d/x") == "missing"
    fail_at[:] = []
    fs.release(fs.open(x, os.O_WRONLY, 0))
    assert kind(u / "d/x") == "file" and read(fs, "d/x") == b"x"


def test_the_work_directory_is_emptied_and_must_share_the_upper_filesystem(
        layers: tuple[Path, ...]) -> None:
    l1, _, u, w = layers
    u.mkdir()
    (w / "work" / "stale" / "deep").mkdir(parents=True)
    (w / "work" / "file").write_text("x")
    Overlay([str(l1)], str(u), str(w)).close()
    assert os.listdir(w / "work") == []
    assert errno_of(Overlay, [str(l1) + "/missing"], str(u), str(w)) == errno.ENOENT
    shm = Path("/dev/shm")
    if shm.is_dir() and shm.stat().st_dev != u.stat().st_dev:
        other = shm / f"sbx-fs-test-{os.getpid()}"
        try:
            assert errno_of(Overlay, [str(l1)], str(u), str(other)) == errno.EXDEV
        finally:
            if other.exists():
                other.rmdir()
