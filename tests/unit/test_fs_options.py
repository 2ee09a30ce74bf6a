"""fs/options.py: fuse-overlayfs's command line, and what podman passes."""

from __future__ import annotations

import pytest

from fs.__main__ import fuse_options
from fs.mapping import IdRange
from fs.options import UsageError, parse_args, split_dirs, split_options

BASE = ["-o", "lowerdir=/l1:/l2,upperdir=/u,workdir=/w", "/mnt"]


def test_fuse_overlayfs_command_line() -> None:
    o = parse_args(BASE)
    assert o.lowerdirs == ["/l1", "/l2"]
    assert (o.upperdir, o.workdir, o.mountpoint) == ("/u", "/w", "/mnt")
    assert not o.foreground and not o.read_only
    assert o.writeback and o.fsync and o.timeout == 1e9


def test_relative_paths_are_the_callers() -> None:
    o = parse_args(["-o", "lowerdir=l/A:l/B,upperdir=id/diff,workdir=id/work", "id/merged"],
                   cwd="/var/lib/storage/overlay")
    assert o.lowerdirs == ["/var/lib/storage/overlay/l/A", "/var/lib/storage/overlay/l/B"]
    assert o.upperdir == "/var/lib/storage/overlay/id/diff"
    assert o.mountpoint == "/var/lib/storage/overlay/id/merged"


def test_several_o_and_attached_o() -> None:
    o = parse_args(["-f", "-olowerdir=/a", "-o", "upperdir=/u", "-o", "workdir=/w", "/m"])
    assert o.foreground and o.lowerdirs == ["/a"] and o.upperdir == "/u"


def test_podman_options() -> None:
    # containers/storage overlay.go: optsAppendMappings puts ":" before every triple
    o = parse_args(["-o", 'lowerdir=/l,upperdir=/u,workdir=/w,context="system_u:object_r:'
                    'container_file_t:s0:c1,c2",uidmapping=:0:1000:1:1:100000:65536,'
                    "gidmapping=:0:1000:1,xattr_permissions=2,volatile,noacl,static_nlink",
                    "/m"])
    assert o.uidmapping == [IdRange(0, 1000, 1), IdRange(1, 100000, 65536)]
    assert o.gidmapping == [IdRange(0, 1000, 1)]
    assert o.xattr_permissions == 2 and not o.fsync and o.static_nlink
    assert o.warnings == []


def test_squash_and_tuning() -> None:
    o = parse_args(["-o", "lowerdir=/l,squash_to_uid=5,squash_to_gid=6,squash_to_root,"
                    "timeout=0.5,writeback=0,fsync=0,noxattrs=1", "/m"])
    assert (o.squash_to_uid, o.squash_to_gid, o.squash_to_root) == (5, 6, True)
    assert o.timeout == 0.5 and not o.writeback and not o.fsync and not o.xattrs


def test_unknown_options_are_warnings() -> None:
    o = parse_args(["-o", "lowerdir=/l,frobnicate,colour=red,userxattr,index=off", "/m"])
    assert o.warnings == ["frobnicate", "colour=red"]


def test_lowers_only_is_read_only_and_ro_keeps_the_upper_visible() -> None:
    assert parse_args(["-o", "lowerdir=/a:/b", "/m"]).upperdir is None
    o = parse_args(["-o", "lowerdir=/a,upperdir=/u,ro", "/m"])
    assert o.read_only and o.upperdir is None and o.lowerdirs == ["/u", "/a"]
    assert "ro" in fuse_options(o)


@pytest.mark.parametrize("argv, message", [
    (["/m"], "no lowerdir"),
    (["-o", "lowerdir=/a"], "no mountpoint"),
    (["-o", "lowerdir=/a,upperdir=/u", "/m"], "workdir not specified"),
    (["-o", "lowerdir=/a,uidmapping=0:1", "/m"], "invalid mapping"),
    (["-o", "lowerdir=/a,uidmapping=0:x:1", "/m"], "invalid mapping"),
    (["-o", "lowerdir=/a,timeout=soon", "/m"], "timeout"),
    (["-o", "lowerdir=/a,xattr_permissions=3", "/m"], "xattr_permissions"),
    (["-o", "lowerdir=//plug/data/path", "/m"], "plugins"),
    (["-o", "lowerdir=/a,redirect_dir=on", "/m"], "redirect_dir=off"),
    (["-x", "/m"], "unknown option"),
    (["-o"], "needs an argument"),
])
def test_bad_command_lines(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_args(argv)


def test_help_and_version_need_nothing_else() -> None:
    assert parse_args(["--help"]).show_help
    assert parse_args(["-V"]).show_version


def test_split_options_keeps_quotes_and_escapes() -> None:
    assert split_options('a=1,context="x,y",b') == ["a=1", 'context="x,y"', "b"]
    assert split_options("lowerdir=/a\\,b:/c,,x") == ["lowerdir=/a\\,b:/c", "x"]


def test_split_dirs_unescapes() -> None:
    assert split_dirs("/a\\:b:/c\\,d::/e") == ["/a:b", "/c,d", "/e"]
    o = parse_args(["-o", "lowerdir=/l\\:1,upperdir=/u\\,p,workdir=/w", "/m"])
    assert o.lowerdirs == ["/l:1"] and o.upperdir == "/u,p"


def test_fuse_options_follow_fuse_overlayfs(monkeypatch: pytest.MonkeyPatch) -> None:
    o = parse_args(["-o", "lowerdir=/a,upperdir=/u,workdir=/w,nosuid,fsname=x", "/m"])
    monkeypatch.setattr("os.geteuid", lambda: 0)
    opts = fuse_options(o)
    # root (of a user namespace, as podman runs it): the container's users get in
    assert {"default_permissions", "allow_other", "nosuid", "fsname=x"} <= opts
    assert "suid" not in opts and "fsname=sbx-fs" not in opts and "ro" not in opts
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    assert "allow_other" not in fuse_options(o)
