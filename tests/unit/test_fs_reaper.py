"""fs/reaper.py, and the removals of fs/overlay.py that go through it: what leaves the
upper layer is gone from it when the call returns, and deleted from the work
directory by the reaper's helper process, or at once where none runs."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fs.node import ROOT_INO
from fs.overlay import Overlay
from fs.reaper import Reaper


@pytest.fixture
def work(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    (tmp_path / "w").mkdir()
    fd = os.open(tmp_path / "w", os.O_PATH | os.O_DIRECTORY)
    yield tmp_path / "w", fd
    os.close(fd)


def fill(work: Path) -> None:
    (work / "f").write_bytes(b"x" * 10000)
    (work / "d" / "sub").mkdir(parents=True)
    (work / "d" / "sub" / "g").write_text("g")
    os.symlink("/", work / "d" / "root")  # removed as a link, never followed


def test_without_a_helper_put_removes_at_once(work: tuple[Path, int]) -> None:
    path, fd = work
    fill(path)
    reaper = Reaper(fd)
    assert not reaper.started
    reaper.put(b"f")
    reaper.put(b"d")
    reaper.put(b"missing")  # already gone: nothing to do
    assert os.listdir(path) == []
    assert os.path.isdir("/")  # the link to / was removed, not walked


def test_the_helper_removes_and_close_waits_for_it(work: tuple[Path, int]) -> None:
    path, fd = work
    reaper = Reaper(fd)
    reaper.start()
    try:
        assert reaper.started
        fill(path)
        reaper.put(b"f")
        deadline = time.monotonic() + 10
        while (path / "f").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not (path / "f").exists()
        for i in range(2000):  # more than a pipe holds at once
            (path / f"n{i}").write_text("n")
            reaper.put(b"n%d" % i)
        reaper.put(b"d")
    finally:
        reaper.close()
    assert not reaper.started
    assert os.listdir(path) == []  # close() waited for what was pending


def test_close_without_start_is_harmless(work: tuple[Path, int]) -> None:
    Reaper(work[1]).close()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (the whiteout device): "
                    "run scripts/test.sh")
def test_removals_move_into_the_work_directory(tmp_path: Path) -> None:
    """unlink and rmdir through the union: the name is gone from the upper layer (a
    whiteout in its place where a lower layer has it) before the call returns; the
    data goes from the work directory once the reaper's helper has run."""
    lower, upper, work = tmp_path / "l", tmp_path / "u", tmp_path / "w"
    (lower / "d").mkdir(parents=True)
    (lower / "d" / "x").write_text("x")
    (lower / "a").write_text("lower a")
    upper.mkdir()
    fs = Overlay([str(lower)], str(upper), str(work))
    try:
        assert fs.reaper is not None and not fs.reaper.started
        fs.reaper.start()
        a = fs.lookup(ROOT_INO, b"a")
        assert a is not None
        fh = fs.open(a.ino, os.O_WRONLY, 0)
        fs.write(fh, 0, b"y" * 20000)  # copied up, with blocks to free
        fs.release(fh)
        assert fs.lookup(ROOT_INO, b"new") is None
        fh, _ = fs.create(ROOT_INO, b"new", 0o644, os.O_WRONLY, 0, 0)
        fs.write(fh, 0, b"z" * 20000)
        fs.release(fh)
        assert fs.lookup(ROOT_INO, b"t") is None
        t = fs.mkdir(ROOT_INO, b"t", 0o755, 0, 0)
        fs.mkdir(t.ino, b"sub", 0o755, 0, 0)
        fs.rmdir(t.ino, b"sub")
        fs.unlink(ROOT_INO, b"a")
        fs.unlink(ROOT_INO, b"new")
        fs.rmdir(ROOT_INO, b"t")
        d = fs.lookup(ROOT_INO, b"d")
        assert d is not None
        fs.unlink(d.ino, b"x")
        fs.rmdir(ROOT_INO, b"d")
        st = os.lstat(upper / "a")
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
        assert sorted(os.listdir(upper)) == ["a", "d"]  # the two whiteouts
        assert fs.lookup(ROOT_INO, b"a") is None
        assert fs.lookup(ROOT_INO, b"new") is None
    finally:
        fs.close()
    assert os.listdir(work / "work") == []
