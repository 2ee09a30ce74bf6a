"""Hostile layers (tests/hostile_layers.py): each is refused with a typed error, or
handled safely, and nothing is ever written outside the destination.

Every test extracts into tmp/dest next to an empty tmp/sentinel directory; the
fixture fails the test if anything appears in tmp/ other than dest and sentinel, or
inside sentinel (where the symlinks of the corpus point).
"""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import hostile_layers as h
import pytest

from sandbox.images.extract import (
    CorruptLayer,
    HeaderTooLarge,
    LayerError,
    UnsafeMember,
    extract_layer,
)
from sandbox.images.whiteout import remove_at

needs_zstd = pytest.mark.skipif(
    not h.zstd_available(), reason="the zstd command is missing (apt-get install zstd)"
)
MODES = [
    pytest.param({"apply_whiteouts": "record", "whiteout_format": "aufs"}, id="aufs"),
    pytest.param({"apply_whiteouts": "record", "whiteout_format": "xattr"}, id="xattr"),
    pytest.param({"apply_whiteouts": "delete"}, id="delete"),
    pytest.param({"owners": "xattr"}, id="owners-xattr"),
]


@dataclass
class Box:
    root: Path
    dest: Path
    sentinel: Path

    def extract(self, data: bytes, **kw: object) -> object:
        return extract_layer(io.BytesIO(data), self.dest, **kw)  # type: ignore[arg-type]


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Box]:
    dest = tmp_path / "dest"
    sentinel = tmp_path / "sentinel"
    dest.mkdir()
    sentinel.mkdir()
    yield Box(tmp_path, dest, sentinel)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest", "sentinel"]
    assert list(sentinel.iterdir()) == [], "something was written outside dest"


@pytest.fixture
def outside_tmp() -> Iterator[Path]:
    """A /tmp path whose parent does not exist: creating it would need a walk out."""
    path = Path("/tmp") / f"sbx-hostile-{uuid.uuid4().hex}" / "x"
    yield path
    assert not path.parent.exists(), f"{path.parent} was created"


# -- path traversal -----------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("layer", "match"),
    [
        (h.dotdot_member, r"'\.\.' in '\.\./evil'"),
        (h.absolute_member, "absolute path '/abs'"),
        (h.nested_dotdot_member, r"'\.\.' in 'a/\.\./\.\./evil'"),
    ],
)
def test_traversal_is_refused(box: Box, layer, match: str, mode: dict) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UnsafeMember, match=match) as info:
        box.extract(layer(), **mode)
    assert info.value.hint


# -- symlinks --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_write_through_a_symlink_to_outside_is_refused(box: Box, mode: dict) -> None:
    with pytest.raises(UnsafeMember, match="'link' is a symlink"):
        box.extract(h.symlink_then_write(str(box.sentinel)), **mode)


def test_write_through_a_symlink_to_tmp_x(box: Box) -> None:
    """The brief's own case: link -> /tmp/x, then link/file."""
    before = os.path.lexists("/tmp/x")
    with pytest.raises(UnsafeMember):
        box.extract(h.symlink_then_write("/tmp/x"))
    assert os.path.lexists("/tmp/x") == before
    assert not os.path.lexists("/tmp/x/file")


def test_write_through_a_symlink_to_a_missing_outside_dir(box: Box, outside_tmp: Path) -> None:
    with pytest.raises(UnsafeMember):
        box.extract(h.symlink_then_write(str(outside_tmp.parent)))


@pytest.mark.parametrize("mode", MODES)
def test_write_through_a_dotdot_symlink_is_refused(box: Box, mode: dict) -> None:
    with pytest.raises(UnsafeMember, match="'link' is a symlink"):
        box.extract(h.symlink_dotdot_then_write(), **mode)


def test_directory_member_under_a_symlink_is_refused(box: Box) -> None:
    with pytest.raises(UnsafeMember):
        box.extract(h.symlink_then_dir_member(str(box.sentinel)))


def test_directory_replaced_by_symlink_then_write(box: Box) -> None:
    with pytest.raises(UnsafeMember, match="'d' is a symlink"):
        box.extract(h.dir_replaced_by_symlink_then_write(str(box.sentinel)))


def test_file_over_a_symlink_replaces_the_link(box: Box) -> None:
    target = box.sentinel / "target"
    box.extract(h.symlink_then_same_name_file(str(target)))
    assert not (box.dest / "link").is_symlink()
    assert (box.dest / "link").read_bytes() == b"data"
    assert not target.exists()


def test_absolute_symlinks_are_kept_as_links(box: Box) -> None:
    box.extract(h.absolute_symlink())
    assert os.readlink(box.dest / "abs") == "/etc/passwd"
    assert os.readlink(box.dest / "rel") == "../../../etc/shadow"


def test_symlink_planted_by_a_lower_layer_is_not_followed(box: Box) -> None:
    """Applying onto a flattened rootfs: the symlink comes from the layer below."""
    box.extract(h.tar_bytes([h.symlink("lib", str(box.sentinel))]), apply_whiteouts="delete")
    with pytest.raises(UnsafeMember, match="'lib' is a symlink"):
        box.extract(h.tar_bytes([h.file("lib/evil.so", b"x")]), apply_whiteouts="delete")
    with pytest.raises(UnsafeMember):
        box.extract(h.tar_bytes([h.file("lib/.wh.x")]), apply_whiteouts="delete")
    with pytest.raises(UnsafeMember):
        box.extract(h.tar_bytes([h.file("lib/.wh..wh..opq")]), apply_whiteouts="delete")


def test_whiteout_of_a_symlink_removes_the_link_only(box: Box) -> None:
    (box.sentinel / "precious").write_text("keep")
    try:
        box.extract(h.tar_bytes([h.symlink("l", str(box.sentinel))]), apply_whiteouts="delete")
        box.extract(h.tar_bytes([h.file(".wh.l")]), apply_whiteouts="delete")
        assert not os.path.lexists(box.dest / "l")
        assert (box.sentinel / "precious").read_text() == "keep"
    finally:
        (box.sentinel / "precious").unlink()


def test_opaque_dir_does_not_follow_symlinks_inside(box: Box) -> None:
    (box.sentinel / "precious").write_text("keep")
    try:
        lower = h.tar_bytes([h.directory("d"), h.symlink("d/out", str(box.sentinel))])
        box.extract(lower, apply_whiteouts="delete")
        box.extract(h.tar_bytes([h.file("d/.wh..wh..opq")]), apply_whiteouts="delete")
        assert list((box.dest / "d").iterdir()) == []
        assert (box.sentinel / "precious").read_text() == "keep"
    finally:
        (box.sentinel / "precious").unlink()


# -- hard links -----------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("layer", "match"),
    [(h.hardlink_dotdot, r"'\.\.' in"), (h.hardlink_absolute, "absolute path '/etc/passwd'")],
)
def test_hardlink_out_of_the_root_is_refused(box: Box, layer, match: str, mode: dict) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UnsafeMember, match=match):
        box.extract(layer(), **mode)


def test_hardlink_through_a_symlink_is_refused(box: Box) -> None:
    (box.sentinel / "passwd").write_text("secret")
    try:
        with pytest.raises(UnsafeMember):
            box.extract(h.hardlink_through_symlink(str(box.sentinel)))
        with pytest.raises(UnsafeMember, match="'s' is a symlink"):
            box.extract(h.hardlink_through_symlink(str(box.sentinel)), apply_whiteouts="delete")
        assert os.stat(box.sentinel / "passwd").st_nlink == 1
    finally:
        (box.sentinel / "passwd").unlink()


def test_hardlink_to_a_symlink_links_the_symlink(box: Box) -> None:
    target = box.sentinel / "t"
    box.extract(h.hardlink_to_symlink(str(target)))
    assert os.readlink(box.dest / "hl") == str(target)
    assert os.lstat(box.dest / "hl").st_ino == os.lstat(box.dest / "s").st_ino


def test_hardlink_to_a_missing_target(box: Box) -> None:
    with pytest.raises(UnsafeMember, match="not in this layer"):
        box.extract(h.hardlink_missing_target())
    with pytest.raises(UnsafeMember, match="does not exist"):
        box.extract(h.hardlink_missing_target(), apply_whiteouts="delete")


def test_hardlink_to_a_whiteout_marker_is_refused(box: Box) -> None:
    layer = h.tar_bytes([h.file(".wh.x"), h.hardlink("y", "x")])
    with pytest.raises(UnsafeMember, match="not in this layer"):
        box.extract(layer, whiteout_format="xattr")


def test_hardlink_to_a_directory_is_refused(box: Box) -> None:
    with pytest.raises(UnsafeMember, match="directory"):
        box.extract(h.tar_bytes([h.directory("d"), h.hardlink("l", "d")]))


# -- whiteouts ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("layer", "match"),
    [
        (h.bare_whiteout, "names no entry"),
        (h.whiteout_of_dotdot, "names no entry"),
        (h.whiteout_above_root, r"'\.\.' in '\.\./\.wh\.x'"),
        (h.whiteout_used_as_directory, "used as a directory"),
    ],
)
def test_bad_whiteouts_are_refused(box: Box, layer, match: str, mode: dict) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UnsafeMember, match=match):
        box.extract(layer(), **mode)


# -- headers and truncation ---------------------------------------------------------


@pytest.mark.parametrize(
    ("layer", "error", "match"),
    [
        (h.long_component_name, UnsafeMember, "longer than 255"),
        (h.overlong_path, UnsafeMember, "longer than 4096"),
        (h.pax_header_giant_size, HeaderTooLarge, "claims 8589934592 bytes"),
        (h.gnu_longname_giant_size, HeaderTooLarge, "claims 4294967296 bytes"),
        (h.pax_size_record_giant, CorruptLayer, "unexpected end of data"),
        (h.member_size_exceeds_data, CorruptLayer, "unexpected end of data"),
        (h.truncated_gzip, CorruptLayer, "truncated"),
        pytest.param(h.truncated_zstd, CorruptLayer, "zstd", marks=needs_zstd),
    ],
)
def test_broken_and_oversized_layers(box: Box, layer, error: type, match: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error, match=match):
        box.extract(layer())


def test_long_but_legal_pax_name(box: Box) -> None:
    box.extract(h.long_pax_name_ok())
    assert len(list(box.dest.rglob("f"))) == 1


def test_every_layer_error_is_an_sbx_error() -> None:
    from sandbox.errors import SbxError

    for cls in (UnsafeMember, HeaderTooLarge, CorruptLayer):
        assert issubclass(cls, LayerError) and issubclass(cls, SbxError)


# -- special files -------------------------------------------------------------------


def test_device_nodes_are_skipped_not_created(box: Box) -> None:
    stats = box.extract(h.device_nodes())
    assert [p.name for p in (box.dest / "dev").iterdir()] == []
    assert stats.skipped_devices == ["dev/null (char 1:3)", "dev/sda (block 8:0)"]  # type: ignore[attr-defined]


def test_setuid_file_in_xattr_mode_is_not_setuid_on_the_host(box: Box) -> None:
    box.extract(h.setuid_file(), owners="xattr")
    assert os.stat(box.dest / "bin/su").st_mode & 0o6000 == 0
    assert os.getxattr(box.dest / "bin/su", "user.containers.override_stat") == b"0:0:4755:file"


def test_fifo_is_created_without_blocking(box: Box) -> None:
    import stat

    box.extract(h.fifo_layer())
    st = os.lstat(box.dest / "run/pipe")
    assert stat.S_ISFIFO(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o620


def test_deep_tree_extracts(box: Box) -> None:
    box.extract(h.deep_tree(1500))
    assert (box.dest / "/".join(["a"] * 1500) / "f").read_bytes() == b"deep"
    # pytest's own cleanup (shutil.rmtree) recurses and would hit the recursion
    # limit on it; ours does not.
    fd = os.open(box.dest, os.O_PATH | os.O_DIRECTORY)
    try:
        remove_at(fd, "a")
    finally:
        os.close(fd)
