"""--user resolution against a rootfs's passwd and group files (runc's GetExecUser)."""

import pytest

from sandbox.errors import SbxError
from sandbox.runtime.users import lookup, parse_group, parse_passwd, resolve

PASSWD = """root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
# a comment
broken line
tester:x:1000:1000:tester:/home/tester:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
"""
GROUP = """root:x:0:
tty:x:5:
wheel:x:10:tester
audio:x:29:someone,tester
tester:x:1000:
extra:x:2000:tester
nogroup:x:65534:
"""


def _resolve(spec):
    return resolve(spec, parse_passwd(PASSWD), parse_group(GROUP))


def test_default_is_root_with_roots_home():
    u = _resolve("")
    assert (u.uid, u.gid, u.home, u.name) == (0, 0, "/root", "root")
    assert u.additional_gids == []


def test_name_gets_primary_and_supplementary_groups():
    u = _resolve("tester")
    assert (u.uid, u.gid, u.home) == (1000, 1000, "/home/tester")
    assert u.additional_gids == [10, 29, 2000]


def test_numeric_uid_found_in_passwd_uses_its_entry():
    u = _resolve("1000")
    assert (u.uid, u.gid, u.name) == (1000, 1000, "tester")


def test_numeric_uid_not_in_passwd_runs_with_gid_0_and_home_slash():
    u = _resolve("4242")
    assert (u.uid, u.gid, u.home, u.name) == (4242, 0, "/", None)


def test_group_by_name_and_by_number():
    assert _resolve("tester:extra").gid == 2000
    u = _resolve("tester:77")
    assert u.gid == 77
    # An explicit group does not take away the user's supplementary groups (docker).
    assert u.additional_gids == [10, 29, 2000]


def test_unknown_user_and_group_are_clear_errors():
    with pytest.raises(SbxError, match="unable to find user nosuch"):
        _resolve("nosuch")
    with pytest.raises(SbxError, match="unable to find group nogrp"):
        _resolve("tester:nogrp")


def test_lookup_reads_files_through_the_root_not_the_host(tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    # /etc/passwd is an absolute symlink: it must resolve inside the root.
    (root / "real").write_text("alice:x:7:7::/home/alice:/bin/sh\n")
    (root / "etc" / "passwd").symlink_to("/real")
    u = lookup(str(root), "alice")
    assert (u.uid, u.gid) == (7, 7)


def test_lookup_without_passwd_file_still_resolves_numeric_ids(tmp_path):
    u = lookup(str(tmp_path), "5:6")
    assert (u.uid, u.gid) == (5, 6)
