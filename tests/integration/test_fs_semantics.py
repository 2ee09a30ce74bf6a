"""sbx-fs's overlayfs semantics through a real FUSE mount, as the unprivileged test
user in a user namespace (see fs_rig.py for the driver).

Each test builds its layers, mounts sbx-fs, runs a few operations and checks both what
the mount shows and what landed in the upper layer (whiteouts, opaque marks, copies).
Where the kernel's overlayfs can be mounted the same way (`userxattr`), the same
operations run on it too and the two must agree, errno included.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fs_rig import err, run_driver
from helpers import User

Runner = Callable[..., list[Any]]


@pytest.fixture
def fs_run(test_user: User, workdir: Path) -> Runner:
    def run(ops: list[str], layers: dict[str, list[Any]] | None = None,
            upper: list[Any] | None = None, **kw: Any) -> list[Any]:
        return run_driver(test_user, workdir, ops, layers, upper, **kw)
    return run


TWO = {
    "l1": [{"path": "a", "data": "l1a"}, {"path": "d/y", "data": "y"}],
    "l2": [{"path": "a", "data": "l2a"}, {"path": "b", "data": "b"}, {"path": "d/x", "data": "x"},
           {"path": "only2/z", "data": "z"}],
}


def test_lookup_is_top_down_and_directories_merge(fs_run: Runner) -> None:
    r = fs_run(["mount()",
                "sorted(os.listdir(m))",
                "read(m + '/a')",
                "read(m + '/b')",
                "sorted(os.listdir(m + '/d'))",
                "read(m + '/only2/z')",
                # A merged directory has st_nlink 1, like overlayfs's merge dirs; a
                # directory of one layer keeps its own.
                "(os.stat(m + '/d').st_nlink, os.stat(m + '/only2').st_nlink)",
                "os.stat(m + '/nope')",
                "umount()"], TWO)
    assert r[1] == ["a", "b", "d", "only2"]
    assert r[2] == "l1a"
    assert r[3] == "b"
    assert r[4] == ["x", "y"]
    assert r[5] == "z"
    assert r[6] == [1, 2]
    assert r[7] == err("ENOENT")


WHITEOUTS = {
    "l1": [{"path": "cw", "type": "whiteout"},                       # kernel form
           {"path": ".wh.aufs", "data": ""},                          # aufs/OCI form
           {"path": "od", "type": "dir", "xattrs": {"user.overlay.opaque": "y"}},
           {"path": "od/top", "data": "t"},
           {"path": "md/.wh..wh..opq", "data": ""},                   # aufs opaque
           {"path": "md/mine", "data": "m"},
           {"path": "xd", "type": "dir", "xattrs": {"user.overlay.opaque": "x"}},
           {"path": "xd/gone", "data": "", "xattrs": {"user.overlay.whiteout": ""}},
           # a tar that deleted `rep` and made it anew: `.wh.rep` beside `rep/`
           {"path": ".wh.rep", "data": ""}, {"path": "rep/new", "data": "n"}],
    "l2": [{"path": "cw", "data": "c"}, {"path": "aufs", "data": "a"},
           {"path": "od/hidden", "data": "h"}, {"path": "md/hidden", "data": "h"},
           {"path": "xd/gone", "data": "still here?"}, {"path": "xd/keep", "data": "k"},
           {"path": "rep/old", "data": "o"}],
}


def test_whiteouts_and_opaque_directories_in_every_form(fs_run: Runner) -> None:
    r = fs_run(["mount()",
                "sorted(os.listdir(m))",
                "(os.path.lexists(m + '/cw'), os.path.lexists(m + '/aufs'))",
                "sorted(os.listdir(m + '/od'))",
                "sorted(os.listdir(m + '/md'))",
                "sorted(os.listdir(m + '/xd'))",
                "sorted(os.listdir(m + '/rep'))",
                "os.stat(m + '/.wh.aufs')",  # the markers are never part of the tree
                "os.stat(m + '/md/.wh..wh..opq')",
                "umount()"], WHITEOUTS)
    assert r[1] == ["md", "od", "rep", "xd"]
    assert r[2] == [False, False]
    assert r[3] == ["top"]
    assert r[4] == ["mine"]
    assert r[5] == ["keep"]
    assert r[6] == ["new"]
    assert r[7] == err("ENOENT")
    assert r[8] == err("ENOENT")


def test_copy_up_on_every_kind_of_change(fs_run: Runner) -> None:
    layers = {"l1": [
        {"path": "w", "data": "data", "mode": 0o640, "mtime": 1000000,
         "xattrs": {"user.keep": "me"}},
        {"path": "t", "data": "truncate me"},
        {"path": "c", "data": "c"},
        {"path": "o", "data": "o"},
        {"path": "u", "data": "u", "mtime": 5},
        {"path": "x", "data": "x", "xattrs": {"user.gone": "1"}},
        {"path": "deep/er/f", "data": "f", "mode": 0o600},
        {"path": "deep", "type": "dir", "mode": 0o750, "mtime": 7},
    ]}
    r = fs_run(["mount()",
                "kind(u + '/w')",
                # write: data, mode, times and xattrs come along
                "write(m + '/w', '+', 'a'); read(m + '/w')",
                "s = os.stat(u + '/w'); (oct(s.st_mode), xattrs(u + '/w'))",
                "os.truncate(m + '/t', 4); (read(m + '/t'), read(u + '/t'))",
                "os.chmod(m + '/c', 0o600); oct(os.stat(u + '/c').st_mode)",
                "os.chown(m + '/o', 7, 8); (os.stat(u + '/o').st_uid, os.stat(u + '/o').st_gid)",
                "os.utime(m + '/u', (9, 9)); os.stat(u + '/u').st_mtime",
                "os.setxattr(m + '/x', 'user.new', b'1'); sorted(xattrs(u + '/x'))",
                "os.removexattr(m + '/x', 'user.gone'); xattrs(m + '/x')",
                # the parents come up first, with their metadata
                "write(m + '/deep/er/f', 'g'); (oct(os.stat(u + '/deep').st_mode),"
                " os.stat(u + '/deep').st_mtime, oct(os.stat(u + '/deep/er/f').st_mode))",
                # reading copies nothing
                "read(m + '/o') and None; kind(u + '/w2')",
                "umount()"], layers)
    assert r[1] == "missing"
    assert r[2] == "data+"
    assert r[3] == ["0o100640", {"user.keep": "me"}]
    assert r[4] == ["trun", "trun"]
    assert r[5] == "0o100600"
    assert r[6] == [7, 8]
    assert r[7] == 9
    assert r[8] == ["user.gone", "user.new"]
    assert r[9] == {"user.new": "1"}
    assert r[10] == ["0o40750", 7, "0o100600"]
    assert r[11] == "missing"


def test_removexattr_of_a_missing_name_copies_nothing(fs_run: Runner) -> None:
    r = fs_run(["mount()",
                "os.removexattr(m + '/f', 'user.none')",
                "kind(u + '/f')",
                "umount()"], {"l1": [{"path": "f", "data": "x"}]})
    assert r[1] == err("ENODATA")
    assert r[2] == "missing"


def test_create_and_remove_leave_whiteouts_only_where_needed(fs_run: Runner) -> None:
    r = fs_run(["mount()",
                "os.unlink(m + '/b'); kind(u + '/b')",        # lower only: whiteout
                "write(m + '/new', 'n'); os.unlink(m + '/new'); kind(u + '/new')",  # upper only
                "write(m + '/a', 'w'); os.unlink(m + '/a'); kind(u + '/a')",  # both: whiteout
                "os.unlink(m + '/d/x'); os.unlink(m + '/d/y'); os.rmdir(m + '/d'); kind(u + '/d')",
                "sorted(os.listdir(m))",
                # a directory made where a whiteout is: opaque, the lower entries stay hidden
                "os.mkdir(m + '/d'); (sorted(os.listdir(m + '/d')), xattrs(u + '/d'))",
                # a file made over a whiteout replaces it
                "write(m + '/b', 'again'); (kind(u + '/b'), read(m + '/b'))",
                "os.mkdir(m + '/nd'); os.rmdir(m + '/nd'); kind(u + '/nd')",
                "umount()"], TWO)
    assert r[1] == "whiteout"
    assert r[2] == "missing"
    assert r[3] == "whiteout"
    assert r[4] == "whiteout"
    assert r[5] == ["only2"]
    assert r[6] == [[], {"user.overlay.opaque": "y"}]
    assert r[7] == ["file", "again"]
    assert r[8] == "missing"


def test_aufs_whiteouts_where_mknod_is_refused(fs_run: Runner) -> None:
    """FUSE_OVERLAYFS_DISABLE_OVL_WHITEOUT makes sbx-fs write `.wh.` files, as where
    the 0/0 device cannot be made (fuse-overlayfs honours the same variable)."""
    r = fs_run(["os.environ['FUSE_OVERLAYFS_DISABLE_OVL_WHITEOUT'] = '1'; mount()",
                "os.unlink(m + '/b'); (kind(u + '/b'), kind(u + '/.wh.b'))",
                "os.unlink(m + '/d/x'); os.unlink(m + '/d/y'); os.rmdir(m + '/d');"
                " os.mkdir(m + '/d'); sorted(os.listdir(u + '/d'))",
                "sorted(os.listdir(m))",
                "write(m + '/b', 'back'); (kind(u + '/.wh.b'), read(m + '/b'))",
                "umount(); mount(); (sorted(os.listdir(m)), os.listdir(m + '/d'))",
                "umount()"], TWO)
    assert r[1] == ["missing", "file"]
    assert r[2] == [".wh..wh..opq"]
    assert r[3] == ["a", "d", "only2"]
    assert r[4] == ["missing", "back"]
    assert r[5] == [["a", "b", "d", "only2"], []]


def test_special_files(fs_run: Runner) -> None:
    r = fs_run(["mount()",
                "os.mkfifo(m + '/fifo'); kind(m + '/fifo')",
                "import socket; s = socket.socket(socket.AF_UNIX); s.bind(m + '/sock');"
                " s.close(); kind(m + '/sock')",
                "os.mknod(m + '/wh', stat.S_IFCHR | 0o600, 0)",  # the whiteout device
                "os.mknod(m + '/null', stat.S_IFCHR | 0o600, os.makedev(1, 3))",
                "os.symlink('target/x', m + '/sl'); os.readlink(m + '/sl')",
                "os.link(m + '/a', m + '/a2'); (os.stat(m + '/a').st_nlink,"
                " os.stat(m + '/a').st_ino == os.stat(m + '/a2').st_ino)",
                "os.open(m + '/a', os.O_CREAT | os.O_EXCL | os.O_WRONLY)",
                "os.open(m + '/.wh.x', os.O_CREAT | os.O_WRONLY, 0o644)",
                "os.mkdir(m + '/a')",
                "sorted(os.listdir(u))",
                "umount()"], TWO)
    assert r[1] == "fifo"
    assert r[2] == "sock"
    assert r[3] == err("EPERM")
    assert r[4] == err("EPERM")  # no device nodes in a user namespace
    assert r[5] == "target/x"
    assert r[6] == [2, True]
    assert r[7] == err("EEXIST")
    assert r[8] == err("EINVAL")
    assert r[9] == err("EEXIST")
    assert r[10] == ["a", "a2", "fifo", "sl", "sock"]


def test_hard_links_stay_linked_after_copy_up(fs_run: Runner) -> None:
    layers = {"l1": [{"path": "h1", "data": "same"}, {"path": "sub/h2", "type": "hardlink",
                                                     "target": "h1"},
                     {"path": "h3", "data": "3"}, {"path": "h4", "type": "hardlink",
                                                   "target": "h3"}]}
    r = fs_run(["mount()",
                # removing one name copies nothing up (the kernel's writeback cache
                # flushes the inode's unchanged times afterwards: no copy-up for that)
                "os.stat(m + '/h4'); os.unlink(m + '/h3'); (kind(u + '/h3'), kind(u + '/h4'),"
                " read(m + '/h4'))",
                "(os.stat(m + '/h1').st_ino == os.stat(m + '/sub/h2').st_ino,"
                " os.stat(m + '/h1').st_nlink)",
                "write(m + '/h1', 'changed'); read(m + '/sub/h2')",
                "(os.stat(u + '/h1').st_ino == os.stat(u + '/sub/h2').st_ino,"
                " os.stat(u + '/h1').st_nlink)",
                "umount(); mount(); (read(m + '/sub/h2'), os.stat(m + '/h1').st_nlink)",
                "umount()"], layers)
    assert r[1] == ["whiteout", "missing", "3"]
    assert r[2] == [True, 2]
    assert r[3] == "changed"
    assert r[4] == [True, 2]
    assert r[5] == ["changed", 2]


def test_rename(fs_run: Runner) -> None:
    r = fs_run(["mount()",
                # a lower file: copied up, a whiteout where it was
                "os.rename(m + '/b', m + '/b2'); (kind(u + '/b'), read(m + '/b2'))",
                # over an existing lower file: replaced, no whiteout needed at the target
                "os.rename(m + '/b2', m + '/a'); (read(m + '/a'), kind(u + '/a'))",
                # a directory with lower parts: EXDEV, as overlayfs without redirect_dir
                "os.rename(m + '/d', m + '/d2')",
                "os.rename(m + '/only2', m + '/o2')",
                # an upper-only directory moves; into a merged parent it becomes opaque
                "os.makedirs(m + '/nd/in'); os.rename(m + '/nd', m + '/d/nd');"
                " sorted(os.listdir(m + '/d/nd'))",
                "os.rename(m + '/d/nd', m + '/nd2'); sorted(tree(u + '/nd2'))",
                # a new directory over an empty lower one: the lower one's names stay hidden
                "os.unlink(m + '/only2/z'); os.mkdir(m + '/fresh'); write(m + '/fresh/f', '1');"
                " os.rename(m + '/fresh', m + '/only2'); sorted(os.listdir(m + '/only2'))",
                "os.rename(m + '/a', m + '/a')",
                "os.rename(m + '/a', m + '/d')",
                "os.rename(m + '/d', m + '/a')",
                "os.rename(m + '/missing', m + '/x')",
                "os.mkdir(m + '/e1'); write(m + '/e1/f', 'x'); os.mkdir(m + '/e2');"
                " os.rename(m + '/e2', m + '/e1')",
                "sorted(os.listdir(m))",
                "umount()"], TWO)
    assert r[1] == ["whiteout", "b"]
    assert r[2] == ["b", "file"]
    assert r[3] == err("EXDEV")
    assert r[4] == err("EXDEV")
    assert r[5] == ["in"]
    assert r[6] == ["in"]
    assert r[7] == ["f"]
    assert r[8] is None
    assert r[9] == err("EISDIR")
    assert r[10] == err("ENOTDIR")
    assert r[11] == err("ENOENT")
    assert r[12] == err("ENOTEMPTY")
    assert r[13] == ["a", "d", "e1", "e2", "nd2", "only2"]


def test_rename_flags(fs_run: Runner) -> None:
    """renameat2: RENAME_NOREPLACE and RENAME_EXCHANGE, across layers."""
    r = fs_run(["import ctypes; libc = ctypes.CDLL(None, use_errno=True)\n"
                "def rn(a, b, flags):\n"
                "    if libc.renameat2(-100, a.encode(), -100, b.encode(), flags):\n"
                "        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))\n"
                "mount()",
                "rn(m + '/a', m + '/b', 1)",                 # NOREPLACE over an existing
                "rn(m + '/a', m + '/c', 1); read(m + '/c')",
                "rn(m + '/c', m + '/b', 2); (read(m + '/c'), read(m + '/b'))",  # EXCHANGE
                "rn(m + '/b', m + '/none', 2)",
                "umount()"], TWO)
    assert r[1] == err("EEXIST")
    assert r[2] == "l1a"
    assert r[3] == ["b", "l1a"]
    assert r[4] == err("ENOENT")


def test_readdir_offsets_are_stable(fs_run: Runner) -> None:
    """telldir/seekdir positions stay valid while the directory changes: the listing
    is made when reading starts, offsets index into it."""
    layers = {"l1": [{"path": f"d/f{i:03}", "data": ""} for i in range(0, 300, 2)],
              "l2": [{"path": f"d/f{i:03}", "data": ""} for i in range(1, 300, 2)]}
    r = fs_run(["mount()",
                "import ctypes\n"
                "libc = ctypes.CDLL(None, use_errno=True)\n"
                "libc.opendir.restype = ctypes.c_void_p\n"
                "libc.readdir.restype = ctypes.c_void_p\n"
                "libc.readdir.argtypes = [ctypes.c_void_p]\n"
                "libc.telldir.restype = ctypes.c_long\n"
                "libc.telldir.argtypes = [ctypes.c_void_p]\n"
                "libc.seekdir.argtypes = [ctypes.c_void_p, ctypes.c_long]\n"
                "def name(ent):\n"
                "    return ctypes.string_at(ent + 19).decode()\n"
                "d = libc.opendir((m + '/d').encode())\n"
                "first = [name(libc.readdir(d)) for _ in range(120)]\n"
                "pos = libc.telldir(d)\n"
                "nxt = name(libc.readdir(d))\n"
                "os.unlink(m + '/d/f000'); write(m + '/d/new', '')\n"
                "libc.seekdir(d, pos)\n"
                "again = name(libc.readdir(d))\n"
                "rest = []\n"
                "while (e := libc.readdir(d)):\n"
                "    rest.append(name(e))\n"
                "libc.closedir(d)",
                "seen = first + [again] + rest\n"
                "want = {'.', '..'} | {f'f{i:03}' for i in range(1, 300)}\n"
                "(nxt == again, len(seen) == len(set(seen)), sorted(want - set(seen)),"
                " sorted(set(seen) - want - {'f000', 'new'}))",
                "len(os.listdir(m + '/d'))",
                "umount()"], layers)
    # None twice, none that stayed skipped, nothing made up; the removed and the
    # added name may or may not show (POSIX readdir).
    assert r[2] == [True, True, [], []]
    assert r[3] == 300  # f000 gone, new there


def test_two_streams_of_one_directory(fs_run: Runner) -> None:
    """With the kernel opening directories itself (no OPENDIR: ops.py, no_opendir),
    sbx-fs keeps no state per open directory; offsets name their listing. Two
    streams of one directory, read in turns while it changes, each see every name
    that stayed, none twice, as on the kernel's overlayfs."""
    layers = {"l1": [{"path": f"d/f{i:03}", "data": ""} for i in range(0, 400, 2)],
              "l2": [{"path": f"d/f{i:03}", "data": ""} for i in range(1, 400, 2)]}
    # b starts after the change: its listing is a new one, while a reads on in
    # the old one (offsets that were bare indices would mix the two).
    ops = ["d = m + '/d'; a = os.scandir(d); b = None; sa, sb = [], []\n"
           "for turn in range(500):\n"
           "    for it, seen in ((a, sa), (b, sb)):\n"
           "        e = next(it, None) if it is not None else None\n"
           "        if e is not None:\n"
           "            seen.append(e.name)\n"
           "    if turn == 50:\n"
           "        os.unlink(d + '/f399'); write(d + '/new', ''); b = os.scandir(d)\n"
           "a.close(); b.close()",
           "stayed = {f'f{i:03}' for i in range(399)}\n"
           "[(len(s) == len(set(s)), sorted(stayed - set(s)), sorted(set(s) - stayed"
           " - {'f399', 'new'})) for s in (sa, sb)] + [sorted(set(sb) - stayed)]",
           "umount()"]
    sbx = fs_run(["mount()", *ops], layers)
    kernel = fs_run(["kmount()", *ops], layers)
    assert sbx[2] == [[True, [], []], [True, [], []], ["new"]]
    assert sbx[2] == kernel[2]


def test_removing_while_listing(fs_run: Runner) -> None:
    """Names removed while a directory stream is open do not come back: readdirplus
    hands the kernel a dentry for every entry it returns."""
    layers = {"l1": [{"path": f"big/f{i:04}", "data": ""} for i in range(2000)]}
    r = fs_run(["mount()",
                "d = m + '/big'; it = os.scandir(d); first = [next(it).name for _ in range(300)]\n"
                "for n in first:\n"
                "    os.unlink(d + '/' + n)\n"
                "rest = [e.name for e in it]; it.close()",
                "(len(first) + len(rest), sorted(set(first) & set(rest)),"
                " [n for n in first if os.path.lexists(d + '/' + n)])",
                "import shutil; shutil.rmtree(d); (os.path.exists(d), kind(u + '/big'))",
                "os.mkdir(d); os.listdir(d)",
                "umount()"], layers)
    assert r[2] == [2000, [], []]
    assert r[3] == [False, "whiteout"]
    assert r[4] == []


LISTING = (
    "def listing(d):\n"
    "    out = []\n"
    "    for e in sorted(os.scandir(d), key=lambda e: e.name):\n"
    # DirEntry answers these from d_type, without a stat, unless it is DT_UNKNOWN
    "        t = ('dir' if e.is_dir(follow_symlinks=False) else 'link' if e.is_symlink()"
    " else 'file' if e.is_file(follow_symlinks=False) else 'other')\n"
    "        out.append([e.name, t, kind(e.path), e.inode() == os.lstat(e.path).st_ino])\n"
    "    return out"
)


def test_readdir_of_entries_the_kernel_knows(fs_run: Runner) -> None:
    """Entries the kernel already holds go out by number and type only (overlay.py,
    readdir's emit_known): what readdir(3) shows must not change for it — d_ino is
    st_ino, d_type the type — as on the kernel's overlayfs, through creates, links,
    renames, copy-up and removals, and a later stat still sees the file."""
    layers = {"l1": [{"path": "d/a", "data": "a"}, {"path": "d/sub/x", "data": "x"},
                     {"path": "d/ln", "type": "symlink", "target": "a"}],
              "l2": [{"path": "d/b", "data": "b"}, {"path": "d/gone", "data": "g"}]}
    ops = ["mount()", LISTING,
           "listing(m + '/d')",  # nothing known yet: full entries
           "listing(m + '/d')",  # every entry known now
           "os.mkfifo(m + '/d/fifo'); os.symlink('b', m + '/d/sl'); os.link(m + '/d/a',"
           " m + '/d/hard'); os.rename(m + '/d/b', m + '/d/b2'); os.unlink(m + '/d/gone');"
           " write(m + '/d/a', 'A'); os.mkdir(m + '/d/new'); listing(m + '/d')",
           "listing(m + '/d')",
           "[(n, os.lstat(m + '/d/' + n).st_size) for n in sorted(os.listdir(m + '/d'))]",
           "umount()"]
    sbx = fs_run(["mount = mount", *ops], layers)
    kernel = fs_run(["mount = kmount", *ops], layers)
    assert sbx[3] == sbx[4]
    assert [e[0] for e in sbx[5]] == ["a", "b2", "fifo", "hard", "ln", "new", "sl", "sub"]
    assert sbx[5] == sbx[6]
    assert all(e[3] for listing in sbx[3:7] for e in listing)  # d_ino == st_ino
    assert sbx[2:-1] == kernel[2:-1]


def test_open_files_survive_unlink_and_copy_up(fs_run: Runner) -> None:
    r = fs_run(["mount()",
                # a read-only descriptor opened before a copy-up reads the copy after it
                "ro = os.open(m + '/b', os.O_RDONLY); write(m + '/b', 'B2');"
                " v = os.pread(ro, 10, 0); os.close(ro); v",
                # an unlinked open file keeps working, attributes included
                "fd = os.open(m + '/gone', os.O_CREAT | os.O_RDWR, 0o600); os.write(fd, b'abc');"
                " os.unlink(m + '/gone'); os.fchmod(fd, 0o640); os.ftruncate(fd, 2);"
                " s = os.fstat(fd); v = (os.pread(fd, 10, 0), oct(s.st_mode), s.st_nlink);"
                " os.close(fd); v",
                "fd = os.open(m + '/a', os.O_RDONLY); os.unlink(m + '/a'); v = os.read(fd, 10);"
                " os.close(fd); (v, os.path.exists(m + '/a'))",
                "umount()"], TWO)
    assert r[1] == "B2"
    assert r[2] == ["ab", "0o100640", 0]
    assert r[3] == ["l1a", False]


def test_files(fs_run: Runner) -> None:
    """O_APPEND, O_EXCL, O_TRUNC, sparse files past 4 GiB, fsync, statfs, fallocate."""
    r = fs_run(["mount()",
                "fd = os.open(m + '/a', os.O_WRONLY | os.O_APPEND); os.write(fd, b'+1');"
                " os.lseek(fd, 0, 0); os.write(fd, b'+2'); os.close(fd); read(m + '/a')",
                "fd = os.open(m + '/b', os.O_WRONLY | os.O_TRUNC); os.close(fd);"
                " (os.stat(m + '/b').st_size, os.stat(u + '/b').st_size)",
                "fd = os.open(m + '/big', os.O_CREAT | os.O_RDWR, 0o644);"
                " os.pwrite(fd, b'end', 5 << 30); os.fsync(fd); os.fdatasync(fd); os.close(fd);"
                " s = os.stat(m + '/big'); (s.st_size, s.st_blocks < 64)",
                "fd = os.open(m + '/big', os.O_RDONLY); v = (os.pread(fd, 3, 5 << 30),"
                " os.pread(fd, 2, 4 << 30)); os.close(fd); v",
                # copy-up of a sparse lower file keeps its holes (the file is bigger
                # than a small disk would allow otherwise)
                "umount(); os.rename(u + '/big', L['l1'] + '/big'); mount();"
                " write(m + '/big', 'x', 'r+'); s = os.stat(u + '/big');"
                " (s.st_size, s.st_blocks < 64, kind(u + '/big'))",
                "fd = os.open(m + '/fa', os.O_CREAT | os.O_RDWR, 0o644);"
                " os.posix_fallocate(fd, 0, 1 << 20); os.close(fd); os.stat(m + '/fa').st_size",
                "v = os.statvfs(m); w = os.statvfs(u); (v.f_blocks == w.f_blocks,"
                " v.f_bsize == w.f_bsize, v.f_namemax)",
                "fd = os.open(m + '/d', os.O_RDONLY); os.fsync(fd); os.close(fd)",
                "umount()"], TWO)
    assert r[1] == "l1a+1+2"
    assert r[2] == [0, 0]
    assert r[3] == [(5 << 30) + 3, True]
    assert r[4] == ["end", "\x00\x00"]
    assert r[5] == [(5 << 30) + 3, True, "file"]
    assert r[6] == 1 << 20
    assert r[7] == [True, True, 255]
    assert r[8] is None


# Each op sets a file's mtime to 1e9, changes the file, and says whether its mtime
# moved: truncate(2) and ftruncate(2) set mtime and ctime even to the size the file
# has (ext4_setattr, under overlayfs), and so does O_TRUNC of an empty file.
OLD = "os.utime(m + '/{f}', (1e9, 1e9)); "
MOVED = "; os.stat(m + '/{f}').st_mtime != 1e9"
TIME_OPS = [
    OLD.format(f="a") + "os.truncate(m + '/a', 3)" + MOVED.format(f="a"),  # copy-up
    OLD.format(f="a") + "os.truncate(m + '/a', 3)" + MOVED.format(f="a"),  # upper
    OLD.format(f="a") + "fd = os.open(m + '/a', os.O_RDWR); os.ftruncate(fd, 3); os.close(fd)"
    + MOVED.format(f="a"),
    OLD.format(f="b") + "os.truncate(m + '/b', 0)" + MOVED.format(f="b"),
    OLD.format(f="b") + "os.truncate(m + '/b', 0)" + MOVED.format(f="b"),
    OLD.format(f="b") + "os.close(os.open(m + '/b', os.O_WRONLY | os.O_TRUNC))"
    + MOVED.format(f="b"),
    OLD.format(f="a") + "os.truncate(m + '/a', 1)" + MOVED.format(f="a"),
    OLD.format(f="a") + "write(m + '/a', 'x', 'a')" + MOVED.format(f="a"),
    # read back after a remount: what the upper layer holds
    OLD.format(f="a") + "os.truncate(m + '/a', 2); umount(); remount(); "
    "os.stat(m + '/a').st_mtime != 1e9",
]


def test_truncate_sets_the_times_as_the_kernel_does(fs_run: Runner) -> None:
    """truncate(2) to the size a file has: the kernel's overlayfs (ext4 below) moves
    mtime and ctime. With the kernel's writeback cache a FUSE client keeps mtime
    itself and would not (fuse_do_setattr adds ATTR_MTIME only when the size
    changes), so sbx-fs runs without it (docs/fs.md, "Speed")."""
    sbx = fs_run(["mount(); remount = mount", *TIME_OPS, "umount()"], TWO)
    kernel = fs_run(["kmount(); remount = kmount", *TIME_OPS, "umount()"], TWO)
    assert kernel[1:-1] == [True] * len(TIME_OPS)
    assert sbx[1:-1] == kernel[1:-1]


POSIX_FALLOCATE_OPS = [
    # past the end of a lower file: copied up, grown, the data kept, zeros after
    "fd = os.open(m + '/a', os.O_RDWR); os.posix_fallocate(fd, 1, 10000); os.close(fd);"
    " v = read(m + '/a'); (len(v), v[:3], v[3:] == chr(0) * (len(v) - 3), kind(u + '/a'))",
    # a new file, 3 MiB: every block there once it is closed (the writes of glibc's
    # fallback sit in the page cache until then)
    "fd = os.open(m + '/n', os.O_CREAT | os.O_RDWR, 0o644); os.posix_fallocate(fd, 0, 3 << 20);"
    " size = os.fstat(fd).st_size; os.close(fd); (size, os.stat(u + '/n').st_blocks * 512"
    " >= 3 << 20)",
    # inside a file: nothing changes
    "fd = os.open(m + '/b', os.O_RDWR); os.posix_fallocate(fd, 0, 1); os.close(fd);"
    " (read(m + '/b'), os.stat(m + '/b').st_size)",
    "umount(); remount(); (os.stat(m + '/a').st_size, os.stat(m + '/n').st_size)",
]


def test_posix_fallocate(fs_run: Runner) -> None:
    """posix_fallocate(3) as on the kernel's overlayfs. glibc calls fallocate(2) and,
    where that is EOPNOTSUPP (a stock pyfuse3: docs/fs.md), writes a byte in every
    block that is not there yet, which needs a descriptor open for reading too."""
    sbx = fs_run(["mount(); remount = mount", *POSIX_FALLOCATE_OPS, "umount()"], TWO)
    kernel = fs_run(["kmount(); remount = kmount", *POSIX_FALLOCATE_OPS, "umount()"], TWO)
    assert kernel[1:-1] == [[10001, "l1a", True, "file"], [3 << 20, True], ["b", 1],
                            [10001, 3 << 20]]
    assert sbx[1:-1] == kernel[1:-1]


# fallocate(2) through a mount: `fa` raises OSError like os functions do.
FA = ("import ctypes\n"
      "libc = ctypes.CDLL(None, use_errno=True)\n"
      "libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]\n"
      "def fa(fd, mode, off, length):\n"
      "    if libc.fallocate(fd, mode, off, length) != 0:\n"
      "        e = ctypes.get_errno()\n"
      "        raise OSError(e, os.strerror(e))\n"
      "KEEP, PUNCH, COLLAPSE, ZERO, INSERT = 0x01, 0x02, 0x08, 0x10, 0x20\n"
      "def ro(p):\n"
      "    return os.open(p, os.O_RDONLY)\n"
      "def zeros(b):\n"
      "    return b.count(0) == len(b)\n")
BLK = 4096
BIG = "y" * (3 * BLK)  # a lower file of three blocks
FALLOC_LAYERS = {"l1": [{"path": "a", "data": "l1a"}, {"path": "big", "data": BIG},
                        {"path": "k", "data": "k"}, {"path": "fifo", "type": "fifo"}],
                 "l2": [{"path": "b", "data": "b"}]}
FALLOC_OPS = [
    FA,
    # mode 0, a new file: the size the kernel shows at once, all blocks there, zeros
    "fd = os.open(m + '/n', os.O_CREAT | os.O_RDWR, 0o644); fa(fd, 0, 0, 1 << 20);"
    " v = (os.fstat(fd).st_size, os.stat(m + '/n').st_size, os.stat(m + '/n').st_blocks"
    " * 512 >= 1 << 20, zeros(os.pread(fd, 1 << 20, 0))); os.close(fd); v",
    # mode 0, a lower file: copied up, grown, its data kept
    "fd = os.open(m + '/a', os.O_WRONLY); fa(fd, 0, 2, 8190); os.close(fd);"
    " v = open(m + '/a', 'rb').read(); (len(v), v[:3], zeros(v[3:]), kind(u + '/a'),"
    " os.stat(u + '/a').st_size)",
    # mode 0 inside the file: nothing changes; then the same on a lower file
    "fd = os.open(m + '/a', os.O_RDWR); fa(fd, 0, 0, 1); os.close(fd); os.stat(m + '/a').st_size",
    "fd = os.open(m + '/b', os.O_RDWR); fa(fd, 0, 0, 1); os.close(fd);"
    " (read(m + '/b'), os.stat(m + '/b').st_size, kind(u + '/b'))",
    # KEEP_SIZE past the end of a lower file: the size stays, the blocks come
    "b0 = os.stat(m + '/k').st_blocks; fd = os.open(m + '/k', os.O_RDWR);"
    " fa(fd, KEEP, 0, 1 << 20); s = os.fstat(fd); os.close(fd);"
    " (s.st_size, b0 * 512 < 1 << 20, s.st_blocks * 512 >= 1 << 20, read(m + '/k'),"
    " os.stat(u + '/k').st_size)",
    # PUNCH_HOLE | KEEP_SIZE in a copied-up file, over a block just written (the kernel
    # writes its dirty pages back first): zeros read back, size kept, a block freed
    "fd = os.open(m + '/big', os.O_RDWR); os.pwrite(fd, b'w' * 4096, 4096);"
    " fa(fd, PUNCH | KEEP, 4096, 4096); v = os.pread(fd, 3 * 4096, 0); os.fsync(fd);"
    " s = os.fstat(fd); os.close(fd);"
    " (v[:4096] == b'y' * 4096, zeros(v[4096:8192]), v[8192:] == b'y' * 4096, s.st_size,"
    " s.st_blocks * 512)",
    # ... and unaligned: the partial blocks zeroed, the range reads back as zeros
    "fd = os.open(m + '/big', os.O_RDWR); fa(fd, PUNCH | KEEP, 100, 50); v = os.pread(fd,"
    " 200, 0); os.close(fd); (v[:100] == b'y' * 100, zeros(v[100:150]), v[150:] == b'y' * 50)",
    # ZERO_RANGE over cached data, then past the end (without KEEP_SIZE: the file grows)
    "fd = os.open(m + '/big', os.O_RDWR); os.pwrite(fd, b'z' * 10, 9500);"
    " fa(fd, ZERO, 9000, 1000); v = os.pread(fd, 3000, 8192); fa(fd, ZERO, 12288, 4096);"
    " s = os.fstat(fd).st_size; w = zeros(os.pread(fd, 4096, 12288)); os.close(fd);"
    " (v[:808] == b'y' * 808, zeros(v[808:1808]), v[1808:] == b'y' * 1192, s, w,"
    " os.stat(m + '/big').st_size)",
    "fd = os.open(m + '/big', os.O_RDWR); fa(fd, ZERO | KEEP, 16000, 10000);"
    " v = os.fstat(fd).st_size; os.close(fd); v",
    # past 4 GiB: a sparse file grows to 5 GiB + 4 KiB with one block, and keeps its size
    # for KEEP_SIZE further out; a hole punched there reads back as zeros
    "fd = os.open(m + '/huge', os.O_CREAT | os.O_RDWR, 0o644); fa(fd, 0, 5 << 30, 4096);"
    " os.pwrite(fd, b'end', (5 << 30) + 100); fa(fd, KEEP, 6 << 30, 4096);"
    " fa(fd, PUNCH | KEEP, 5 << 30, 4096); os.fsync(fd); s = os.fstat(fd);"
    " v = os.pread(fd, 4096, 5 << 30); os.close(fd);"
    " (s.st_size, s.st_blocks * 512, zeros(v), len(v))",
    # errors: the VFS's for a read-only descriptor, a bad range, PUNCH without
    # KEEP_SIZE, a fifo; the upper filesystem's (ext4: EFBIG) past its largest file
    "fd = ro(m + '/b')\ntry:\n    fa(fd, 0, 0, 1)\nfinally:\n    os.close(fd)",
    "fd = os.open(m + '/n', os.O_RDWR)\ntry:\n    fa(fd, 0, 0, 0)\nfinally:\n    os.close(fd)",
    "fd = os.open(m + '/n', os.O_RDWR)\ntry:\n    fa(fd, 0, -1, 10)\nfinally:\n"
    "    os.close(fd)",
    "fd = os.open(m + '/n', os.O_RDWR)\ntry:\n    fa(fd, PUNCH, 0, 4096)\nfinally:\n"
    "    os.close(fd)",
    "fd = os.open(m + '/fifo', os.O_RDWR)\ntry:\n    fa(fd, 0, 0, 4096)\nfinally:\n"
    "    os.close(fd)",
    "fd = os.open(m + '/n', os.O_RDWR)\ntry:\n    fa(fd, 0, 1 << 50, 4096)\nfinally:\n"
    "    os.close(fd)",
    "os.stat(m + '/n').st_size",
    # an unprivileged caller's fallocate clears setuid and setgid (ext4's
    # file_modified); mtime moves for every mode
    "write(m + '/s', 'x'); os.chown(m + '/s', 1000, 1000); os.chmod(m + '/s', 0o6755)\n"
    "def f():\n"
    "    os.setgid(1000); os.setuid(1000); fd = os.open(m + '/s', os.O_RDWR)\n"
    "    fa(fd, KEEP, 0, 10); os.close(fd)\n"
    "in_child(f); oct(os.stat(m + '/s').st_mode)",
    *("os.utime(m + '/s', (1e9, 1e9)); fd = os.open(m + '/s', os.O_RDWR);"
      f" fa(fd, {mode}, 0, 4096 * {n}); os.close(fd); os.stat(m + '/s').st_mtime != 1e9"
      for mode, n in (("KEEP", 2), ("0", 4), ("PUNCH | KEEP", 1), ("ZERO", 1))),
    # what the upper layer holds, read back after a remount
    "umount(); remount(); [os.stat(m + '/' + f).st_size for f in ('n', 'a', 'b', 'k', 'big',"
    " 'huge')] + [read(m + '/a')[:3], read(m + '/k'), kind(u + '/big')]",
    "(oct(os.stat(m + '/s').st_mode), os.stat(m + '/s').st_mtime != 1e9,"
    " os.stat(m + '/s').st_size)",
]


@pytest.mark.parametrize("opts", ["", "writeback=0"])
def test_fallocate(fs_run: Runner, opts: str) -> None:
    """fallocate(2), every mode FUSE passes on, through sbx-fs (with pyfuse3 patched by
    scripts/build-pyfuse3.sh) and the kernel's overlayfs: the same sizes, blocks,
    data and errno, the kernel's cached size included; with and without the
    writeback cache."""
    mount = f"mount(opts={opts!r}); remount = lambda: mount(opts={opts!r})"
    sbx = fs_run([mount, *FALLOC_OPS, "umount()"], FALLOC_LAYERS)
    kernel = fs_run(["kmount(); remount = kmount", *FALLOC_OPS, "umount()"], FALLOC_LAYERS)
    big = 5 << 30
    assert kernel[1:-1] == [
        None,
        [1 << 20, 1 << 20, True, True],
        [8192, "l1a", True, "file", 8192],
        8192,
        ["b", 1, "file"],
        [1, True, True, "k", 1],
        [True, True, True, 3 * BLK, 2 * BLK],
        [True, True, True],
        [True, True, True, 12288 + 4096, True, 16384],
        16384,
        [big + 4096, 4096, True, 4096],
        err("EBADF"), err("EINVAL"), err("EINVAL"), err("ENOTSUP"), err("ESPIPE"),
        err("EFBIG"),
        1 << 20,
        "0o100755", True, True, True, True,
        [1 << 20, 8192, 1, 1, 16384, big + 4096, "l1a", "k", "file"],
        ["0o100755", True, 4 * BLK],
    ]
    assert list(zip(FALLOC_OPS, sbx[1:-1], strict=True)) == list(
        zip(FALLOC_OPS, kernel[1:-1], strict=True))


def test_fallocate_modes_fuse_refuses(fs_run: Runner) -> None:
    """COLLAPSE_RANGE and INSERT_RANGE: the kernel's overlayfs passes them to ext4,
    which does them; FUSE's client refuses them itself (fuse_file_fallocate:
    EOPNOTSUPP) and never asks the server, so sbx-fs cannot do them."""
    ops = [FA, *(f"fd = os.open(m + '/big', os.O_RDWR)\ntry:\n    fa(fd, {mode}, 4096, 4096)\n"
                 "finally:\n    os.close(fd)" for mode in ("COLLAPSE", "INSERT")),
           "os.stat(m + '/big').st_size"]
    sbx = fs_run(["mount()", *ops, "umount()"], FALLOC_LAYERS)
    kernel = fs_run(["kmount()", *ops, "umount()"], FALLOC_LAYERS)
    assert kernel[2:-1] == [None, None, 3 * BLK]
    assert sbx[2:-1] == [err("ENOTSUP"), err("ENOTSUP"), 3 * BLK]  # EOPNOTSUPP


# A pyfuse3 as PyPI has it, built from the same sdist without the patches
# (scripts/build-pyfuse3.sh --stock, which scripts/test.sh runs), put before the
# venv's own on sys.path.
STOCK_PYFUSE3 = Path(os.environ.get("SBX_FS_STOCK_PYFUSE3", "/opt/sbx/pyfuse3-stock"))


@pytest.mark.skipif(not (STOCK_PYFUSE3 / "pyfuse3").is_dir(),
                    reason=f"no stock pyfuse3 in {STOCK_PYFUSE3}: run scripts/build-pyfuse3.sh"
                    f" --stock {STOCK_PYFUSE3} /opt/sbx/venv (scripts/test.sh does)")
def test_a_stock_pyfuse3(fs_run: Runner, workdir: Path) -> None:
    """With pyfuse3 as PyPI has it (no fallocate handler, no readdir_reply lookup
    argument), sbx-fs mounts and works, fallocate(2) is EOPNOTSUPP in every mode and
    posix_fallocate(3) works through glibc's fallback, as on the kernel's overlayfs;
    readdir sends full entries."""
    env = {**os.environ, "PYTHONPATH": str(STOCK_PYFUSE3)}
    probe = subprocess.run([sys.executable, "-c", "import inspect, pyfuse3; print("
                            "hasattr(pyfuse3.Operations, 'fallocate'), 'lookup' in"
                            " inspect.signature(pyfuse3.readdir_reply).parameters)"],
                           capture_output=True, text=True, check=True, env=env)
    assert probe.stdout.split() == ["False", "False"], f"{STOCK_PYFUSE3} has a patched pyfuse3"
    wrapper = workdir / "sbx-fs-stock"
    wrapper.write_text(f"#!/bin/sh\nPYTHONPATH={STOCK_PYFUSE3} exec {sys.executable} -m fs"
                       ' "$@"\n')
    wrapper.chmod(0o755)
    sbx_fs = str(wrapper)
    r = fs_run(["mount()", FA,
                *(f"fd = os.open(m + '/n', os.O_CREAT | os.O_RDWR, 0o644)\ntry:\n"
                  f"    fa(fd, {mode}, 0, 4096)\nfinally:\n    os.close(fd)"
                  for mode in ("0", "KEEP", "PUNCH | KEEP", "ZERO")),
                "write(m + '/a', 'x', 'a'); (read(m + '/a'), os.stat(m + '/n').st_size)",
                "umount()"], TWO, sbx_fs=sbx_fs)
    assert r[2:-1] == [err("ENOTSUP")] * 4 + [["l1ax", 0]]  # ENOTSUP is EOPNOTSUPP
    sbx = fs_run(["mount(); remount = mount", *POSIX_FALLOCATE_OPS, "umount()"], TWO,
                 sbx_fs=sbx_fs)
    kernel = fs_run(["kmount(); remount = kmount", *POSIX_FALLOCATE_OPS, "umount()"], TWO)
    assert sbx[1:-1] == kernel[1:-1]
    listings = ["mount()", LISTING, "listing(m + '/d')", "listing(m + '/d')", "umount()"]
    stock = fs_run(listings, TWO, sbx_fs=sbx_fs)
    kernel = fs_run(["mount = kmount", *listings], TWO)
    assert stock[2:4] == kernel[3:5]
    assert [e[0] for e in stock[3]] == ["x", "y"]


def test_mmap(fs_run: Runner) -> None:
    """Shared writable mappings reach the upper layer (direct_io is never set, the
    kernel's page cache and writeback serve them)."""
    r = fs_run(["mount()",
                "import mmap; fd = os.open(m + '/b', os.O_RDWR); mm = mmap.mmap(fd, 0);"
                " mm[0:1] = b'B'; mm.flush(); mm.close(); os.close(fd); read(u + '/b')",
                "fd = os.open(m + '/mm', os.O_CREAT | os.O_RDWR, 0o644); os.ftruncate(fd, 8192);"
                " mm = mmap.mmap(fd, 8192); mm[4096:4101] = b'hello'; mm.close(); os.close(fd)",
                "umount(); mount(); read(m + '/mm')[4096:4101]",
                "fd = os.open(m + '/a', os.O_RDONLY); mm = mmap.mmap(fd, 0, mmap.MAP_PRIVATE);"
                " v = bytes(mm[:3]); mm.close(); os.close(fd); (v, kind(u + '/a'))",
                "umount()"], TWO)
    assert r[1] == "B"
    assert r[3] == "hello"
    assert r[4] == ["l1a", "missing"]


SHARED_OPS = [
    # O_APPEND from two descriptors, taking turns: every write lands at the end
    "f1 = os.open(m + '/a', os.O_WRONLY | os.O_APPEND); f2 = os.open(m + '/a', os.O_RDWR"
    " | os.O_APPEND); [os.write(f, b) for f, b in ((f1, b'1'), (f2, b'22'), (f1, b'333'))];"
    " os.lseek(f2, 0, 0); v = os.read(f2, 100); os.close(f1); os.close(f2); v",
    # a new file in O_APPEND mode, and pwrite on it (Linux appends, whatever the offset)
    "fd = os.open(m + '/new', os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o644);"
    " os.write(fd, b'ab'); os.pwrite(fd, b'cd', 0); os.close(fd); read(m + '/new')",
    # a shared writable mapping and read(2) of another descriptor see the same pages;
    # msync puts them in the upper layer while the file is still mapped
    "import mmap; fd = os.open(m + '/b', os.O_RDWR); mm = mmap.mmap(fd, 0);"
    " mm[0:1] = b'M'; r = os.open(m + '/b', os.O_RDONLY); v = os.read(r, 10);"
    " os.close(r); mm.flush(); w = read(u + '/b'); mm.close(); os.close(fd); (v, w)",
    # growing a mapped file with ftruncate, then writing past the old end through it
    "fd = os.open(m + '/g', os.O_CREAT | os.O_RDWR, 0o644); os.ftruncate(fd, 4096);"
    " mm = mmap.mmap(fd, 4096); mm[4090:4096] = b'tail!!'; mm.close(); os.close(fd);"
    " (os.stat(m + '/g').st_size, read(m + '/g')[4090:])",
]


def test_append_and_shared_mappings_as_the_kernel(fs_run: Runner) -> None:
    """O_APPEND (the writeback cache computes the offsets: the upper file is opened
    without it) and MAP_SHARED coherence, against the kernel's overlayfs."""
    sbx = fs_run(["mount()", *SHARED_OPS, "umount()"], TWO)
    kernel = fs_run(["kmount()", *SHARED_OPS, "umount()"], TWO)
    assert kernel[1:-1] == ["l1a122333", "abcd", ["M", "M"], [4096, "tail!!"]]
    assert sbx[1:-1] == kernel[1:-1]


def test_hard_links_share_metadata_after_copy_up(fs_run: Runner) -> None:
    """A chmod of one name of a lower hard link copies the file up, and the other
    names show the change (one inode, as index=on would keep it; the kernel without
    index breaks the link, see docs/fs.md)."""
    layers = {"l1": [{"path": "h1", "data": "x"}, {"path": "d/h2", "type": "hardlink",
                                                   "target": "h1"}]}
    r = fs_run(["mount()",
                "os.chmod(m + '/h1', 0o600); (oct(os.stat(m + '/d/h2').st_mode & 0o777),"
                " os.stat(m + '/h1').st_ino == os.stat(m + '/d/h2').st_ino,"
                " os.stat(m + '/d/h2').st_nlink)",
                "os.setxattr(m + '/d/h2', 'user.k', b'v'); xattrs(m + '/h1')",
                "os.unlink(m + '/h1'); (os.stat(m + '/d/h2').st_nlink, read(m + '/d/h2'))",
                "umount()"], layers)
    assert r[1] == ["0o600", True, 2]
    assert r[2] == {"user.k": "v"}
    assert r[3] == [1, "x"]


def test_xattrs(fs_run: Runner) -> None:
    layers = {"l1": [{"path": "f", "data": "", "xattrs": {"user.a": "1"}},
                     {"path": "d", "type": "dir", "xattrs": {"user.overlay.opaque": "y",
                                                             "user.b": "2"}}]}
    r = fs_run(["mount()",
                "(xattrs(m + '/f'), xattrs(m + '/d'))",
                "os.getxattr(m + '/d', 'user.overlay.opaque')",     # the overlay's own
                "os.setxattr(m + '/f', 'user.containers.override_stat', b'0:0:0777')",
                # user.overlay.* set through the mount is stored escaped (Linux >= 6.7)
                "os.setxattr(m + '/f', 'user.overlay.mine', b'3'); (xattrs(m + '/f'),"
                " sorted(xattrs(u + '/f')))",
                "os.setxattr(m + '/f', 'user.a', b'9', os.XATTR_CREATE)",
                "os.setxattr(m + '/f', 'user.z', b'9', os.XATTR_REPLACE)",
                "os.setxattr(m + '/f', 'trusted.x', b'1')",
                "umount()"], layers)
    assert r[1] == [{"user.a": "1"}, {"user.b": "2"}]
    assert r[2] == err("ENODATA")
    assert r[3] == err("EPERM")
    assert r[4] == [{"user.a": "1", "user.overlay.mine": "3"},
                    ["user.a", "user.overlay.overlay.mine"]]
    assert r[5] == err("EEXIST")
    assert r[6] == err("ENODATA")
    assert r[7] == err("EPERM")


def test_inode_numbers_are_stable(fs_run: Runner) -> None:
    """The same numbers across lookups and copy-up, and across remounts for what was
    not copied up; on one filesystem they are the layers' own, as overlayfs's xino
    shows them. (A copy keeps its origin's number for the life of the mount only: no
    origin xattr is written, see docs/fs.md.)"""
    r = fs_run(["mount()",
                "i = {n: os.stat(m + '/' + n).st_ino for n in ('a', 'b', 'd', 'd/x')}",
                "i['b'] == os.stat(L['l2'] + '/b').st_ino",
                "write(m + '/b', 'w'); os.stat(m + '/b').st_ino == i['b']",
                "os.mkdir(m + '/d/z'); os.stat(m + '/d').st_ino == i['d']",
                "umount(); mount(); {n: os.stat(m + '/' + n).st_ino for n in ('a', 'd', 'd/x')}"
                " == {n: i[n] for n in ('a', 'd', 'd/x')}",
                "len({os.stat(m + '/' + n).st_ino for n in os.listdir(m)}) == len(os.listdir(m))",
                "umount()"], TWO)
    assert r[2:7] == [True, True, True, True, True]


def test_read_only_mount(fs_run: Runner) -> None:
    r = fs_run(["mount(upper=False)",
                "read(m + '/a')",
                "write(m + '/a', 'x')",
                "os.mkdir(m + '/n')",
                "os.unlink(m + '/b')",
                "umount()"], TWO)
    assert r[1] == "l1a"
    assert r[2:5] == [err("EROFS")] * 3


# Operations whose results (errno included) must match the kernel's overlayfs.
COMPARE_OPS = [
    "read(m + '/a')",
    "sorted(os.listdir(m))",
    "sorted(os.listdir(m + '/d'))",
    "os.rmdir(m + '/d')",
    "os.unlink(m + '/d')",
    "os.rename(m + '/d', m + '/d2')",
    "os.rename(m + '/a', m + '/d')",
    "os.rename(m + '/d', m + '/a')",
    "os.mknod(m + '/wh', stat.S_IFCHR | 0o600, 0)",
    "os.mkdir(m + '/a')",
    "os.symlink('x', m + '/b')",
    "os.link(m + '/d', m + '/d3')",
    "os.getxattr(m + '/a', 'user.nope')",
    "os.getxattr(m + '/a', 'user.overlay.origin')",
    "os.removexattr(m + '/a', 'user.nope')",
    "os.unlink(m + '/b'); os.unlink(m + '/b')",
    "os.rename(m + '/a', m + '/a2'); sorted(os.listdir(m))",
    "os.unlink(m + '/d/x'); os.unlink(m + '/d/y'); os.rmdir(m + '/d'); os.mkdir(m + '/d');"
    " os.listdir(m + '/d')",
    "os.rmdir(m + '/only2')",
    "os.open(m + '/a2', os.O_CREAT | os.O_EXCL | os.O_WRONLY)",
    "os.makedirs(m + '/p/q'); os.rename(m + '/p', m + '/only2/p'); sorted(tree(m + '/only2'))",
    "os.truncate(m + '/a2', 1); read(m + '/a2')",
    "os.stat(m + '/d').st_nlink",
    "os.stat(m + '/only2/p').st_nlink",
    # over whiteouts: a file onto the removed b, a directory onto the moved a
    "write(m + '/n', 'n'); os.rename(m + '/n', m + '/b'); read(m + '/b')",
    "os.mkdir(m + '/nd'); write(m + '/nd/f', '1'); os.rename(m + '/nd', m + '/a');"
    " sorted(os.listdir(m + '/a'))",
    "os.rename(m + '/a', m + '/a3'); sorted(os.listdir(m))",
    "tree(m)",
]


def test_errors_match_the_kernels_overlayfs(fs_run: Runner) -> None:
    sbx = fs_run(["mount()", *COMPARE_OPS, "umount()"], TWO)
    kernel = fs_run(["kmount()", *COMPARE_OPS, "umount()"], TWO)
    assert list(zip(COMPARE_OPS, sbx[1:-1], strict=True)) == list(
        zip(COMPARE_OPS, kernel[1:-1], strict=True))
