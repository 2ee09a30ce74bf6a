"""`sbx unshare` as the unprivileged test user: root of a namespace with the full map."""

import subprocess
from pathlib import Path


def _subid_start(user: str) -> int:
    for line in Path("/etc/subuid").read_text().splitlines():
        name, start, _count = line.split(":")
        if name == user:
            return int(start)
    raise AssertionError(f"{user} has no /etc/subuid line")


def test_unshare_is_root_with_the_subordinate_map(sbx, test_user):
    r = sbx.run("unshare", "sh", "-c", "id -u; cat /proc/self/uid_map")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split("\n")
    assert lines[0] == "0"
    maps = [line.split() for line in lines[1:] if line.strip()]
    assert maps[0] == ["0", str(test_user.uid), "1"]
    assert maps[1][:2] == ["1", str(_subid_start(test_user.name))]


def test_unshare_can_remove_files_owned_by_subordinate_ids(sbx, test_user, workdir):
    # A container's root chowns a file to 1000; the user can't delete it from the host,
    # but can from `sbx unshare`.
    r = sbx.run("unshare", "sh", "-c", f"mkdir {workdir}/d && touch {workdir}/d/f && "
                f"chown -R 1000:1000 {workdir}/d")
    assert r.returncode == 0, r.stderr
    assert (workdir / "d" / "f").stat().st_uid == _subid_start(test_user.name) + 999
    host_rm = subprocess.run(["rm", "-rf", f"{workdir}/d"], user=test_user.uid,
                             group=test_user.gid, extra_groups=[], capture_output=True)
    assert host_rm.returncode != 0
    r = sbx.run("unshare", "rm", "-rf", f"{workdir}/d")
    assert r.returncode == 0, r.stderr
    assert not (workdir / "d").exists()


def test_unshare_passes_exit_status_and_reports_missing_commands(sbx):
    assert sbx.run("unshare", "sh", "-c", "exit 9").returncode == 9
    r = sbx.run("unshare", "no-such-command-xyz")
    assert r.returncode == 127
    assert "no-such-command-xyz" in r.stderr
