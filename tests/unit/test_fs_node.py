"""fs/node.py: inode numbers, names, lookup counts and forget."""

from __future__ import annotations

import errno

import pytest

from fs.node import ROOT_INO, InodeTable


def table() -> InodeTable:
    t = InodeTable()
    t.register_dev(100)  # the upper layer's device: raw inode numbers
    t.register_dev(200)
    t.add_root((100, 2), (0,))
    return t


def test_numbers_are_the_real_ones_on_the_first_device_and_distinct_elsewhere() -> None:
    t = table()
    assert t.number((100, 12345)) == 12345
    assert t.number((200, 12345)) == (1 << 48) | 12345
    assert t.number((300, 7)) == (2 << 48) | 7  # a device seen later gets the next index
    assert t.number((100, 1)) != ROOT_INO  # 1 is the root's: never handed out again
    big = t.number((100, 1 << 60))
    assert big >= 1 << 63 and t.number((100, 1 << 60)) == big  # remembered
    assert len({t.number((100, 1)), big, t.number((100, 1 << 61))}) == 3


def test_numbers_survive_forget() -> None:
    t = table()
    root = t.get(ROOT_INO)
    f = t.new((100, 50), False, 0)
    t.link(f, root, b"f")
    t.ref(f)
    ino = f.ino
    t.forget(ino, 1)
    with pytest.raises(OSError) as exc:
        t.get(ino)
    assert exc.value.errno == errno.ESTALE
    again = t.new((100, 50), False, 0)
    assert again.ino == ino


def test_a_parent_lives_as_long_as_its_children() -> None:
    t = table()
    root = t.get(ROOT_INO)
    d = t.new((100, 10), True, 0)
    t.link(d, root, b"d")
    t.ref(d)
    f = t.new((100, 11), False, 0)
    t.link(f, d, b"f")
    t.ref(f)
    t.forget(d.ino, 1)  # the kernel may forget a directory before its entries...
    assert t.get(d.ino) is d
    assert f.path() == (b"d", b"f")
    t.forget(f.ino, 1)  # ...and once they are gone, it goes too
    assert t.find((100, 10)) is None and t.find((100, 11)) is None
    assert root.children == 0


def test_hard_links_rename_unlink_detach() -> None:
    t = table()
    root = t.get(ROOT_INO)
    d = t.new((100, 10), True, 0)
    t.link(d, root, b"d")
    f = t.new((100, 11), False, 0)
    t.link(f, root, b"a")
    t.link(f, d, b"b")
    t.link(f, d, b"b")  # known already
    t.ref(f)
    assert len(f.links) == 2 and d.children == 1
    t.rename(f, root, b"a", d, b"c")
    assert f.path() == (b"d", b"c") and root.children == 1  # d only
    t.unlink(f, d, b"c")
    assert f.where() == ((b"d",), b"b")
    t.unlink(f, d, b"b")
    assert not f.attached and f.path() is None
    with pytest.raises(OSError):
        f.where()
    assert t.get(f.ino) is f  # still known to the kernel
    f.opened += 1
    t.forget(f.ino, 1)
    assert t.get(f.ino) is f  # still open
    t.release(f)
    with pytest.raises(OSError):
        t.get(f.ino)


def test_aliases_and_the_root() -> None:
    t = table()
    t.aliases[(100, 99)] = (200, 5)
    assert t.canonical((100, 99)) == (200, 5)
    assert t.canonical((100, 98)) == (100, 98)
    t.forget(ROOT_INO, 10)
    assert t.get(ROOT_INO).path() == ()
    dropped = t.new((100, 77), False, 0)
    t.drop_unreferenced(dropped)
    assert t.find((100, 77)) is None
