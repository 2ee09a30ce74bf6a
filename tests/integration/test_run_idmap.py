"""`sbx run` user-namespace id maps, seen from inside the container and on the host.

The default map puts container root on the user and container ids 1.. on the user's
/etc/subuid and /etc/subgid ranges (rootless podman's layout); `--userns=keep-id`
keeps the user's own id inside; a user without ranges gets a one-line map and a
warning. Expected maps are computed from /etc/subuid and /etc/subgid, not hard-coded.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest
from helpers import SbxRunner, User, make_tmp_dir, remove_tree

Map = list[tuple[int, int, int]]


def subid_ranges(user: User, path: str) -> list[tuple[int, int]]:
    """The user's (start, count) ranges in /etc/subuid or /etc/subgid, in file order."""
    ranges = []
    for line in Path(path).read_text().splitlines():
        parts = line.strip().split(":")
        if len(parts) == 3 and parts[0] in (user.name, str(user.uid)):
            ranges.append((int(parts[1]), int(parts[2])))
    if not ranges:
        pytest.fail(f"no {path} line for {user.name}: run scripts/setup.sh")
    return ranges


def default_map(host_id: int, ranges: list[tuple[int, int]]) -> Map:
    """0 -> host_id, then 1.. -> each subordinate range in turn."""
    expected = [(0, host_id, 1)]
    ctr = 1
    for start, count in ranges:
        expected.append((ctr, start, count))
        ctr += count
    return expected


def parse_map(text: str) -> Map:
    rows = []
    for line in text.splitlines():
        if not line.strip():
            continue
        ctr, host, size = (int(f) for f in line.split())
        rows.append((ctr, host, size))
    return rows


def run_sh(sbx: SbxRunner, rootfs: Path, script: str, *opts: str) -> tuple[str, str]:
    result = sbx.run("run", "--rootfs", rootfs, *opts, "--", "sh", "-c", script, timeout=30)
    assert result.returncode == 0, (
        f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    )
    return result.stdout, result.stderr


def read_maps(sbx: SbxRunner, rootfs: Path, *opts: str) -> tuple[Map, Map, str]:
    out, err = run_sh(sbx, rootfs, "cat /proc/self/uid_map; echo --; cat /proc/self/gid_map",
                      *opts)
    uid_text, _, gid_text = out.partition("--\n")
    return parse_map(uid_text), parse_map(gid_text), err


def test_default_maps_put_root_on_the_user_and_the_rest_on_subids(
    sbx: SbxRunner, busybox_rootfs: Path, test_user: User
) -> None:
    uid_map, gid_map, err = read_maps(sbx, busybox_rootfs)
    assert uid_map == default_map(test_user.uid, subid_ranges(test_user, "/etc/subuid"))
    assert gid_map == default_map(test_user.gid, subid_ranges(test_user, "/etc/subgid"))
    assert "warning" not in err


def test_id_inside_is_root(sbx: SbxRunner, busybox_rootfs: Path) -> None:
    out, _ = run_sh(sbx, busybox_rootfs, "id -u; id -g; id -un")
    assert out.split() == ["0", "0", "root"]


def test_files_root_creates_belong_to_the_user_on_the_host(
    sbx: SbxRunner, busybox_rootfs: Path, workdir: Path, test_user: User
) -> None:
    run_sh(sbx, busybox_rootfs, "echo data > /work/file && mkdir /work/dir",
           "-v", f"{workdir}:/work")
    for name in ("file", "dir"):
        st = (workdir / name).stat()
        assert (st.st_uid, st.st_gid) == (test_user.uid, test_user.gid), name


def test_chown_inside_lands_in_the_subordinate_range(
    sbx: SbxRunner, busybox_rootfs: Path, workdir: Path, test_user: User
) -> None:
    run_sh(sbx, busybox_rootfs,
           "touch /work/f1000 /work/f0 && chown 1000:1000 /work/f1000 && chown 0:0 /work/f0",
           "-v", f"{workdir}:/work")
    uid_start = subid_ranges(test_user, "/etc/subuid")[0][0]
    gid_start = subid_ranges(test_user, "/etc/subgid")[0][0]
    st = (workdir / "f1000").stat()
    # Container id 1 is the first subordinate id, so 1000 is start + 999.
    assert (st.st_uid, st.st_gid) == (uid_start + 999, gid_start + 999)
    st0 = (workdir / "f0").stat()
    assert (st0.st_uid, st0.st_gid) == (test_user.uid, test_user.gid)


def test_host_owners_seen_inside(
    sbx: SbxRunner, busybox_rootfs: Path, workdir: Path, test_user: User
) -> None:
    """The user's files are root's inside; a host-root file is unmapped (65534)."""
    (workdir / "mine").write_text("x")
    test_user.chown(workdir / "mine")
    (workdir / "roots").write_text("x")  # pytest runs as root: owned by host uid 0
    out, _ = run_sh(sbx, busybox_rootfs,
                    "stat -c %u:%g /work/mine; stat -c %u:%g /work/roots",
                    "-v", f"{workdir}:/work")
    assert out.split() == ["0:0", "65534:65534"]


# -- --userns=keep-id -------------------------------------------------------------------
def test_keep_id_keeps_the_users_ids(
    sbx: SbxRunner, busybox_rootfs: Path, test_user: User
) -> None:
    out, _ = run_sh(sbx, busybox_rootfs, "id -u; id -g; id -un; echo $HOME",
                    "--userns=keep-id")
    assert out.split() == [str(test_user.uid), str(test_user.gid), test_user.name,
                           str(test_user.home)]


def test_keep_id_maps(sbx: SbxRunner, busybox_rootfs: Path, test_user: User) -> None:
    uid_map, gid_map, _ = read_maps(sbx, busybox_rootfs, "--userns=keep-id")
    assert (test_user.uid, test_user.uid, 1) in uid_map
    assert (test_user.gid, test_user.gid, 1) in gid_map
    for got, path in ((uid_map, "/etc/subuid"), (gid_map, "/etc/subgid")):
        total = sum(count for _, count in subid_ranges(test_user, path))
        # Container 0.. is contiguous: every subordinate id plus the user's own.
        assert sum(size for _, _, size in got) == total + 1
        assert got[0][0] == 0
        assert sorted(got) == got
        assert all(a[0] + a[2] == b[0] for a, b in itertools.pairwise(got))


def test_keep_id_files_in_a_volume_belong_to_the_user(
    sbx: SbxRunner, busybox_rootfs: Path, workdir: Path, test_user: User
) -> None:
    out, _ = run_sh(sbx, busybox_rootfs, "touch /work/k && stat -c %u /work/k",
                    "--userns=keep-id", "-v", f"{workdir}:/work")
    assert out.strip() == str(test_user.uid)
    st = (workdir / "k").stat()
    assert (st.st_uid, st.st_gid) == (test_user.uid, test_user.gid)


def test_keep_id_adds_passwd_entry_without_changing_the_rootfs(
    sbx: SbxRunner, busybox_rootfs: Path, test_user: User
) -> None:
    passwd = (busybox_rootfs / "etc/passwd").read_bytes()
    group = (busybox_rootfs / "etc/group").read_bytes()
    out, _ = run_sh(sbx, busybox_rootfs, f"grep '^{test_user.name}:' /etc/passwd /etc/group",
                    "--userns=keep-id")
    assert f":{test_user.name}:x:{test_user.uid}:{test_user.gid}:" in out
    assert f":{test_user.name}:x:{test_user.gid}:" in out
    # Generated files are bind-mounted over the rootfs's own, never written into it.
    assert (busybox_rootfs / "etc/passwd").read_bytes() == passwd
    assert (busybox_rootfs / "etc/group").read_bytes() == group


# -- a user without subordinate ids -----------------------------------------------------
def test_without_subids_a_single_id_map_and_a_warning(
    sbx_nosub: SbxRunner, nosub_rootfs: Path, nosub_user: User
) -> None:
    uid_map, gid_map, err = read_maps(sbx_nosub, nosub_rootfs)
    assert uid_map == [(0, nosub_user.uid, 1)]
    assert gid_map == [(0, nosub_user.gid, 1)]
    assert "sbx: warning:" in err
    assert "/etc/subuid" in err


def test_without_subids_files_belong_to_the_user(
    sbx_nosub: SbxRunner, nosub_rootfs: Path, nosub_user: User
) -> None:
    work = make_tmp_dir("sbx-work-")
    try:
        nosub_user.chown(work)
        out, _ = run_sh(sbx_nosub, nosub_rootfs, "id -u; touch /work/f", "-v", f"{work}:/work")
        assert out.split() == ["0"]
        st = os.stat(work / "f")
        assert (st.st_uid, st.st_gid) == (nosub_user.uid, nosub_user.gid)
    finally:
        remove_tree(work)


def test_without_subids_keep_id(
    sbx_nosub: SbxRunner, nosub_rootfs: Path, nosub_user: User
) -> None:
    uid_map, _, _ = read_maps(sbx_nosub, nosub_rootfs, "--userns=keep-id")
    assert uid_map == [(nosub_user.uid, nosub_user.uid, 1)]
