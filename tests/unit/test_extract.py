"""extract_layer on well-formed layers: what it keeps, in each mode and format."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import subprocess
import tarfile
import threading
from pathlib import Path

import hostile_layers as h
import pytest

from sandbox.images import extract as ex
from sandbox.images import whiteout as wh
from sandbox.images.extract import (
    OVERRIDE_STAT_XATTR,
    CorruptLayer,
    DiffIDMismatch,
    ExtractStats,
    LayerError,
    UnsupportedLayer,
    extract_layer,
)

needs_zstd = pytest.mark.skipif(
    not h.zstd_available(), reason="the zstd command is missing (apt-get install zstd)"
)


def run(data: bytes, dest: Path, **kw: object) -> ExtractStats:
    dest.mkdir(exist_ok=True)
    return extract_layer(io.BytesIO(data), dest, **kw)  # type: ignore[arg-type]


def xattr(path: Path, name: str) -> bytes | None:
    try:
        return os.getxattr(path, name, follow_symlinks=False)
    except OSError:
        return None


BASIC = [
    h.directory("etc", mode=0o755),
    h.file("etc/passwd", b"root:x:0:0::/root:/bin/sh\n", mode=0o644),
    h.directory("bin", mode=0o755),
    h.file("bin/busybox", b"\x7fELF" * 100, mode=0o755, uid=0, gid=0),
    h.symlink("bin/sh", "busybox"),
    h.hardlink("bin/ls", "bin/busybox"),
]


# -- compression -----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["none", "gzip", pytest.param("zstd", marks=needs_zstd)])
def test_compressions_give_the_same_tree_and_diff_id(tmp_path: Path, kind: str) -> None:
    tar = h.tar_bytes(BASIC)
    stats = run(h.compress(tar, kind), tmp_path / "d")
    assert stats.compression == kind
    assert stats.diff_id == "sha256:" + hashlib.sha256(tar).hexdigest()
    assert stats.tar_size == len(tar)
    assert (tmp_path / "d/etc/passwd").read_bytes().startswith(b"root:x")
    assert os.readlink(tmp_path / "d/bin/sh") == "busybox"
    assert stats.files == len(BASIC)
    assert stats.bytes == len(BASIC[1].data) + len(BASIC[3].data)


@needs_zstd
def test_zstd_from_a_real_file_and_from_a_stream_leaves_no_thread(tmp_path: Path) -> None:
    data = h.zstd_bytes(h.tar_bytes(BASIC))
    blob = tmp_path / "layer.zst"
    blob.write_bytes(data)
    before = threading.active_count()
    with open(blob, "rb") as f:  # a real file: handed to zstd as its stdin
        run_from = extract_layer(f, _mk(tmp_path / "a"))
    stream = extract_layer(io.BytesIO(data), _mk(tmp_path / "b"))  # pumped by a thread
    assert run_from.diff_id == stream.diff_id
    assert threading.active_count() == before


def test_gzip_from_a_real_file_at_an_offset(tmp_path: Path) -> None:
    blob = tmp_path / "layer"
    blob.write_bytes(b"junk" + h.gzip_bytes(h.tar_bytes(BASIC)))
    with open(blob, "rb") as f:
        f.read(4)
        stats = extract_layer(f, _mk(tmp_path / "d"))
    assert stats.compression == "gzip"
    assert (tmp_path / "d/bin/busybox").exists()


@needs_zstd
def test_zstd_from_a_real_file_at_an_offset(tmp_path: Path) -> None:
    blob = tmp_path / "layer"
    blob.write_bytes(b"junk" + h.zstd_bytes(h.tar_bytes(BASIC)))
    with open(blob, "rb") as f:
        f.read(4)
        stats = extract_layer(f, _mk(tmp_path / "d"))
    assert stats.compression == "zstd"


def test_missing_zstd_tool_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(UnsupportedLayer, match="zstd") as info:
        run(b"\x28\xb5\x2f\xfd" + b"\0" * 100, tmp_path / "d")
    assert "apt-get install zstd" in (info.value.hint or "")


def test_xz_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedLayer, match="xz or bzip2"):
        run(b"\xfd7zXZ\x00" + b"\0" * 100, tmp_path / "d")


def test_expected_diff_id(tmp_path: Path) -> None:
    tar = h.tar_bytes(BASIC)
    good = "sha256:" + hashlib.sha256(tar).hexdigest()
    assert run(h.gzip_bytes(tar), tmp_path / "a", expected_diff_id=good).diff_id == good
    with pytest.raises(DiffIDMismatch) as info:
        run(h.gzip_bytes(tar), tmp_path / "b", expected_diff_id="sha256:" + "0" * 64)
    assert info.value.actual == good


def test_gzip_with_trailing_garbage_is_corrupt(tmp_path: Path) -> None:
    with pytest.raises(CorruptLayer):
        run(h.gzip_bytes(h.tar_bytes(BASIC)) + b"garbage!", tmp_path / "d")


def test_a_failing_source_is_a_read_error_not_a_member_error(tmp_path: Path) -> None:
    data = h.tar_bytes([h.file("big", b"x" * 100_000)])

    class Dropped(io.BytesIO):
        def read(self, size: int | None = -1, /) -> bytes:
            if self.tell() > 20_000:
                raise ConnectionResetError(104, "Connection reset by peer")
            return super().read(size)

    with pytest.raises(LayerError, match=r"reading the layer failed.*reset") as info:
        extract_layer(Dropped(data), _mk(tmp_path / "d"))
    assert not isinstance(info.value, ex.MemberError)


def test_empty_stream_is_corrupt(tmp_path: Path) -> None:
    with pytest.raises(CorruptLayer):
        run(b"", tmp_path / "d")


def test_empty_tar_is_an_empty_layer(tmp_path: Path) -> None:
    stats = run(h.tar_bytes([]), tmp_path / "d")
    assert stats.files == 0
    assert list((tmp_path / "d").iterdir()) == []


def _mk(p: Path) -> Path:
    p.mkdir()
    return p


# -- metadata ----------------------------------------------------------------------


def test_modes_special_bits_and_owners_real(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("owners='real' to other ids needs root (or root of a user namespace)")
    layer = h.tar_bytes(
        [
            h.directory("tmp", mode=0o1777),
            h.directory("srv", mode=0o2750, uid=1000, gid=1001),
            h.directory("ro", mode=0o555),
            h.file("ro/inside", b"x", mode=0o400),
            h.file("su", b"x", mode=0o4755, uid=0, gid=0),
            h.file("sg", b"x", mode=0o2711, uid=1000, gid=1000),
            h.file("owned", b"x", mode=0o640, uid=1000, gid=1001),
            h.symlink("link", "owned", uid=1000, gid=1001),
            h.fifo("pipe", mode=0o620, uid=1000, gid=1000),
        ]
    )
    d = tmp_path / "d"
    run(layer, d, owners="real")
    mode = lambda p: stat.S_IMODE(os.lstat(d / p).st_mode)  # noqa: E731
    owner = lambda p: (os.lstat(d / p).st_uid, os.lstat(d / p).st_gid)  # noqa: E731
    assert mode("tmp") == 0o1777
    assert mode("srv") == 0o2750 and owner("srv") == (1000, 1001)
    assert mode("ro") == 0o555 and (d / "ro/inside").read_bytes() == b"x"
    assert mode("su") == 0o4755 and owner("su") == (0, 0)
    assert mode("sg") == 0o2711 and owner("sg") == (1000, 1000)
    assert owner("owned") == (1000, 1001) and mode("owned") == 0o640
    assert owner("link") == (1000, 1001)
    assert stat.S_ISFIFO(os.lstat(d / "pipe").st_mode) and mode("pipe") == 0o620
    assert owner("pipe") == (1000, 1000)


def test_mtimes_including_directories_and_subsecond_pax(tmp_path: Path) -> None:
    layer = h.tar_bytes(
        [
            h.directory("d", mtime=1_500_000_000),
            h.file("d/f", b"x", mtime=1_400_000_000.25),
            h.symlink("d/l", "f", mtime=1_300_000_000),
            h.directory("d/sub", mtime=1_200_000_000),
            h.file("d/sub/g", b"y"),
        ]
    )
    d = tmp_path / "d"
    run(layer, d)
    assert os.lstat(d / "d").st_mtime_ns == 1_500_000_000 * 10**9
    assert os.lstat(d / "d/f").st_mtime_ns == 1_400_000_000_250_000_000
    assert os.lstat(d / "d/l").st_mtime_ns == 1_300_000_000 * 10**9
    assert os.lstat(d / "d/sub").st_mtime_ns == 1_200_000_000 * 10**9


def test_xattrs_user_kept_reserved_dropped(tmp_path: Path) -> None:
    d = tmp_path / "d"
    stats = run(h.reserved_xattrs(), d)
    assert xattr(d / "f", "user.ok") == b"kept"
    for name in (
        "user.overlay.redirect",
        "user.overlay.whiteout",
        "trusted.overlay.metacopy",
        "user.containers.override_stat",
        "user.fuseoverlayfs.origin",
    ):
        assert xattr(d / "f", name) is None, name
        assert any(name in note for note in stats.dropped_xattrs)


def test_xattrs_on_directories_and_binary_values(tmp_path: Path) -> None:
    value = "caf\udce9"  # the byte 0xe9, as tarfile hands over non-UTF-8 PAX values
    layer = h.tar_bytes(
        [
            h.directory("dir", xattrs={"user.dir": "yes"}),
            h.file("bin", b"x", xattrs={"user.bin": value}),
            h.symlink("link", "bin", xattrs={"user.link": "no"}),
        ]
    )
    d = tmp_path / "d"
    stats = run(layer, d)
    assert xattr(d / "dir", "user.dir") == b"yes"
    assert xattr(d / "bin", "user.bin") == b"caf\xe9"
    assert any("user.link (symlink)" in n for n in stats.dropped_xattrs)


def test_security_capability_survives_chown(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("setting security.capability needs root")
    # VFS_CAP_REVISION_2 with CAP_NET_RAW permitted+effective.
    cap = (0x02000001).to_bytes(4, "little") + (1 << 13).to_bytes(4, "little") + bytes(12)
    ti = tarfile.TarInfo("ping")
    ti.size, ti.mode, ti.uid, ti.mtime = 1, 0o755, 1000, h.MTIME
    ti.pax_headers = {"SCHILY.xattr.security.capability": cap.decode("utf-8", "surrogateescape")}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        t.addfile(ti, io.BytesIO(b"x"))
    layer = buf.getvalue()
    d = tmp_path / "d"
    run(layer, d, owners="real")
    assert os.getxattr(d / "ping", "security.capability") == cap
    assert os.stat(d / "ping").st_uid == 1000


def test_hard_links_share_the_inode(tmp_path: Path) -> None:
    d = tmp_path / "d"
    run(h.tar_bytes(BASIC), d)
    assert os.stat(d / "bin/ls").st_ino == os.stat(d / "bin/busybox").st_ino
    assert os.stat(d / "bin/busybox").st_nlink == 2


def test_implicit_parents_are_0755(tmp_path: Path) -> None:
    d = tmp_path / "d"
    old = os.umask(0o077)
    try:
        run(h.tar_bytes([h.file("a/b/c", b"x")]), d)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(d / "a").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(d / "a/b").st_mode) == 0o755


def test_root_entry_sets_the_destination_metadata(tmp_path: Path) -> None:
    d = tmp_path / "d"
    run(h.tar_bytes([h.directory("./", mode=0o750, mtime=1_000_000_000), h.file("f")]), d)
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o750
    assert os.stat(d).st_mtime_ns == 1_000_000_000 * 10**9


def test_a_later_member_replaces_an_earlier_one(tmp_path: Path) -> None:
    layer = h.tar_bytes(
        [
            h.file("x", b"first"),
            h.file("x", b"second"),
            h.directory("d"),
            h.file("d/inner", b"i"),
            h.file("d", b"now a file"),
            h.symlink("s", "x"),
            h.directory("s"),
        ]
    )
    d = tmp_path / "d"
    run(layer, d)
    assert (d / "x").read_bytes() == b"second"
    assert (d / "d").read_bytes() == b"now a file"
    assert (d / "s").is_dir() and not (d / "s").is_symlink()


def test_directory_member_again_keeps_its_contents(tmp_path: Path) -> None:
    layer = h.tar_bytes([h.directory("d"), h.file("d/f", b"x"), h.directory("d", mode=0o700)])
    d = tmp_path / "d"
    run(layer, d)
    assert (d / "d/f").exists()
    assert stat.S_IMODE(os.stat(d / "d").st_mode) == 0o700


def test_gnu_sparse_file_keeps_its_holes(tmp_path: Path) -> None:
    if shutil.which("tar") is None:
        pytest.skip("GNU tar is needed to write a sparse archive")
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "sparse", "wb") as f:
        f.write(b"head")
        f.seek(1 << 30)
        f.write(b"tail")
    subprocess.run(
        ["tar", "-C", str(src), "--sparse", "-cf", str(tmp_path / "l.tar"), "sparse"], check=True
    )
    d = tmp_path / "d"
    stats = run((tmp_path / "l.tar").read_bytes(), d)
    st = os.stat(d / "sparse")
    assert st.st_size == (1 << 30) + 4
    assert st.st_blocks * 512 < (64 << 20)  # holes stayed holes
    with open(d / "sparse", "rb") as f:
        assert f.read(4) == b"head"
        f.seek(1 << 30)
        assert f.read() == b"tail"
    assert stats.bytes < (64 << 20)


# -- owners="xattr" -------------------------------------------------------------------


def test_owners_xattr_records_override_stat(tmp_path: Path) -> None:
    layer = h.tar_bytes(
        [
            h.directory("home", mode=0o755),
            h.directory("home/u", mode=0o700, uid=1000, gid=1000),
            h.file("home/u/s", b"x", mode=0o4750, uid=1000, gid=1000),
            h.file("sub/f", b"x", mode=0o444, uid=7, gid=8),
            h.symlink("l", "sub/f", uid=5),
        ]
    )
    d = tmp_path / "d"
    run(layer, d, owners="xattr")
    assert xattr(d, OVERRIDE_STAT_XATTR) == b"0:0:0755:dir"  # what fuse-overlayfs looks for
    assert xattr(d / "home", OVERRIDE_STAT_XATTR) == b"0:0:0755:dir"
    assert xattr(d / "home/u", OVERRIDE_STAT_XATTR) == b"1000:1000:0700:dir"
    assert xattr(d / "home/u/s", OVERRIDE_STAT_XATTR) == b"1000:1000:4750:file"
    assert xattr(d / "sub", OVERRIDE_STAT_XATTR) == b"0:0:0755:dir"  # implicit parent
    assert xattr(d / "sub/f", OVERRIDE_STAT_XATTR) == b"7:8:0444:file"
    me = (os.geteuid(), os.getegid())
    for p in ("home", "home/u", "home/u/s", "sub/f", "l"):
        st = os.lstat(d / p)
        assert (st.st_uid, st.st_gid) == me, p
    # The host copy: no setuid, and always usable by its owner.
    assert stat.S_IMODE(os.stat(d / "home/u/s").st_mode) == 0o750 | 0o600
    assert stat.S_IMODE(os.stat(d / "sub/f").st_mode) == 0o644
    assert stat.S_IMODE(os.stat(d / "home/u").st_mode) == 0o700


def test_override_stat_format_matches_fuse_overlayfs_parse() -> None:
    # fuse-overlayfs: sscanf (buf, "%d:%d:%o", &uid, &gid, &mode); the fourth field
    # is containers/storage's file type, ignored there.
    value = ex.override_stat_value(1000, 1001, 0o104755, is_dir=False).decode()
    uid, gid, mode, kind = value.split(":")
    assert (int(uid), int(gid), int(mode, 8), kind) == (1000, 1001, 0o4755, "file")
    assert ex.override_stat_value(0, 0, 0o40755, is_dir=True) == b"0:0:0755:dir"


# -- whiteouts ----------------------------------------------------------------------


WHITEOUTS = [
    h.directory("etc"),
    h.file("etc/.wh.motd"),
    h.directory("var/cache", mode=0o755),
    h.file("var/cache/.wh..wh..opq"),
    h.file("var/cache/new", b"n"),
    h.file(".wh.gone"),
    h.device("dev-gone", "char", 0, 0),
]


def test_whiteouts_aufs_format(tmp_path: Path) -> None:
    d = tmp_path / "d"
    stats = run(h.tar_bytes(WHITEOUTS), d, whiteout_format="aufs")
    assert (d / "etc/.wh.motd").stat().st_size == 0
    assert (d / "var/cache/.wh..wh..opq").is_file()
    assert (d / "var/cache/new").read_bytes() == b"n"
    assert (d / ".wh.gone").is_file()
    assert (d / ".wh.dev-gone").is_file()  # the 0/0 char device, in the layer's format
    assert stats.whiteouts == 3 and stats.opaque_dirs == 1
    assert not (d / "etc/motd").exists()


def test_whiteouts_xattr_format(tmp_path: Path) -> None:
    d = tmp_path / "d"
    stats = run(h.tar_bytes(WHITEOUTS), d, whiteout_format="xattr")
    for marker in ("etc/motd", "gone", "dev-gone"):
        p = d / marker
        assert p.is_file() and p.stat().st_size == 0
        assert xattr(p, wh.XATTR_WHITEOUT) == b""
    assert xattr(d / "etc", wh.XATTR_OPAQUE) == b"x"
    assert xattr(d, wh.XATTR_OPAQUE) == b"x"
    assert xattr(d / "var/cache", wh.XATTR_OPAQUE) == b"y"
    assert not (d / "var/cache/.wh..wh..opq").exists()
    assert not list(d.rglob(".wh.*"))
    assert stats.whiteouts == 3 and stats.opaque_dirs == 1


def test_xattr_format_opaque_is_not_weakened_by_a_whiteout(tmp_path: Path) -> None:
    d = tmp_path / "d"
    run(h.tar_bytes([h.file("d/.wh..wh..opq"), h.file("d/.wh.x")]), d, whiteout_format="xattr")
    assert xattr(d / "d", wh.XATTR_OPAQUE) == b"y"


@pytest.mark.parametrize("fmt", ["aufs", "xattr"])
def test_same_layer_whiteout_then_entry(tmp_path: Path, fmt: str) -> None:
    """A whiteout and an entry of the same name in one layer: the entry wins, and a
    directory becomes opaque (it replaces the lower one)."""
    layer = h.tar_bytes(
        [h.file(".wh.f"), h.file("f", b"new"), h.file(".wh.d"), h.directory("d"), h.file("d/x")]
    )
    d = tmp_path / "d"
    run(layer, d, whiteout_format=fmt)
    assert (d / "f").read_bytes() == b"new"
    assert xattr(d / "f", wh.XATTR_WHITEOUT) is None
    assert not (d / ".wh.f").exists() and not (d / ".wh.d").exists()
    if fmt == "aufs":
        assert (d / "d/.wh..wh..opq").exists()
    else:
        assert xattr(d / "d", wh.XATTR_OPAQUE) == b"y"


@pytest.mark.parametrize("fmt", ["aufs", "xattr"])
def test_same_layer_entry_then_whiteout(tmp_path: Path, fmt: str) -> None:
    """image-spec: a whiteout only hides lower layers, never its own layer's files."""
    layer = h.tar_bytes([h.file("f", b"mine"), h.file(".wh.f"), h.directory("d"), h.file(".wh.d")])
    d = tmp_path / "d"
    run(layer, d, whiteout_format=fmt)
    assert (d / "f").read_bytes() == b"mine"
    assert xattr(d / "f", wh.XATTR_WHITEOUT) is None
    assert not (d / ".wh.f").exists()
    assert (d / "d").is_dir()


def test_aufs_metadata_is_skipped(tmp_path: Path) -> None:
    d = tmp_path / "d"
    stats = run(h.aufs_metadata(), d)
    assert not (d / ".wh..wh.plnk").exists()
    assert (d / "kept").exists()
    assert len(stats.skipped) == 2


def test_devices_are_skipped_and_named(tmp_path: Path) -> None:
    d = tmp_path / "d"
    stats = run(h.device_nodes(), d)
    assert stats.skipped_devices == ["dev/null (char 1:3)", "dev/sda (block 8:0)"]
    assert list((d / "dev").iterdir()) == []
    assert stats.whiteouts == 1


# -- applying onto a flattened rootfs ------------------------------------------------


def test_delete_mode_applies_whiteouts_and_opaque_dirs(tmp_path: Path) -> None:
    d = tmp_path / "rootfs"
    base = h.tar_bytes(
        [
            h.file("etc/motd", b"hi"),
            h.file("etc/keep", b"k"),
            h.directory("var/cache/apt"),
            h.file("var/cache/apt/pkg", b"p"),
            h.file("var/cache/old", b"o"),
            h.directory("gone/deep"),
            h.file("gone/deep/f"),
        ]
    )
    run(base, d, apply_whiteouts="delete")
    upper = h.tar_bytes(
        [
            h.file("etc/.wh.motd"),
            h.file(".wh.gone"),
            h.file("var/cache/new", b"n"),  # before the marker: survives
            h.file("var/cache/.wh..wh..opq"),
            h.file("var/cache/newer", b"n2"),
            h.file(".wh.never-existed"),
            h.file("nowhere/.wh.x"),  # its parent does not exist: nothing to do
        ]
    )
    stats = run(upper, d, apply_whiteouts="delete")
    assert not (d / "etc/motd").exists() and (d / "etc/keep").exists()
    assert not (d / "gone").exists()
    assert sorted(p.name for p in (d / "var/cache").iterdir()) == ["new", "newer"]
    assert not list(d.rglob(".wh.*")) and not (d / "nowhere").exists()
    assert stats.whiteouts == 4 and stats.opaque_dirs == 1


def test_delete_mode_keeps_same_layer_files(tmp_path: Path) -> None:
    d = tmp_path / "rootfs"
    run(h.tar_bytes([h.file("a/old", b"o"), h.file("x", b"lower")]), d, apply_whiteouts="delete")
    upper = h.tar_bytes([h.file("x", b"upper"), h.file(".wh.x"), h.file("a/new"), h.file(".wh.a")])
    run(upper, d, apply_whiteouts="delete")
    assert (d / "x").read_bytes() == b"upper"
    # `a` has this layer's a/new: the whiteout acts as opaque, dropping lower a/old.
    assert sorted(p.name for p in (d / "a").iterdir()) == ["new"]


def test_delete_mode_root_opaque_empties_lower_content(tmp_path: Path) -> None:
    d = tmp_path / "rootfs"
    run(h.tar_bytes([h.file("a/b/lower"), h.file("top")]), d, apply_whiteouts="delete")
    run(h.tar_bytes([h.file("a/b/mine"), h.file(".wh..wh..opq")]), d, apply_whiteouts="delete")
    assert sorted(str(p.relative_to(d)) for p in d.rglob("*")) == ["a", "a/b", "a/b/mine"]


def test_delete_mode_replaces_a_lower_directory_with_a_file(tmp_path: Path) -> None:
    d = tmp_path / "rootfs"
    run(h.tar_bytes([h.directory("p", mode=0o555), h.file("p/q")]), d, apply_whiteouts="delete")
    run(h.tar_bytes([h.file("p", b"file now")]), d, apply_whiteouts="delete")
    assert (d / "p").read_bytes() == b"file now"


def test_delete_mode_removes_a_deep_tree_without_recursion(tmp_path: Path) -> None:
    d = tmp_path / "rootfs"
    run(h.deep_tree(1500), d, apply_whiteouts="delete")
    run(h.tar_bytes([h.file(".wh.a")]), d, apply_whiteouts="delete")
    assert list(d.iterdir()) == []


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        extract_layer(io.BytesIO(b""), Path("/nonexistent"), owners="nobody")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        extract_layer(io.BytesIO(b""), Path("/nonexistent"), whiteout_format="kernel")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        extract_layer(io.BytesIO(b""), Path("/nonexistent"), apply_whiteouts="no")  # type: ignore[arg-type]
