"""docker's cp path rules, the argument split, and tar streams written and extracted
in temporary folders (no container: the same code runs inside one for sbx cp)."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from sandbox.cli.cp import container_path, split
from sandbox.containers.archive import (
    CopyError,
    Plan,
    check_name,
    extract,
    parse_source,
    plan,
    validate,
    write_tree,
)
from sandbox.errors import UsageError


def test_split_as_docker() -> None:
    assert split("ctr:/etc") == ("ctr", "/etc")
    assert split("ctr:") == ("ctr", "/")
    assert split("/abs:with:colons") == (None, "/abs:with:colons")
    assert split("./rel:x") == (None, "./rel:x")
    assert split("plain") == (None, "plain")
    assert split("-") == (None, "-")
    with pytest.raises(UsageError):
        split(":/x")
    assert container_path("etc/") == "/etc/"


def test_parse_source() -> None:
    assert parse_source("/a/b") == ("/a/b", False, False)
    assert parse_source("/a/b/") == ("/a/b", False, True)
    assert parse_source("/a/b/.") == ("/a/b", True, True)
    assert parse_source("/") == ("/", True, True)


@pytest.mark.parametrize(("src_dir", "contents", "dest", "exists", "is_dir", "want"), [
    # file
    (False, False, "/d", True, True, Plan("/d", "f")),
    (False, False, "/d/x", False, False, Plan("/d", "x")),
    (False, False, "/d/x", True, False, Plan("/d", "x")),  # overwrite
    # dir
    (True, False, "/d", True, True, Plan("/d", "f")),
    (True, False, "/d/new", False, False, Plan("/d", "new")),
    (True, False, "/d/new/", False, False, Plan("/d", "new")),
    # dir/.
    (True, True, "/d", True, True, Plan("/d", None)),
    (True, True, "/d/new", False, False, Plan("/d/new", None, make_dir=True)),
])
def test_plan(src_dir, contents, dest, exists, is_dir, want) -> None:
    assert plan(src_dir, contents, "f", dest, exists, is_dir) == want


def test_plan_errors() -> None:
    with pytest.raises(CopyError, match="cannot copy a directory to a file"):
        plan(True, False, "d", "/file", True, False)
    with pytest.raises(CopyError, match="cannot copy a directory to a file"):
        plan(True, True, "d", "/file", True, False)
    with pytest.raises(CopyError, match="destination directory must exist"):
        plan(False, False, "f", "/nodir/", False, False)


@pytest.mark.parametrize("name", ["/etc/passwd", "../x", "a/../../x", "a/.."])
def test_bad_member_names(name: str) -> None:
    with pytest.raises(CopyError, match="refusing archive member"):
        check_name(name)
    assert check_name("./a//b/.") == ["a", "b"]


def _tree(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "f").write_text("data")
    os.link(src / "sub" / "f", src / "hard")
    (src / "link").symlink_to("/etc/passwd")
    os.mkfifo(src / "fifo")
    os.chmod(src / "sub", 0o750)
    return src


def _roundtrip(src: str, dest: str, **kw) -> int:
    buf = io.BytesIO()
    write_tree(buf, parse_source(src))
    buf.seek(0)
    return extract(buf, dest, **kw)


def test_roundtrip_into_a_missing_path(tmp_path: Path) -> None:
    src = _tree(tmp_path)
    _roundtrip(str(src), str(tmp_path / "copy"))
    copy = tmp_path / "copy"
    assert (copy / "sub" / "f").read_text() == "data"
    assert os.stat(copy / "hard").st_ino == os.stat(copy / "sub" / "f").st_ino
    assert os.readlink(copy / "link") == "/etc/passwd"
    assert (copy / "fifo").is_fifo()
    assert (copy / "sub").stat().st_mode & 0o777 == 0o750


def test_roundtrip_contents_and_into_dir(tmp_path: Path) -> None:
    src = _tree(tmp_path)
    (tmp_path / "d").mkdir()
    _roundtrip(str(src) + "/.", str(tmp_path / "d"))
    assert sorted(os.listdir(tmp_path / "d")) == ["fifo", "hard", "link", "sub"]
    _roundtrip(str(src), str(tmp_path / "d"))
    assert (tmp_path / "d" / "src" / "sub" / "f").exists()
    _roundtrip(str(src / "sub" / "f"), str(tmp_path / "d" / "hard"))  # overwrite a file
    assert (tmp_path / "d" / "hard").read_text() == "data"


def test_extract_never_writes_through_a_symlink(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "evil").symlink_to(outside)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("evil/x")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    buf.seek(0)
    with pytest.raises(CopyError, match="refusing to write through"):
        extract(buf, str(dest), contents_only_stream=True)
    assert os.listdir(outside) == []


def test_validate_checks_every_member_first(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.addfile(tarfile.TarInfo("fine"))
        link = tarfile.TarInfo("hl")
        link.type, link.linkname = tarfile.LNKTYPE, "../../etc/shadow"
        tar.addfile(link)
    buf.seek(0)
    with pytest.raises(CopyError, match=r"\.\."):
        validate(buf)
    with pytest.raises(CopyError, match="not a valid tar"):
        validate(io.BytesIO(b"not a tar at all" * 64))


def test_write_tree_ids_and_missing_source(tmp_path: Path) -> None:
    src = _tree(tmp_path)
    buf = io.BytesIO()
    write_tree(buf, parse_source(str(src / "sub")), ids=lambda u, g: (7, 8))
    buf.seek(0)
    with tarfile.open(fileobj=buf) as tar:
        assert {(m.name, m.uid, m.gid, m.uname) for m in tar} == {
            ("sub", 7, 8, ""), ("sub/f", 7, 8, "")}
    with pytest.raises(CopyError, match="no such file"):
        write_tree(io.BytesIO(), parse_source(str(tmp_path / "nope")))
    with pytest.raises(CopyError, match="not a directory"):
        write_tree(io.BytesIO(), parse_source(str(src / "sub" / "f") + "/"))
