"""`sbx run` failures: exit status 125, one `sbx: ...` message naming what was wrong,
nothing on stdout, and nothing left behind (processes, state directories).

Other sessions may run containers as the same user at the same time, so leftovers are
recognised by a marker unique to each test: a --hostname, which is both in the
command line of every sbx process and in the state directory's generated hostname file.
"""

from __future__ import annotations

import secrets
import subprocess
from pathlib import Path

import pytest
from helpers import SbxRunner, User, processes_with


def state_dirs_with(user: User, marker: str) -> list[Path]:
    base = Path(f"/tmp/sbx-{user.uid}/containers")
    if not base.is_dir():
        return []
    found = []
    for d in base.iterdir():
        try:
            if marker in (d / "hostname").read_text():
                found.append(d)
        except (FileNotFoundError, NotADirectoryError):
            continue
    return found


def assert_nothing_left(user: User, marker: str) -> None:
    assert processes_with(user, marker) == []
    assert state_dirs_with(user, marker) == []


def subuid_count(user: User) -> int:
    """How many subordinate uids /etc/subuid gives the user."""
    total = 0
    for line in Path("/etc/subuid").read_text().splitlines():
        parts = line.strip().split(":")
        if len(parts) == 3 and parts[0] in (user.name, str(user.uid)):
            total += int(parts[2])
    return total


def new_marker() -> str:
    return f"err-{secrets.token_hex(6)}"


def fail_run(sbx: SbxRunner, *args: str) -> subprocess.CompletedProcess[str]:
    result = sbx.run("run", *args, timeout=30)
    assert result.returncode == 125, (
        f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    )
    assert result.stdout == ""
    return result


def sbx_message(result: subprocess.CompletedProcess[str]) -> str:
    """The `sbx: ...` error line; warnings aside, it is the only one."""
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("sbx: ")
             and not ln.startswith("sbx: warning:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


# (id, options before the command, what the message must name). WORK stands for a
# directory of the user's, UNMAPPED for the first container uid past the user's ranges.
CASES = [
    ("bad-volume-syntax", ["-v", "no-colon"], "invalid volume 'no-colon'"),
    ("volume-relative-target", ["-v", "WORK:relative"], "'relative' must be absolute"),
    ("volume-bad-option", ["-v", "WORK:/mnt:bogus"], "invalid option 'bogus'"),
    ("volume-missing-host-path", ["-v", "WORK/missing:/mnt"], "WORK/missing"),
    ("unknown-cap-add", ["--cap-add", "FOO"], "unknown capability 'FOO'"),
    ("unknown-cap-drop", ["--cap-drop", "NOT_A_CAP"], "unknown capability 'NOT_A_CAP'"),
    ("unknown-user", ["-u", "nosuchuser"], "unable to find user nosuchuser"),
    ("unknown-group", ["-u", "tester:nosuchgroup"], "unable to find group nosuchgroup"),
    ("unmapped-uid", ["-u", "UNMAPPED"], "switch to uid UNMAPPED"),
    ("relative-workdir", ["-w", "relative/dir"], "invalid --workdir 'relative/dir'"),
    ("workdir-is-a-file", ["-w", "/etc/passwd"], "/etc/passwd"),
    ("relative-tmpfs", ["--tmpfs", "scratch"], "invalid --tmpfs 'scratch'"),
    ("missing-env-file", ["--env-file", "WORK/missing.env"], "WORK/missing.env"),
    ("empty-env-name", ["-e", "=value"], "invalid environment variable '=value'"),
    ("bad-network", ["--network", "bridge"], "unsupported --network 'bridge'"),
    ("bad-userns", ["--userns", "nonsense"], "unsupported --userns 'nonsense'"),
]


@pytest.mark.parametrize(("options", "named"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_run_error(sbx: SbxRunner, busybox_rootfs: Path, workdir: Path, test_user: User,
                   options: list[str], named: str) -> None:
    marker = new_marker()
    unmapped = str(subuid_count(test_user) + 1)  # container ids run from 0 to the count

    def fill(text: str) -> str:
        return text.replace("WORK", str(workdir)).replace("UNMAPPED", unmapped)

    result = fail_run(sbx, "--rootfs", str(busybox_rootfs), "--hostname", marker,
                      *map(fill, options), "--", "sh", "-c", "echo must-not-run")
    assert fill(named) in sbx_message(result), result.stderr
    assert_nothing_left(test_user, marker)


def test_missing_rootfs(sbx: SbxRunner, test_user: User) -> None:
    marker = new_marker()
    missing = f"/nonexistent-{marker}"
    result = fail_run(sbx, "--rootfs", missing, "--hostname", marker, "true")
    assert missing in sbx_message(result)
    assert result.stderr.splitlines()[-1].startswith("hint: ")
    assert_nothing_left(test_user, marker)


def test_rootfs_that_is_a_file(sbx: SbxRunner, workdir: Path, test_user: User) -> None:
    marker = new_marker()
    (workdir / "not-a-dir").write_text("")
    result = fail_run(sbx, "--rootfs", str(workdir / "not-a-dir"), "--hostname", marker, "true")
    assert str(workdir / "not-a-dir") in sbx_message(result)
    assert_nothing_left(test_user, marker)


def test_invalid_hostname(sbx: SbxRunner, busybox_rootfs: Path, test_user: User) -> None:
    """Too long for sethostname(2) (64 bytes): fails inside the new namespaces, after
    sbx wrote the state directory."""
    marker = "h" * 60 + secrets.token_hex(4)
    result = fail_run(sbx, "--rootfs", str(busybox_rootfs), "--hostname", marker, "true")
    assert "sethostname" in sbx_message(result)
    assert_nothing_left(test_user, marker)


def test_missing_command(sbx: SbxRunner, busybox_rootfs: Path) -> None:
    result = fail_run(sbx, "--rootfs", str(busybox_rootfs))
    assert "COMMAND" in result.stderr


def test_success_leaves_nothing_either(
    sbx: SbxRunner, busybox_rootfs: Path, test_user: User
) -> None:
    marker = new_marker()
    result = sbx.run("run", "--rootfs", busybox_rootfs, "--hostname", marker,
                     "sh", "-c", "cat /etc/hostname", timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{marker}\n"
    assert_nothing_left(test_user, marker)


def test_the_leftover_checks_see_a_running_container(
    sbx: SbxRunner, busybox_rootfs: Path, test_user: User
) -> None:
    """The checks above are not vacuous: while a container runs, both find it."""
    marker = new_marker()
    proc = sbx.popen("run", "-i", "--rootfs", str(busybox_rootfs), "--hostname", marker,
                     "sh", "-c", "echo ready; cat", stdin=subprocess.PIPE,
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline() == "ready\n"
        assert processes_with(test_user, marker)
        assert len(state_dirs_with(test_user, marker)) == 1
        proc.stdin.close()  # cat ends, and with it the container
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert_nothing_left(test_user, marker)
