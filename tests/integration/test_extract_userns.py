"""The layer extractor run for real by the unprivileged test users.

- sbxtest (with /etc/subuid and /etc/subgid ranges) extracts with owners="real" as
  root of a user namespace mapped the podman way (container 0 -> the user, 1..N ->
  the subordinate range, through newuidmap/newgidmap via util-linux unshare);
  from the host, root checks that the owners landed on the user and on
  subuid_start + id - 1, and that setuid/setgid bits survived the chown.
- sbxnosub (no ranges) extracts with owners="xattr": files are its own, the tar's
  owners are in user.containers.override_stat.
- The whiteout formats are checked against their real readers: kernel overlayfs
  (xattr whiteouts, mounted with userxattr in the user namespace) and Debian's
  fuse-overlayfs (aufs `.wh.` files, and override_stat for owners).

sbx runs from the venv that runs pytest (scripts/setup.sh installs it there, where
every user can read it); the checkout itself may be unreadable to the users.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Sequence
from pathlib import Path

import hostile_layers as h
import pytest
from helpers import REPO, User, make_tmp_dir, make_user_dir, remove_tree

pytestmark = pytest.mark.integration

EXTRACT = textwrap.dedent(
    """
    import dataclasses, json, sys
    from pathlib import Path
    from sandbox.errors import SbxError
    from sandbox.images.extract import extract_layer
    owners, fmt = sys.argv[1], sys.argv[2]
    out = []
    try:
        for tar, dest in zip(sys.argv[3::2], sys.argv[4::2]):
            Path(dest).mkdir()
            with open(tar, "rb") as f:
                stats = extract_layer(f, Path(dest), owners=owners, whiteout_format=fmt)
            out.append(dataclasses.asdict(stats))
    except SbxError as exc:
        print(json.dumps({"error": type(exc).__name__, "message": str(exc), "hint": exc.hint}))
        sys.exit(3)
    print(json.dumps(out))
    """
)


def subid_range(user: User, path: str) -> tuple[int, int]:
    """The user's first (start, count) in /etc/subuid or /etc/subgid."""
    for line in Path(path).read_text().splitlines():
        fields = line.strip().split(":")
        if len(fields) == 3 and fields[0] in (user.name, str(user.uid)):
            return int(fields[1]), int(fields[2])
    pytest.fail(f"{user.name} has no range in {path}: run scripts/setup.sh")


def userns_argv(user: User, *, mount: bool = False) -> list[str]:
    """util-linux 2.38 unshare mapping 0 -> the user and 1..N -> its subordinate ids
    (--map-users/--map-groups go through newuidmap/newgidmap)."""
    uid_start, uid_count = subid_range(user, "/etc/subuid")
    gid_start, gid_count = subid_range(user, "/etc/subgid")
    argv = [
        "unshare",
        "--map-root-user",
        f"--map-users={uid_start},1,{uid_count}",
        f"--map-groups={gid_start},1,{gid_count}",
    ]
    if mount:
        argv.append("--mount")
    return [*argv, "--"]


def run_as(
    user: User, argv: Sequence[str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=user.home,
        env=user.env(),
        user=user.uid,
        group=user.gid,
        extra_groups=[],
    )


def extract_as(
    user: User,
    layers: Sequence[tuple[Path, Path]],
    *,
    owners: str,
    fmt: str = "aufs",
    userns: bool = False,
) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-c", EXTRACT, owners, fmt]
    for tar, dest in layers:
        argv += [str(tar), str(dest)]
    if userns:
        argv = userns_argv(user) + argv
    return run_as(user, argv)


@pytest.fixture(scope="session")
def installed_sbx_is_current(test_user: User) -> None:
    """The users import sbx from the venv: it must be this checkout's code."""
    proc = run_as(
        test_user,
        [sys.executable, "-c", "import sandbox.images.extract as e; print(e.__file__)"],
    )
    if proc.returncode != 0:
        pytest.fail(
            f"sandbox.images is not installed in the venv: run scripts/setup.sh\n{proc.stderr}"
        )
    installed = Path(proc.stdout.strip()).parent
    for name in ("extract.py", "whiteout.py"):
        ours = (REPO / "sandbox" / "images" / name).read_bytes()
        theirs = (installed / name).read_bytes()
        if hashlib.sha256(ours).digest() != hashlib.sha256(theirs).digest():
            pytest.fail(f"{installed / name} is older than the checkout: run scripts/setup.sh")


@pytest.fixture
def area() -> Iterator[Path]:
    path = make_tmp_dir("sbx-extract-")
    yield path
    remove_tree(path)


def write_layer(area: Path, name: str, entries: list[h.Entry]) -> Path:
    path = area / f"{name}.tar"
    path.write_bytes(h.tar_bytes(entries))
    path.chmod(0o644)
    return path


def owner(path: Path) -> tuple[int, int]:
    st = os.lstat(path)
    return st.st_uid, st.st_gid


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


OWNED = [
    h.directory("etc", mode=0o755),
    h.file("etc/passwd", b"root:x:0:0::/root:/bin/sh\n", mode=0o644),
    h.directory("home/user", mode=0o700, uid=1000, gid=1000),
    h.file("home/user/notes", b"mine", mode=0o640, uid=1000, gid=1000),
    h.symlink("home/user/link", "notes", uid=1000, gid=1000),
    h.directory("bin", mode=0o755),
    h.file("bin/su", b"\x7fELF", mode=0o4755),
    h.file("bin/wall", b"\x7fELF", mode=0o2755, gid=1000),
]


@pytest.mark.usefixtures("installed_sbx_is_current")
def test_real_owners_in_a_user_namespace(test_user: User, area: Path) -> None:
    work = make_user_dir(area, "work", test_user)
    tar = write_layer(area, "owned", OWNED)
    dest = work / "layer"
    proc = extract_as(test_user, [(tar, dest)], owners="real", userns=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [stats] = json.loads(proc.stdout)
    assert stats["files"] == len(OWNED)

    sub_uid, _ = subid_range(test_user, "/etc/subuid")
    sub_gid, _ = subid_range(test_user, "/etc/subgid")
    me = (test_user.uid, test_user.gid)
    mapped_1000 = (sub_uid + 999, sub_gid + 999)
    assert owner(dest / "etc/passwd") == me
    assert owner(dest / "etc") == me
    assert owner(dest / "home/user") == mapped_1000
    assert owner(dest / "home/user/notes") == mapped_1000
    assert owner(dest / "home/user/link") == mapped_1000
    assert owner(dest / "bin/su") == me and mode(dest / "bin/su") == 0o4755
    assert owner(dest / "bin/wall") == (test_user.uid, sub_gid + 999)
    assert mode(dest / "bin/wall") == 0o2755
    assert mode(dest / "home/user") == 0o700 and mode(dest / "home/user/notes") == 0o640


@pytest.mark.usefixtures("installed_sbx_is_current")
def test_xattr_owners_without_subordinate_ids(nosub_user: User, area: Path) -> None:
    work = make_user_dir(area, "work", nosub_user)
    tar = write_layer(area, "owned", OWNED)
    dest = work / "layer"
    proc = extract_as(nosub_user, [(tar, dest)], owners="xattr")
    assert proc.returncode == 0, proc.stdout + proc.stderr

    def override(p: str) -> bytes:
        return os.getxattr(dest / p, "user.containers.override_stat")

    for p in ("etc/passwd", "home/user", "home/user/notes", "home/user/link", "bin/su"):
        assert owner(dest / p) == (nosub_user.uid, nosub_user.gid), p
    assert override(".") == b"0:0:0755:dir"
    assert override("home/user") == b"1000:1000:0700:dir"
    assert override("home/user/notes") == b"1000:1000:0640:file"
    assert override("bin/su") == b"0:0:4755:file"
    assert override("bin/wall") == b"0:1000:2755:file"
    assert mode(dest / "bin/su") == 0o755  # no setuid bit on the host copy


@pytest.mark.usefixtures("installed_sbx_is_current")
def test_real_owners_without_a_namespace_fail_with_a_hint(nosub_user: User, area: Path) -> None:
    work = make_user_dir(area, "work", nosub_user)
    tar = write_layer(area, "owned", OWNED)
    proc = extract_as(nosub_user, [(tar, work / "layer")], owners="real")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    error = json.loads(proc.stdout)
    assert error["error"] == "MemberError" and "chown" in error["message"]
    assert 'owners="xattr"' in error["hint"]


# -- the whiteout formats, read by their real readers -------------------------------

BASE = [
    h.file("gone", b"g"),
    h.directory("dir"),
    h.file("dir/deleted", b"d"),
    h.file("dir/kept", b"k"),
    h.directory("opaque"),
    h.file("opaque/old", b"o"),
    h.directory("home/user", mode=0o755, uid=1000, gid=1000),
    h.file("bin/su", b"\x7fELF", mode=0o4755),
]
TOP = [
    h.file(".wh.gone"),
    h.directory("dir"),
    h.file("dir/.wh.deleted"),
    h.directory("opaque"),
    h.file("opaque/.wh..wh..opq"),
    h.file("opaque/new", b"n"),
]
SCRIPT_LIST = (
    'cd "$1" && for p in . dir opaque; do '
    'printf "%s:" "$p"; ls -A "$p" | tr "\\n" " "; echo; done; '
    'stat -c "%n %u:%g %a" home/user bin/su'
)


def _expected_listing() -> list[str]:
    return ["bin home dir opaque", "kept", "new"]


def _listing(out: str) -> tuple[list[str], list[str]]:
    lines = out.strip().splitlines()
    dirs = [" ".join(sorted(line.split(":", 1)[1].split())) for line in lines[:3]]
    return dirs, lines[3:]


@pytest.mark.usefixtures("installed_sbx_is_current")
def test_kernel_overlayfs_reads_xattr_whiteouts(test_user: User, area: Path) -> None:
    work = make_user_dir(area, "work", test_user)
    base, top = write_layer(area, "base", BASE), write_layer(area, "top", TOP)
    layers = [(base, work / "base"), (top, work / "top")]
    proc = extract_as(test_user, layers, owners="real", fmt="xattr", userns=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    merged = make_user_dir(area, "merged", test_user)
    mount = (
        f'mount -t overlay -o userxattr,lowerdir={work}/top:{work}/base overlay "$1" || exit 99; '
        + SCRIPT_LIST
    )
    proc = run_as(
        test_user, [*userns_argv(test_user, mount=True), "sh", "-c", mount, "sh", str(merged)]
    )
    if proc.returncode == 99:
        pytest.fail(
            f"rootless overlay mount failed (needs Linux >= 6.7 for xwhiteouts): {proc.stderr}"
        )
    assert proc.returncode == 0, proc.stderr
    dirs, stats = _listing(proc.stdout)
    assert dirs == [" ".join(sorted(e.split())) for e in _expected_listing()]
    # Seen from inside the namespace, ids are the image's own.
    assert stats == ["home/user 1000:1000 755", "bin/su 0:0 4755"]


@pytest.mark.usefixtures("installed_sbx_is_current")
def test_fuse_overlayfs_reads_aufs_whiteouts_and_override_stat(
    nosub_user: User, area: Path
) -> None:
    for tool in ("fuse-overlayfs", "fusermount3"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing: run scripts/setup.sh")
    work = make_user_dir(area, "work", nosub_user)
    base, top = write_layer(area, "base", BASE), write_layer(area, "top", TOP)
    layers = [(base, work / "base"), (top, work / "top")]
    proc = extract_as(nosub_user, layers, owners="xattr", fmt="aufs")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for d in ("merged", "upper", "wd"):
        make_user_dir(work, d, nosub_user)
    mount = (
        f"fuse-overlayfs -o lowerdir={work}/top:{work}/base,upperdir={work}/upper,"
        f'workdir={work}/wd "$1" || exit 99; '
        f'( {SCRIPT_LIST} ); rc=$?; fusermount3 -u "$1"; exit $rc'
    )
    proc = run_as(nosub_user, ["sh", "-c", mount, "sh", str(work / "merged")])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    dirs, stats = _listing(proc.stdout)
    assert dirs == [" ".join(sorted(e.split())) for e in _expected_listing()]
    # The owners and setuid bit come from user.containers.override_stat.
    assert stats == ["home/user 1000:1000 755", "bin/su 0:0 4755"]


REMOVE = textwrap.dedent(
    """
    import os, sys
    from sandbox.images.whiteout import remove_at
    parent, name = os.path.split(sys.argv[1])
    fd = os.open(parent, os.O_PATH | os.O_DIRECTORY)
    try:
        remove_at(fd, name)
    except PermissionError as exc:
        print("EACCES", exc.filename)
        sys.exit(4)
    """
)


@pytest.mark.usefixtures("installed_sbx_is_current")
def test_removing_a_layer_tree_outside_and_inside_the_namespace(
    test_user: User, area: Path
) -> None:
    """Why Store takes a `remove_tree`: the user can empty a 0o000 directory of its
    own (remove_at makes it u+rwx first), but not a directory that belongs to a
    subordinate id; root of the user namespace can."""
    work = make_user_dir(area, "work", test_user)
    tar = write_layer(
        area,
        "perms",
        [
            h.directory("locked", mode=0o000),
            h.file("locked/f", b"x"),
            h.directory("home/u", mode=0o755, uid=1000, gid=1000),
            h.file("home/u/f", b"x", uid=1000, gid=1000),
        ],
    )
    dest = work / "layer"
    proc = extract_as(test_user, [(tar, dest)], owners="real", userns=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert mode(dest / "locked") == 0o000

    remove = [sys.executable, "-c", REMOVE]
    proc = run_as(test_user, [*remove, str(dest / "locked")])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not (dest / "locked").exists()

    proc = run_as(test_user, [*remove, str(dest / "home")])
    assert proc.returncode == 4, proc.stdout + proc.stderr  # home/u is a subuid's

    proc = run_as(test_user, [*userns_argv(test_user), *remove, str(dest)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not dest.exists()
