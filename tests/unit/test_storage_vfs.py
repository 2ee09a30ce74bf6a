"""The vfs driver's layer application: whiteouts, opaque dirs, links, type changes."""

from __future__ import annotations

import os
from pathlib import Path

from sandbox.storage.vfs import populate


def _layer(root: Path, files: dict[str, str | None]) -> str:
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if data is None:
            path.mkdir(exist_ok=True)
        else:
            path.write_text(data)
    return str(root)


def test_layers_apply_in_order_with_whiteouts_and_opaque_dirs(tmp_path: Path) -> None:
    low = _layer(tmp_path / "l1", {"a": "1", "d/x": "x", "d/y": "y", "keep/k": "k",
                                    "link-target": "t"})
    os.symlink("/etc", tmp_path / "l1" / "etcdir")
    os.link(tmp_path / "l1" / "link-target", tmp_path / "l1" / "hard")
    up = _layer(tmp_path / "l2", {"b": "2", "d/z": "z", "etcdir/file": "in a real dir"})
    os.mknod(tmp_path / "l2" / "a", 0o20000, os.makedev(0, 0))  # whiteout of a
    (tmp_path / "l2" / "keep" ).mkdir()
    (tmp_path / "l2" / "keep" / ".wh.k").write_text("")  # aufs-style whiteout
    os.setxattr(tmp_path / "l2" / "d", "user.overlay.opaque", b"y")
    dest = tmp_path / "root"
    populate([low, up], str(dest))
    assert sorted(os.listdir(dest)) == ["b", "d", "etcdir", "hard", "keep", "link-target"]
    assert sorted(os.listdir(dest / "d")) == ["z"]  # opaque: only the upper's entries
    assert os.listdir(dest / "keep") == []
    # The symlink became a directory: nothing was written through it to /etc.
    assert (dest / "etcdir").is_dir() and not (dest / "etcdir").is_symlink()
    assert (dest / "etcdir" / "file").read_text() == "in a real dir"
    assert not Path("/etc/file").exists()
    assert os.stat(dest / "hard").st_ino == os.stat(dest / "link-target").st_ino
    assert not any(n.startswith(".wh.") for _, _, fs in os.walk(dest) for n in fs)
