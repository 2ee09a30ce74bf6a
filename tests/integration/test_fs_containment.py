"""Containment: sbx-fs never follows a symlink that sits in a layer.

A lower layer is untrusted content (an image). Its symlinks are returned as symlinks,
to be resolved by the kernel in whatever root the reader has — in a container, the
container's — and sbx-fs's own path resolution (layer.py: openat with O_NOFOLLOW, one
component at a time) never goes through one, whether the link names `/`, `../..` or a
directory of the host that holds files of its own.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fs_rig import err, run_driver
from helpers import User, make_tmp_dir, remove_tree


@pytest.fixture
def host_dir(test_user: User) -> object:
    """A directory of the host with a secret in it, that the layers point at."""
    path = make_tmp_dir("sbx-fs-host-")
    (path / "secret").write_text("host data")
    (path / "secret").chmod(0o644)
    yield path
    remove_tree(path)


def test_links_in_a_lower_layer_are_returned_never_followed(
        test_user: User, workdir: Path, host_dir: Path) -> None:
    layers = {
        "l1": [
            {"path": "esc", "type": "symlink", "target": "/"},
            {"path": "up", "type": "symlink", "target": "../.."},
            {"path": "host", "type": "symlink", "target": str(host_dir)},
            # a symlink where a lower layer has a directory: it hides the directory,
            # it does not lead into the host directory
            {"path": "merged", "type": "symlink", "target": str(host_dir)},
        ],
        "l2": [{"path": "merged/inner", "data": "lower"}, {"path": "bin/x", "data": ""}],
    }
    # The upper layer already has a directory where l1 has the link: the merge goes
    # down to l1, meets a non-directory and stops there.
    upper = [{"path": "merged", "type": "dir"}, {"path": "merged/mine", "data": "upper"}]
    r = run_driver(test_user, workdir, [
        "mount()",
        "(os.readlink(m + '/esc'), os.readlink(m + '/up'), os.readlink(m + '/host'))",
        "sorted(os.listdir(m + '/merged'))",
        "os.stat(m + '/merged/secret')",
        "os.stat(m + '/merged/inner')",
        # create through the links in the container's view: chroot into the mount
        "def f():\n"
        "    os.chroot(m); os.chdir('/')\n"
        "    write('/esc/made-via-esc', 'x')\n"
        "    write('/up/up/made-via-up', 'y')\n"
        "    return (sorted(os.listdir('/esc')) == sorted(os.listdir('/')),"
        " os.path.exists('/host/secret'))\n"
        "in_child(f)",
        "(kind(u + '/made-via-esc'), kind(u + '/made-via-up'),"
        " os.path.exists('/made-via-esc'), os.path.exists('/made-via-up'))",
        # copy-up under a link path is refused, not done on the host
        "os.makedirs(m + '/merged/new/deeper'); kind(u + '/merged/new/deeper')",
        "umount()",
    ], layers, upper)
    assert r[1] == ["/", "../..", str(host_dir)]
    assert r[2] == ["mine"]
    assert r[3] == err("ENOENT")
    assert r[4] == err("ENOENT")
    # inside the chroot the host directory does not exist
    assert r[5] == [True, False]
    assert r[6] == ["file", "file", False, False]
    assert r[7] == "dir"
    assert sorted(p.name for p in host_dir.iterdir()) == ["secret"]


def test_a_symlinked_layer_directory_is_not_walked(
        test_user: User, workdir: Path, host_dir: Path) -> None:
    """A path through the merged tree that is a directory in one layer and a symlink
    to the host in another reaches the directory's entries only."""
    layers = {
        "l1": [{"path": "etc", "type": "dir"}, {"path": "etc/passwd", "data": "mine"}],
        "l2": [{"path": "etc", "type": "symlink", "target": str(host_dir)}],
    }
    r = run_driver(test_user, workdir, [
        "mount()",
        "sorted(os.listdir(m + '/etc'))",
        "os.stat(m + '/etc/secret')",
        "os.unlink(m + '/etc/passwd'); sorted(os.listdir(m + '/etc'))",
        "write(m + '/etc/secret', 'overwrite?'); read(m + '/etc/secret')",
        "umount()",
    ], layers)
    assert r[1] == ["passwd"]
    assert r[2] == err("ENOENT")
    assert r[3] == []
    assert r[4] == "overwrite?"
    assert (host_dir / "secret").read_text() == "host data"
