"""Unit tests of the host probes (sandbox.system) and `sbx system check` rendering.

Probes read the files they are pointed at, so these tests feed them fake /etc/subuid,
/proc/self/mounts, /proc/self/cgroup and cgroup trees under tmp_path.
"""

from __future__ import annotations

import json
import os
import stat
import struct
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from sandbox.system import checks
from sandbox.system.checks import (
    CAP_SETGID,
    CAP_SETUID,
    CgroupInfo,
    Check,
    User,
    caps_permitted,
    cgroup2_mounts,
    check_cgroups,
    check_fuse,
    check_idmap_helper,
    check_overlay,
    check_subid,
    check_userns,
    helper_privilege,
    probe_cgroups,
    run_in_child,
    self_cgroup_path,
    suggest_start,
)
from sandbox.system.subid import SubIdRange, parse_subid, read_subid_ranges

# ---------------------------------------------------------------------------
# /etc/subuid parsing (subuid(5))


def test_parse_subid_by_name() -> None:
    text = "alice:100000:65536\nbob:165536:65536\n"
    assert parse_subid(text, "alice", 1000) == [(100000, 65536)]
    assert parse_subid(text, "bob", 1001) == [(165536, 65536)]


def test_parse_subid_by_numeric_uid() -> None:
    # newuidmap(1) also accepts an entry whose owner is the caller's uid.
    text = "1000:100000:65536\n1001:165536:65536\n"
    assert parse_subid(text, "alice", 1000) == [(100000, 65536)]


def test_parse_subid_name_and_uid_entries_both_count() -> None:
    text = "alice:100000:1000\n1000:200000:1000\n"
    assert parse_subid(text, "alice", 1000) == [(100000, 1000), (200000, 1000)]


def test_parse_subid_numeric_name_is_not_another_uid() -> None:
    assert parse_subid("1001:100000:65536\n", "alice", 1000) == []


def test_parse_subid_skips_comments_and_blank_lines() -> None:
    text = "# managed by hand\n\n   \nalice:100000:65536\n  # alice:1:1\n"
    assert parse_subid(text, "alice", 1000) == [(100000, 65536)]


@pytest.mark.parametrize(
    "line",
    [
        "alice:100000",  # too few fields
        "alice:100000:65536:9",  # too many
        "alice:abc:65536",  # not a number
        "alice:100000:-5",  # negative
        "alice:-1:10",
        "alice:100000:0",  # empty range
        "alice::65536",
        "garbage",
    ],
)
def test_parse_subid_skips_malformed_lines(line: str) -> None:
    text = f"{line}\nalice:300000:65536\n"
    assert parse_subid(text, "alice", 1000) == [(300000, 65536)]


def test_parse_subid_keeps_file_order_of_multiple_ranges() -> None:
    text = "alice:300000:10\nbob:1:1\nalice:100000:20\n"
    assert parse_subid(text, "alice", 1000) == [(300000, 10), (100000, 20)]


def test_parse_subid_other_users_only() -> None:
    assert parse_subid("bob:100000:65536\n", "alice", 1000) == []


def test_read_subid_ranges(tmp_path: Path) -> None:
    f = tmp_path / "subuid"
    f.write_text("alice:100000:65536\n")
    ranges = read_subid_ranges("uid", "alice", 1000, f)
    assert ranges == [SubIdRange(100000, 65536)]
    assert ranges[0].end == 165535


def test_read_subid_ranges_missing_file_is_no_ranges(tmp_path: Path) -> None:
    assert read_subid_ranges("gid", "alice", 1000, tmp_path / "nope") == []


def test_read_subid_ranges_unreadable_names_the_file(tmp_path: Path) -> None:
    # A directory where the file should be: reading fails for root too.
    bad = tmp_path / "subuid"
    bad.mkdir()
    with pytest.raises(checks.SbxError) as info:
        read_subid_ranges("uid", "alice", 1000, bad)
    assert str(bad) in info.value.message
    assert info.value.hint


def test_read_subid_ranges_rejects_bad_kind() -> None:
    with pytest.raises(ValueError):
        read_subid_ranges("group", "alice", 1000)  # type: ignore[arg-type]


ALICE = User("alice", 1000, 1000)


def test_check_subid_ok(tmp_path: Path) -> None:
    f = tmp_path / "subuid"
    f.write_text("alice:100000:65536\n")
    c = check_subid("uid", ALICE, f, tmp_path / "subgid")
    assert c.status == "ok"
    assert "100000-165535" in c.detail and str(f) in c.detail
    assert not c.required


def test_check_subid_missing_warns_with_usermod_fix(tmp_path: Path) -> None:
    f = tmp_path / "subuid"
    f.write_text("bob:100000:65536\n")
    c = check_subid("uid", ALICE, f, tmp_path / "subgid")
    assert c.status == "warn"
    assert str(f) in c.detail
    assert c.fix is not None and "usermod" in c.fix and " alice " in c.fix
    # 100000-165535 belongs to bob: the fix must suggest a range past it.
    assert "--add-subuids 196608-262143" in c.fix


def test_check_subid_small_range_warns(tmp_path: Path) -> None:
    f = tmp_path / "subgid"
    f.write_text("alice:100000:1000\nalice:200000:1000\n")
    c = check_subid("gid", ALICE, f, tmp_path / "subuid")
    assert c.status == "warn"
    assert "only 2000 ids" in c.detail


def test_suggest_start() -> None:
    assert suggest_start([""]) == 100000
    assert suggest_start(["x:100000:65536\n"]) == 196608
    assert suggest_start(["x:10:10\n", "y:500000:1\n"]) == 524288


# ---------------------------------------------------------------------------
# newuidmap / newgidmap


def _caps_xattr(permitted: int, revision: int = 2, rootid: int = 0) -> bytes:
    low, high = permitted & 0xFFFFFFFF, permitted >> 32
    data = struct.pack("<IIIII", revision << 24 | 1, low, 0, high, 0)
    if revision == 3:
        data += struct.pack("<I", rootid)
    return data


def test_caps_permitted_revisions() -> None:
    setuid = 1 << CAP_SETUID
    assert caps_permitted(_caps_xattr(setuid, 2)) == setuid
    assert caps_permitted(_caps_xattr(setuid, 3, rootid=0)) == setuid
    # Namespaced caps for another user namespace grant nothing on the host.
    assert caps_permitted(_caps_xattr(setuid, 3, rootid=100000)) == 0
    assert caps_permitted(struct.pack("<III", 1 << 24, setuid, 0)) == setuid
    assert caps_permitted(b"") == 0
    assert caps_permitted(b"\x00" * 20) == 0


def test_helper_privilege() -> None:
    setuid = stat.S_IFREG | stat.S_ISUID | 0o755
    plain = stat.S_IFREG | 0o755
    assert helper_privilege(setuid, 0, None, CAP_SETUID) == "setuid root"
    # setuid to someone other than root gives no right to write another's map.
    assert helper_privilege(setuid, 1000, None, CAP_SETUID) is None
    assert helper_privilege(plain, 0, None, CAP_SETUID) is None
    caps = _caps_xattr(1 << CAP_SETUID)
    assert helper_privilege(plain, 0, caps, CAP_SETUID) == "file capability cap_setuid"
    # newgidmap needs CAP_SETGID; CAP_SETUID alone does not do.
    assert helper_privilege(plain, 0, caps, CAP_SETGID) is None


def _fake_helper(directory: Path, name: str, mode: int) -> Path:
    path = directory / name
    path.write_text("#!/bin/sh\n")
    path.chmod(mode)
    return path


def test_check_idmap_helper_setuid_file(tmp_path: Path) -> None:
    helper = _fake_helper(tmp_path, "newuidmap", 0o4755)
    c = check_idmap_helper("newuidmap", CAP_SETUID, True, path=str(tmp_path), fallback_dirs=())
    if os.geteuid() == 0:
        # The file is ours, and we are root: setuid root.
        assert (c.status, c.detail) == ("ok", f"{helper}: setuid root")
    else:
        assert c.status == "fail" and "neither setuid root" in c.detail
    assert c.required


def test_check_idmap_helper_without_setuid(tmp_path: Path) -> None:
    helper = _fake_helper(tmp_path, "newuidmap", 0o755)
    c = check_idmap_helper("newuidmap", CAP_SETUID, True, path=str(tmp_path), fallback_dirs=())
    assert c.status == "fail" and c.required
    assert str(helper) in c.detail and "neither setuid root" in c.detail
    assert c.fix is not None and f"chmod u+s {helper}" in c.fix


def test_check_idmap_helper_optional_without_ranges(tmp_path: Path) -> None:
    _fake_helper(tmp_path, "newgidmap", 0o755)
    c = check_idmap_helper("newgidmap", CAP_SETGID, False, path=str(tmp_path), fallback_dirs=())
    assert c.status == "warn" and not c.required
    assert "only your own gid" in c.detail


def test_check_idmap_helper_missing(tmp_path: Path) -> None:
    c = check_idmap_helper("newuidmap", CAP_SETUID, True, path=str(tmp_path), fallback_dirs=())
    assert c.status == "fail"
    assert c.fix is not None and "apt-get install uidmap" in c.fix


def test_check_idmap_helper_fallback_dir(tmp_path: Path) -> None:
    # Not on PATH, but in the fallback directory (Debian: /usr/bin).
    bindir = tmp_path / "bin"
    bindir.mkdir()
    helper = _fake_helper(bindir, "newuidmap", 0o755)
    empty = tmp_path / "empty"
    empty.mkdir()
    c = check_idmap_helper(
        "newuidmap", CAP_SETUID, False, path=str(empty), fallback_dirs=(str(bindir),)
    )
    assert str(helper) in c.detail


# ---------------------------------------------------------------------------
# user namespaces


def _sysctls(tmp_path: Path, **values: int) -> Path:
    for key, value in values.items():
        directory, name = key.split("__")
        (tmp_path / directory).mkdir(exist_ok=True)
        (tmp_path / directory / name).write_text(f"{value}\n")
    return tmp_path


def _never_probe() -> tuple[bool, str]:
    raise AssertionError("the sysctl checks should have answered first")


def test_userns_max_zero_fails(tmp_path: Path) -> None:
    root = _sysctls(tmp_path, user__max_user_namespaces=0)
    c = check_userns(root, _never_probe, euid=1000)
    assert c.status == "fail" and c.required
    assert str(root / "user" / "max_user_namespaces") in c.detail
    assert c.fix is not None and "user.max_user_namespaces" in c.fix


def test_userns_debian_clone_knob(tmp_path: Path) -> None:
    root = _sysctls(tmp_path, user__max_user_namespaces=100, kernel__unprivileged_userns_clone=0)
    c = check_userns(root, _never_probe, euid=1000)
    assert c.status == "fail"
    assert c.fix is not None and "kernel.unprivileged_userns_clone=1" in c.fix


def test_userns_ubuntu_apparmor_restriction(tmp_path: Path) -> None:
    root = _sysctls(
        tmp_path,
        user__max_user_namespaces=100,
        kernel__apparmor_restrict_unprivileged_userns=1,
    )
    c = check_userns(root, _never_probe, euid=1000)
    assert c.status == "fail"
    assert c.fix is not None and "apparmor_restrict_unprivileged_userns=0" in c.fix
    assert "AppArmor profile" in c.fix


def test_userns_probe_failure_is_reported(tmp_path: Path) -> None:
    root = _sysctls(tmp_path, user__max_user_namespaces=100)
    c = check_userns(root, lambda: (False, "unshare(CLONE_NEWUSER): EPERM (...)"), euid=1000)
    assert c.status == "fail" and c.required
    assert "EPERM" in c.detail and c.fix


def test_userns_probe_success(tmp_path: Path) -> None:
    root = _sysctls(tmp_path, user__max_user_namespaces=100, kernel__unprivileged_userns_clone=1)
    c = check_userns(root, lambda: (True, "works"), euid=1000)
    assert c.status == "ok"
    assert c.detail == "works; user.max_user_namespaces=100"


def test_run_in_child_reports_success_and_errors() -> None:
    parent = os.getpid()
    assert run_in_child(lambda: f"child of {parent}") == (True, f"child of {parent}")

    def fails() -> str:
        raise checks.ProbeError("mount overlay on /x: EPERM (Operation not permitted)")

    assert run_in_child(fails) == (False, "mount overlay on /x: EPERM (Operation not permitted)")

    def oserror() -> str:
        open("/nonexistent/file")  # noqa: SIM115
        return "unreachable"

    ok, text = run_in_child(oserror)
    assert not ok and "/nonexistent/file" in text and "ENOENT" in text

    def crashes() -> str:
        raise KeyError("boom")

    ok, text = run_in_child(crashes)
    assert not ok and "KeyError" in text
    # The child never came back into this test.
    assert os.getpid() == parent


def test_flag_values_match_the_syscalls_module() -> None:
    from sandbox.runtime import syscalls

    for name in ("CLONE_NEWNS", "CLONE_NEWUSER", "MS_REC", "MS_PRIVATE"):
        assert getattr(checks, name) == getattr(syscalls, name), name


def test_userns_probe_in_a_child_leaves_this_process_alone() -> None:
    before = os.readlink("/proc/self/ns/user")
    _ok, text = checks.probe_userns()
    # The result depends on the host; either way it names what it did.
    assert "CLONE_NEWUSER" in text or "uid_map" in text or "setgroups" in text, text
    assert os.readlink("/proc/self/ns/user") == before


# ---------------------------------------------------------------------------
# /dev/fuse


def test_fuse_missing(tmp_path: Path) -> None:
    c = check_fuse(tmp_path / "fuse")
    assert c.status == "warn" and not c.required
    assert str(tmp_path / "fuse") in c.detail


def test_fuse_not_a_char_device(tmp_path: Path) -> None:
    dev = tmp_path / "fuse"
    dev.write_text("")
    c = check_fuse(dev)
    assert c.status == "warn" and "not a character device" in c.detail


def test_fuse_char_device_opens(tmp_path: Path) -> None:
    # /dev/null stands in for a usable character device.
    c = check_fuse("/dev/null")
    assert c.status == "ok"


# ---------------------------------------------------------------------------
# overlay


def test_overlay_probe_failure_warns_with_the_directory(tmp_path: Path) -> None:
    seen: list[Path] = []

    def probe(base: Path) -> tuple[bool, str]:
        seen.append(base)
        return False, f"mount overlay on {base}/merged: EINVAL (Invalid argument)"

    c = check_overlay(tmp_path, probe)
    assert seen == [tmp_path]
    assert c.status == "warn" and not c.required
    assert "EINVAL" in c.detail and c.fix is not None and str(tmp_path) in c.fix


def test_overlay_unusable_base_directory(tmp_path: Path) -> None:
    c = check_overlay(tmp_path / "missing")
    assert c.status == "warn"
    assert f"can't prepare a probe directory in {tmp_path / 'missing'}" in c.detail


def test_rmtree_force_removes_mode_000_dirs(tmp_path: Path) -> None:
    # overlayfs leaves work/work with mode 000; cleanup must still remove it.
    victim = tmp_path / "probe"
    (victim / "work" / "work" / "inner").mkdir(parents=True)
    (victim / "work" / "work" / "inner" / "f").write_text("x")
    (victim / "work" / "work" / "inner").chmod(0)
    (victim / "work" / "work").chmod(0)
    assert checks._rmtree_force(victim) is None
    assert not victim.exists()


def test_rmtree_force_reports_what_it_could_not_remove(tmp_path: Path) -> None:
    text = checks._rmtree_force(tmp_path / "never-made")
    assert text is not None and str(tmp_path / "never-made") in text


# ---------------------------------------------------------------------------
# cgroups


def _cgroup_tree(tmp_path: Path, *, v2_root: bool, controllers: str, path: str = "/user.slice"):
    root = tmp_path / "sys-fs-cgroup"
    mount = root if v2_root else root / "unified"
    directory = mount / path.lstrip("/")
    directory.mkdir(parents=True)
    (mount / "cgroup.controllers").write_text(controllers + "\n")
    (directory / "cgroup.controllers").write_text(controllers + "\n")
    (directory / "cgroup.subtree_control").write_text("")
    mounts = tmp_path / "mounts"
    mounts.write_text(f"cgroup2 {mount} cgroup2 rw,nosuid,nodev,noexec 0 0\n")
    self_cg = tmp_path / "self-cgroup"
    lines = [f"0::{path}"] if v2_root else ["4:memory:/foo", "1:name=systemd:/", f"0::{path}"]
    self_cg.write_text("\n".join(lines) + "\n")
    return root, mounts, self_cg, directory


def test_cgroup2_mounts_parses_and_unescapes() -> None:
    text = (
        "tmpfs /sys/fs/cgroup tmpfs rw 0 0\n"
        "cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n"
        "cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n"
        "cgroup2 /mnt/with\\040space cgroup2 rw 0 0\n"
    )
    assert cgroup2_mounts(text) == ["/sys/fs/cgroup/unified", "/mnt/with space"]


def test_self_cgroup_path() -> None:
    assert self_cgroup_path("0::/user.slice/user-1000.slice\n") == "/user.slice/user-1000.slice"
    assert self_cgroup_path("4:memory:/x\n1:name=systemd:/\n0::/\n") == "/"
    assert self_cgroup_path("4:memory:/x\n") is None


def test_probe_cgroups_v2_delegated(tmp_path: Path) -> None:
    root, mounts, self_cg, directory = _cgroup_tree(
        tmp_path, v2_root=True, controllers="cpuset cpu io memory pids"
    )
    info = probe_cgroups(root, mounts, self_cg, writable=lambda p: True)
    assert info.version == "v2"
    assert info.directory == str(directory)
    assert info.delegated == ("memory", "cpu", "pids")
    c = check_cgroups(info)
    assert c.status == "ok" and "memory, cpu, pids delegated" in c.detail


def test_probe_cgroups_v2_not_writable(tmp_path: Path) -> None:
    root, mounts, self_cg, directory = _cgroup_tree(
        tmp_path, v2_root=True, controllers="memory pids"
    )
    info = probe_cgroups(root, mounts, self_cg, writable=lambda p: False)
    assert info.delegated == ()
    c = check_cgroups(info)
    assert c.status == "warn" and not c.required
    assert str(directory) in c.detail and "not writable" in c.detail
    assert c.fix is not None and "Delegate" in c.fix


def test_probe_cgroups_v2_partial_delegation(tmp_path: Path) -> None:
    root, mounts, self_cg, _ = _cgroup_tree(tmp_path, v2_root=True, controllers="memory pids")
    info = probe_cgroups(root, mounts, self_cg, writable=lambda p: True)
    assert info.delegated == ("memory", "pids")
    c = check_cgroups(info)
    assert c.status == "warn" and "not delegated: cpu" in c.detail


def test_probe_cgroups_hybrid(tmp_path: Path) -> None:
    root, mounts, self_cg, _ = _cgroup_tree(tmp_path, v2_root=False, controllers="hugetlb")
    info = probe_cgroups(root, mounts, self_cg, writable=lambda p: True)
    assert info.version == "hybrid"
    assert info.mount == str(root / "unified")
    assert info.controllers == ("hugetlb",)
    c = check_cgroups(info)
    assert c.status == "warn" and "cgroup v1" in c.detail
    assert c.fix is not None and "unified_cgroup_hierarchy" in c.fix


def test_probe_cgroups_v1(tmp_path: Path) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text("cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n")
    info = probe_cgroups(tmp_path / "none", mounts, tmp_path / "self")
    assert info == CgroupInfo("v1")
    assert check_cgroups(info).status == "warn"


# ---------------------------------------------------------------------------
# The CLI: `sbx system check`, `sbx info`

FAKE_CHECKS = [
    Check("newuidmap", "ok", "/usr/bin/newuidmap: setuid root", None, True),
    Check("subuid", "warn", "no ranges", "sudo usermod ...", False),
]


def _invoke(args: list[str], fake: list[Check], monkeypatch: pytest.MonkeyPatch):
    from sandbox.cli import cli

    monkeypatch.setattr(checks, "run_checks", lambda: list(fake))
    return CliRunner().invoke(cli, args)


def test_check_json_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    result = _invoke(["system", "check", "--format", "json"], FAKE_CHECKS, monkeypatch)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data == [
        {
            "name": "newuidmap",
            "status": "ok",
            "required": True,
            "detail": "/usr/bin/newuidmap: setuid root",
            "fix": None,
        },
        {
            "name": "subuid",
            "status": "warn",
            "required": False,
            "detail": "no ranges",
            "fix": "sudo usermod ...",
        },
    ]


def test_check_table(monkeypatch: pytest.MonkeyPatch) -> None:
    result = _invoke(["system", "check"], FAKE_CHECKS, monkeypatch)
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0].split() == ["ok", "newuidmap", "/usr/bin/newuidmap:", "setuid", "root"]
    assert lines[1].startswith("warn  subuid")
    assert lines[2].strip() == "fix: sudo usermod ..."
    assert lines[2].startswith(" ")
    assert "2 checks: 1 ok, 1 warn, 0 failed" in result.output


def test_required_failure_exits_1(monkeypatch: pytest.MonkeyPatch) -> None:
    failing = [*FAKE_CHECKS, Check("userns", "fail", "EPERM", "sysctl ...", True)]
    for args in (["system", "check"], ["info", "--check"], ["system", "check", "--format", "json"]):
        result = _invoke(args, failing, monkeypatch)
        assert result.exit_code == 1, (args, result.output)
    assert "FAIL  userns" in _invoke(["system", "check"], failing, monkeypatch).output


def test_required_failure_exits_1_through_main(monkeypatch: pytest.MonkeyPatch) -> None:
    # sbx's main() runs click with standalone_mode=False; the exit code must survive.
    from sandbox.cli import main

    failing = [Check("userns", "fail", "EPERM", "sysctl ...", True)]
    monkeypatch.setattr(checks, "run_checks", lambda: failing)
    monkeypatch.setattr(sys, "argv", ["sbx", "system", "check"])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 1


def test_optional_failure_exits_0(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = [Check("cgroups", "warn", "hybrid", "boot with ...", False)]
    assert _invoke(["system", "check"], fake, monkeypatch).exit_code == 0


def test_info_json(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    result = _invoke(["info", "--format", "json"], FAKE_CHECKS, monkeypatch)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert set(data) == {"sbx", "host", "user", "store", "checks"}
    assert data["checks"] == {"newuidmap": "ok", "subuid": "warn"}
    assert data["store"]["data_dir"] == str(tmp_path / "data" / "sbx")
    assert data["host"]["cgroup_version"] in {"v1", "v2", "hybrid"}
    assert data["host"]["kernel"] == os.uname().release


def test_sbx_help_does_not_import_system() -> None:
    import subprocess

    code = (
        "import sys; from sandbox.cli import cli\n"
        "try:\n    cli.main(['--help'], standalone_mode=False)\nexcept SystemExit: pass\n"
        "assert 'sandbox.system' not in sys.modules, 'sbx --help imported sandbox.system'\n"
    )
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, capture_output=True)
