"""Owners through sbx-fs: uidmapping/gidmapping, squashing, and the override_stat
xattr, for a user with subordinate ids (podman's rootless layout) and for one without.
"""

from __future__ import annotations

from pathlib import Path

from fs_rig import run_driver
from helpers import User

OWNED = {"l1": [
    {"path": "root0", "data": "r"},                          # stored 0:0
    {"path": "five", "data": "5", "uid": 5, "gid": 7},
    {"path": "far", "data": "f", "uid": 3000, "gid": 3000},  # outside every range
    {"path": "dir", "type": "dir", "uid": 5, "gid": 5},
]}
MAP = "uidmapping=0:1000:1:1:1:999,gidmapping=:0:1000:1:1:1:999"  # podman's leading ":"


def test_uidmapping_presents_stored_ids_under_another_mapping(
        test_user: User, workdir: Path) -> None:
    r = run_driver(test_user, workdir, [
        f"mount(opts={MAP!r})",
        "[(os.stat(m + '/' + n).st_uid, os.stat(m + '/' + n).st_gid)"
        " for n in ('root0', 'five', 'far')]",
        "(os.stat(m).st_uid, os.stat(m).st_gid)",
        # a file made by uid 1000 through the mount is stored as 0, as on the image
        "def f():\n"
        "    os.setgroups([]); os.setgid(1000); os.setuid(1000)\n"
        "    write(m + '/dir/../mine', 'x')\n"
        "    return (os.stat(m + '/mine').st_uid, os.stat(m + '/mine').st_gid)\n"
        "in_child(f)",
        "(os.stat(u + '/mine').st_uid, os.stat(u + '/mine').st_gid)",
        # chown takes presented ids and stores them mapped back
        "os.chown(m + '/five', 1000, 6); (os.stat(u + '/five').st_uid,"
        " os.stat(u + '/five').st_gid, os.stat(m + '/five').st_uid)",
        # a copy-up keeps the stored owner
        "os.utime(m + '/far', (1, 1)); (os.stat(u + '/far').st_uid, os.stat(m + '/far').st_uid)",
        "umount()",
    ], OWNED)
    assert r[1] == [[1000, 1000], [5, 7], [65534, 65534]]
    assert r[2] == [1000, 1000]
    assert r[3] == [1000, 1000]
    assert r[4] == [0, 0]
    assert r[5] == [0, 6, 1000]
    assert r[6] == [3000, 65534]


def test_squash(test_user: User, workdir: Path) -> None:
    r = run_driver(test_user, workdir, [
        "mount(opts='squash_to_root')",
        "sorted({(os.stat(m + '/' + n).st_uid, os.stat(m + '/' + n).st_gid)"
        " for n in os.listdir(m)})",
        "os.chown(m + '/five', 9, 9); (os.stat(m + '/five').st_uid, os.stat(u + '/five').st_uid)",
        "umount(); mount(opts='squash_to_uid=42,squash_to_gid=43');"
        " sorted({(os.stat(m + '/' + n).st_uid, os.stat(m + '/' + n).st_gid)"
        " for n in os.listdir(m)})",
        "umount()",
    ], OWNED)
    assert r[1] == [[0, 0]]
    assert r[2] == [0, 9]
    assert r[3] == [[42, 43]]


OVERRIDE = {"l1": [
    # containers/storage and sbx's extractor mark the layer root (mapping.py)
    {"path": ".", "type": "dir", "xattrs": {"user.containers.override_stat": "0:0:0755:dir"}},
    {"path": "suid", "data": "s", "mode": 0o600,
     "xattrs": {"user.containers.override_stat": "1000:1000:4755:file"}},
    {"path": "dev", "data": "", "mode": 0o600,
     "xattrs": {"user.containers.override_stat": "0:0:0666:char-1-3"}},
    {"path": "sub", "type": "dir", "mode": 0o700,
     "xattrs": {"user.containers.override_stat": "1000:1000:2775:dir"}},
    {"path": "plain", "data": "p"},
]}
UNMARKED = {"l1": [
    {"path": "f", "data": "", "xattrs": {"user.containers.override_stat": "1000:1000:4755:file"}},
]}


def test_override_stat_is_honoured(test_user: User, workdir: Path) -> None:
    r = run_driver(test_user, workdir, [
        "mount()",
        "[(n, oct(os.stat(m + '/' + n).st_mode), os.stat(m + '/' + n).st_uid,"
        " os.stat(m + '/' + n).st_gid, os.stat(m + '/' + n).st_rdev)"
        " for n in ('suid', 'dev', 'sub', 'plain')]",
        "xattrs(m + '/suid')",  # the union's own xattr is not shown
        # the copy gets the owner and mode the xattr says, as real ones
        "os.setxattr(m + '/suid', 'user.x', b'1'); s = os.stat(u + '/suid');"
        " (oct(s.st_mode), s.st_uid, sorted(xattrs(u + '/suid')))",
        # setgid directory: new entries take its group, subdirectories the bit
        "os.mkdir(m + '/sub/new'); s = os.stat(m + '/sub/new'); (oct(s.st_mode), s.st_gid)",
        "umount()",
    ], OVERRIDE)
    assert r[1] == [["suid", "0o104755", 1000, 1000, 0],
                    ["dev", "0o20666", 0, 0, 259],
                    ["sub", "0o42775", 1000, 1000, 0],
                    ["plain", "0o100644", 0, 0, 0]]
    assert r[2] == {}
    assert r[3] == ["0o104755", 1000, ["user.x"]]
    assert r[4] == ["0o42755", 1000]


def test_override_stat_only_in_a_marked_layer(test_user: User, workdir: Path) -> None:
    r = run_driver(test_user, workdir, [
        "mount()",
        "(oct(os.stat(m + '/f').st_mode), os.stat(m + '/f').st_uid)",
        "umount()",
    ], UNMARKED)
    assert r[1] == ["0o100644", 0]


def test_user_without_subordinate_ids_stores_owners_in_xattrs(
        nosub_user: User, workdir: Path) -> None:
    """In a namespace that maps one id, a copy-up of a file owned by another stores
    the owner in user.containers.override_stat (the upper root gets one too) and
    reads it back after a remount."""
    nosub_user.chown(workdir)
    maps = "uidmapping=1000:0:1:0:0:1,gidmapping=1000:0:1:0:0:1"
    r = run_driver(nosub_user, workdir, [
        f"mount(opts={maps!r})",
        "(oct(os.stat(m + '/suid').st_mode), os.stat(m + '/suid').st_uid)",
        "os.utime(m + '/suid', (5, 5)); (xattrs(u + '/suid'), xattrs(u),"
        " os.stat(u + '/suid').st_uid)",
        f"umount(); mount(opts={maps!r}); s = os.stat(m + '/suid');"
        " (oct(s.st_mode), s.st_uid, s.st_mtime, read(m + '/suid'))",
        "umount()",
    ], OVERRIDE, map_auto=False)
    assert r[1] == ["0o104755", 0]
    assert r[2] == [{"user.containers.override_stat": "1000:1000:4755:file"},
                    {"user.containers.override_stat": "0:0:0755:dir"}, 0]
    assert r[3] == ["0o104755", 0, 5, "s"]
