"""`sbx run` process settings, seen from inside: environment, working directory,
user and groups, capabilities and no_new_privs.

Capability sets are read from /proc/self/status and compared with podman's default
set of 11 (containers/common DefaultCapabilities).
"""

from __future__ import annotations

import re
import secrets
import shlex
import subprocess
from pathlib import Path

import pytest
from helpers import SbxRunner

CAP = {"CHOWN": 0, "DAC_OVERRIDE": 1, "FOWNER": 3, "FSETID": 4, "KILL": 5, "SETGID": 6,
       "SETUID": 7, "SETPCAP": 8, "NET_BIND_SERVICE": 10, "NET_RAW": 13, "SYS_ADMIN": 21,
       "SYS_CHROOT": 18, "SETFCAP": 31}
PODMAN_DEFAULT = ("CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
                  "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "SETFCAP")
DEFAULT_MASK = sum(1 << CAP[c] for c in PODMAN_DEFAULT)
assert DEFAULT_MASK == 0x800405FB
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def run(sbx: SbxRunner, rootfs: Path, script: str, *opts: str,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return sbx.run("run", "--rootfs", rootfs, *opts, "--", "sh", "-c", script,
                   timeout=30, env=env)


def run_sh(sbx: SbxRunner, rootfs: Path, script: str, *opts: str,
           env: dict[str, str] | None = None) -> str:
    result = run(sbx, rootfs, script, *opts, env=env)
    assert result.returncode == 0, (
        f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    )
    return result.stdout


def env_inside(sbx: SbxRunner, rootfs: Path, *opts: str,
               env: dict[str, str] | None = None) -> dict[str, str]:
    # busybox env prints NAME=VALUE lines; the values used here have no newlines.
    out = run_sh(sbx, rootfs, "env", *opts, env=env)
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def status_fields(sbx: SbxRunner, rootfs: Path, *opts: str) -> dict[str, str]:
    out = run_sh(sbx, rootfs, "cat /proc/self/status", *opts)
    return {k: v.strip() for k, _, v in (line.partition(":") for line in out.splitlines())}


def caps(sbx: SbxRunner, rootfs: Path, *opts: str) -> dict[str, int]:
    fields = status_fields(sbx, rootfs, *opts)
    return {name: int(fields[name], 16)
            for name in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")}


def last_cap() -> int:
    return int(Path("/proc/sys/kernel/cap_last_cap").read_text())


# -- environment ------------------------------------------------------------------------
def test_default_environment(sbx: SbxRunner, busybox_rootfs: Path) -> None:
    env = env_inside(sbx, busybox_rootfs)
    assert env["PATH"] == DEFAULT_PATH
    assert env["HOME"] == "/root"
    assert re.fullmatch(r"[0-9a-f]{12}", env["HOSTNAME"])
    # Nothing of sbx's own environment leaks in (the runner sets USER and LANG).
    assert "USER" not in env
    assert "LANG" not in env


def test_env_option(sbx: SbxRunner, busybox_rootfs: Path) -> None:
    env = env_inside(sbx, busybox_rootfs, "-e", "GREETING=hello world", "-e", "EQ=a=b",
                     "-e", "EMPTY=", "-e", "PATH=/bin")
    assert env["GREETING"] == "hello world"
    assert env["EQ"] == "a=b"
    assert env["EMPTY"] == ""
    assert env["PATH"] == "/bin"


def test_env_name_alone_passes_the_hosts_value(sbx: SbxRunner, busybox_rootfs: Path) -> None:
    env = env_inside(sbx, busybox_rootfs, "-e", "FROM_HOST", "-e", "NOT_SET_ON_HOST",
                     env={"FROM_HOST": "host value"})
    assert env["FROM_HOST"] == "host value"
    assert "NOT_SET_ON_HOST" not in env


def test_env_file(sbx: SbxRunner, busybox_rootfs: Path, workdir: Path) -> None:
    env_file = workdir / "app.env"
    env_file.write_text(
        "# a comment\n"
        "\n"
        "FROM_FILE=file value\n"
        "OVERRIDDEN=from file\n"
        "URL=http://x/?a=b\n"
        "HOST_VAR\n"
    )
    env = env_inside(sbx, busybox_rootfs, "--env-file", str(env_file),
                     "-e", "OVERRIDDEN=from -e", env={"HOST_VAR": "passed"})
    assert env["FROM_FILE"] == "file value"
    assert env["OVERRIDDEN"] == "from -e"
    assert env["URL"] == "http://x/?a=b"
    assert env["HOST_VAR"] == "passed"
    assert not any(k.startswith("#") for k in env)


# -- working directory ------------------------------------------------------------------
def test_default_workdir_is_root(sbx: SbxRunner, busybox_rootfs: Path) -> None:
    assert run_sh(sbx, busybox_rootfs, "pwd").strip() == "/"


def test_workdir_is_created(sbx: SbxRunner, busybox_rootfs: Path) -> None:
    new = f"/made-{secrets.token_hex(4)}/by/sbx"
    assert not (busybox_rootfs / new.lstrip("/")).exists()
    out = run_sh(sbx, busybox_rootfs, "pwd; test -d . && echo is-dir", "-w", new)
    assert out.split() == [new, "is-dir"]


def test_workdir_existing(sbx: SbxRunner, busybox_rootfs: Path) -> None:
    assert run_sh(sbx, busybox_rootfs, "pwd", "-w", "/etc").strip() == "/etc"


# -- user and groups --------------------------------------------------------------------
def ids(sbx: SbxRunner, rootfs: Path, *opts: str) -> tuple[str, str, list[str], str, str]:
    out = run_sh(sbx, rootfs, "id -u; id -g; id -G; id -un; echo $HOME", *opts)
    uid, gid, groups, name, home = out.splitlines()
    return uid, gid, sorted(groups.split(), key=int), name, home


def test_user_by_uid_gets_passwd_gid_and_member_groups(
    sbx: SbxRunner, busybox_rootfs: Path
) -> None:
    uid, gid, groups, name, home = ids(sbx, busybox_rootfs, "-u", "1000")
    assert (uid, gid, name, home) == ("1000", "1000", "tester", "/home/tester")
    # tester is listed in wheel, audio and extra in the rootfs's /etc/group.
    assert groups == ["10", "29", "1000", "2000"]
    out = run_sh(sbx, busybox_rootfs, "id", "-u", "1000")
    assert out.strip() == "uid=1000(tester) gid=1000(tester) groups=10(wheel),29(audio),2000(extra)"


def test_user_by_name(sbx: SbxRunner, busybox_rootfs: Path) -> None:
    assert ids(sbx, busybox_rootfs, "-u", "tester") == (
        "1000", "1000", ["10", "29", "1000", "2000"], "tester", "/home/tester")


def test_user_and_group_by_name(sbx: SbxRunner, busybox_rootfs: Path) -> None:
    uid, gid, groups, name, _ = ids(sbx, busybox_rootfs, "-u", "tester:extra")
    assert (uid, gid, name) == ("1000", "2000", "tester")
    assert "2000" in groups and "10" in groups and "29" in groups


def test_numeric_user_without_passwd_entry(sbx: SbxRunner, busybox_rootfs: Path) -> None:
    out = run_sh(sbx, busybox_rootfs, "id -u; id -g; id -G; echo $HOME", "-u", "4242:4343")
    assert out.split() == ["4242", "4343", "4343", "/"]


def test_user_files_are_owned_by_that_user(
    sbx: SbxRunner, busybox_rootfs: Path, workdir: Path
) -> None:
    workdir.chmod(0o777)  # root's inside; 1000 may write only because it is 0777
    out = run_sh(sbx, busybox_rootfs, "touch /work/f && stat -c %u:%g /work/f",
                 "-u", "1000", "-v", f"{workdir}:/work")
    assert out.strip() == "1000:1000"


# -- capabilities -----------------------------------------------------------------------
def test_root_gets_podmans_default_capabilities(sbx: SbxRunner, busybox_rootfs: Path) -> None:
    got = caps(sbx, busybox_rootfs)
    assert got == {"CapInh": 0, "CapPrm": DEFAULT_MASK, "CapEff": DEFAULT_MASK,
                   "CapBnd": DEFAULT_MASK, "CapAmb": 0}, {k: hex(v) for k, v in got.items()}


def test_non_root_user_has_no_effective_capabilities(
    sbx: SbxRunner, busybox_rootfs: Path
) -> None:
    got = caps(sbx, busybox_rootfs, "-u", "1000")
    assert got == {"CapInh": 0, "CapPrm": 0, "CapEff": 0, "CapBnd": DEFAULT_MASK, "CapAmb": 0}


def test_cap_drop_all(sbx: SbxRunner, busybox_rootfs: Path) -> None:
    got = caps(sbx, busybox_rootfs, "--cap-drop", "ALL")
    assert got == {"CapInh": 0, "CapPrm": 0, "CapEff": 0, "CapBnd": 0, "CapAmb": 0}


@pytest.mark.parametrize("name", ["NET_RAW", "net_raw", "CAP_NET_RAW"])
def test_cap_add(sbx: SbxRunner, busybox_rootfs: Path, name: str) -> None:
    got = caps(sbx, busybox_rootfs, "--cap-add", name)
    expected = DEFAULT_MASK | 1 << CAP["NET_RAW"]
    assert (got["CapBnd"], got["CapEff"], got["CapPrm"]) == (expected, expected, expected)


def test_cap_add_for_a_non_root_user_is_ambient(sbx: SbxRunner, busybox_rootfs: Path) -> None:
    got = caps(sbx, busybox_rootfs, "-u", "1000", "--cap-add", "NET_RAW")
    bit = 1 << CAP["NET_RAW"]
    assert got == {"CapInh": bit, "CapPrm": bit, "CapEff": bit,
                   "CapBnd": DEFAULT_MASK | bit, "CapAmb": bit}


def test_cap_add_all(sbx: SbxRunner, busybox_rootfs: Path) -> None:
    got = caps(sbx, busybox_rootfs, "--cap-add", "ALL")
    everything = (1 << (last_cap() + 1)) - 1
    assert got["CapBnd"] == everything
    assert got["CapEff"] == everything


def test_cap_drop_all_then_add_one(sbx: SbxRunner, busybox_rootfs: Path) -> None:
    got = caps(sbx, busybox_rootfs, "--cap-drop", "ALL", "--cap-add", "CHOWN")
    assert got["CapBnd"] == got["CapEff"] == 1 << CAP["CHOWN"]


def test_cap_drop_chown_denies_chown(sbx: SbxRunner, busybox_rootfs: Path) -> None:
    script = "touch /tmp/c-$$ && chown 1000:1000 /tmp/c-$$; rc=$?; rm -f /tmp/c-$$; exit $rc"
    assert run(sbx, busybox_rootfs, script).returncode == 0  # the control: allowed by default
    dropped = run(sbx, busybox_rootfs, script, "--cap-drop", "CHOWN")
    assert dropped.returncode != 0
    assert "Operation not permitted" in dropped.stderr
    got = caps(sbx, busybox_rootfs, "--cap-drop", "CHOWN")
    assert got["CapBnd"] == DEFAULT_MASK & ~(1 << CAP["CHOWN"])


@pytest.mark.parametrize("user", ["0", "1000"])
def test_no_new_privs(sbx: SbxRunner, busybox_rootfs: Path, user: str) -> None:
    assert status_fields(sbx, busybox_rootfs, "-u", user)["NoNewPrivs"] == "1"


# -- the command line -------------------------------------------------------------------
def test_options_after_the_command_belong_to_the_command(
    sbx: SbxRunner, busybox_rootfs: Path
) -> None:
    result = sbx.run("run", "--rootfs", busybox_rootfs, "sh", "-c", "printf '%s|' \"$@\"", "sh",
                     "-e", "X=1", "-v", "/a:/b", "--rm", timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "-e|X=1|-v|/a:/b|--rm|"


# -- standard streams of a non-root user ------------------------------------------------
def in_user_pipeline(sbx: SbxRunner, *args: str) -> subprocess.CompletedProcess[str]:
    """`echo input | sbx ARGS | cat` in a shell of the user's, as in a terminal: the
    pipes belong to the user (container root), not to root as the test's pipes do."""
    line = f"echo input | {shlex.join(sbx.argv(args))} | cat"
    user = sbx.user
    return subprocess.run(["/bin/sh", "-c", line], capture_output=True, text=True,
                          timeout=30, cwd=user.home, env=user.env(), user=user.uid,
                          group=user.gid, extra_groups=[])


def test_root_can_reopen_its_standard_streams(sbx: SbxRunner, busybox_rootfs: Path) -> None:
    result = in_user_pipeline(sbx, "run", "-i", "--rootfs", str(busybox_rootfs), "sh", "-c",
                              "cat /dev/stdin > /dev/stdout")
    assert (result.returncode, result.stdout) == (0, "input\n"), result.stderr


def test_non_root_user_can_reopen_its_standard_streams(
    sbx: SbxRunner, busybox_rootfs: Path
) -> None:
    result = in_user_pipeline(sbx, "run", "-i", "-u", "1000", "--rootfs", str(busybox_rootfs),
                              "sh", "-c", "cat /dev/stdin > /dev/stdout")
    # As runc's fixStdioPermissions: else "sh: can't create /dev/stdout: Permission denied".
    assert result.stderr == ""
    assert (result.returncode, result.stdout) == (0, "input\n")
