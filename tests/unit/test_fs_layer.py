"""fs/layer.py and fs/whiteout.py: resolution under a layer root never follows a
link; the descriptor cache; the forms of whiteouts and opaque directories."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from fs import whiteout
from fs.layer import Layer
from fs.mapping import CONTAINERS_OVERRIDE_XATTR


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_symlink_in_a_layer_is_never_walked(tmp_path: Path) -> None:
    (tmp_path / "layer" / "real").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret").write_text("x")
    os.symlink("/", tmp_path / "layer" / "root")
    os.symlink("../outside", tmp_path / "layer" / "up")
    layer = Layer(1, str(tmp_path / "layer"), upper=False)
    try:
        for path in ((b"root",), (b"up",), (b"up", b"secret"), (b"root", b"etc")):
            with pytest.raises(OSError) as exc:
                layer.dir_fd(path)
            assert exc.value.errno == errno.ENOTDIR, path
        assert stat.S_ISDIR(layer.stat_dir((b"real",)).st_mode)
        assert stat.S_ISLNK(layer.lstat((), b"root").st_mode)
    finally:
        layer.close()


def test_the_root_may_be_a_symlink(tmp_path: Path) -> None:
    """containers/storage names layers by its l/ links: the root is opened through."""
    (tmp_path / "diff").mkdir()
    (tmp_path / "diff" / "f").write_text("x")
    os.symlink(tmp_path / "diff", tmp_path / "link")
    layer = Layer(0, str(tmp_path / "link"), upper=True)
    try:
        assert layer.lstat((), b"f").st_size == 1
    finally:
        layer.close()


def test_the_cache_is_bounded_and_closes_between_requests(tmp_path: Path) -> None:
    for i in range(40):
        (tmp_path / "l" / f"d{i}" / "sub").mkdir(parents=True)
    before = fd_count()
    layer = Layer(0, str(tmp_path / "l"), upper=True, cache_size=8)
    fds = [layer.dir_fd((f"d{i}".encode(), b"sub")) for i in range(40)]
    assert len(set(fds)) == 40  # nothing closed during the request
    layer.trim()
    assert fd_count() <= before + 1 + 8
    layer.dir_fd((b"d39", b"sub"))
    cached = fd_count()
    layer.forget((b"d39",))  # renamed or removed in the upper layer
    layer.trim()
    assert fd_count() == cached - 2  # d39 and d39/sub
    layer.close()
    assert fd_count() == before


def test_override_is_found_on_the_root(tmp_path: Path) -> None:
    (tmp_path / "l").mkdir()
    os.setxattr(tmp_path / "l", CONTAINERS_OVERRIDE_XATTR, b"0:0:0755:dir")
    layer = Layer(1, str(tmp_path / "l"), upper=False)
    try:
        assert layer.override == CONTAINERS_OVERRIDE_XATTR
    finally:
        layer.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod of 0/0 needs root: run scripts/test.sh")
def test_whiteout_forms(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    fd = os.open(d, os.O_PATH | os.O_DIRECTORY)
    try:
        writer = whiteout.WhiteoutWriter(chardev=True)
        writer.make(fd, b"a")
        assert whiteout.is_whiteout_dev(os.lstat(d / "a"))
        writer.make(fd, b"a")  # already one: fine
        assert whiteout.WhiteoutWriter.find(fd, b"a") == "dev"
        aufs = whiteout.WhiteoutWriter(chardev=False)
        aufs.make(fd, b"b")
        assert (d / ".wh.b").is_file() and whiteout.WhiteoutWriter.find(fd, b"b") == "file"
        whiteout.WhiteoutWriter.remove_file_form(fd, b"b")
        assert whiteout.WhiteoutWriter.find(fd, b"b") is None
        assert whiteout.dir_marks(fd) == (False, False)
        aufs.set_opaque(fd)
        assert whiteout.dir_marks(fd).opaque and (d / whiteout.OPAQUE_MARKER.decode()).exists()
        os.setxattr(d, "user.overlay.opaque", b"x")
        os.unlink(d / whiteout.OPAQUE_MARKER.decode())
        # trusted.overlay.opaque=y (written as root) and user.overlay.opaque=x
        assert whiteout.dir_marks(fd) == (True, True)
        (d / "xw").write_text("")
        os.setxattr(d / "xw", "user.overlay.whiteout", b"")
        assert whiteout.is_xattr_whiteout(fd, b"xw", os.lstat(d / "xw"))
        (d / "plain").write_text("")
        assert not whiteout.is_xattr_whiteout(fd, b"plain", os.lstat(d / "plain"))
        assert whiteout.has_wh_file(fd, b"x" * 300) is False
    finally:
        os.close(fd)
