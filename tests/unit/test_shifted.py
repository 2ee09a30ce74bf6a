"""storage/shifted.py: owners rewritten for another id map, set-id bits kept, hard
links kept, copies reused, and copies of layers that are gone pruned. Runs as root
here (CI runs the suite as root), so lchown works without a user namespace; the
integration tests run the same code in one (test_storage_drivers.py, keep-id)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from sandbox.runtime.spec import IdMapping
from sandbox.storage import shifted

# keep-id for uid 1000 under the default map, as idmap.shift computes it: container
# ids 0..999 move up by one, 1000 (the user) becomes 0, 1001.. stay.
UID_SHIFT = [IdMapping(0, 1, 1000), IdMapping(1000, 0, 1), IdMapping(1001, 1001, 64536)]

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="lchown to other ids needs root "
                                "(CI runs the unit tests as root)")


def test_translate() -> None:
    assert shifted._translate(UID_SHIFT, 0) == 1
    assert shifted._translate(UID_SHIFT, 1000) == 0
    assert shifted._translate(UID_SHIFT, 5000) == 5000
    assert shifted._translate(UID_SHIFT, 70000) == shifted.OVERFLOW_ID
    assert shifted.map_key(UID_SHIFT, UID_SHIFT) != shifted.map_key(UID_SHIFT, [])


@needs_root
def test_copy_shifts_owners_and_keeps_setid_and_links(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    layer = tmp_path / "layers" / "ab12" / "diff"
    (layer / "bin").mkdir(parents=True)
    su = layer / "bin" / "su"
    su.write_text("x")
    os.chown(su, 0, 0)
    os.chmod(su, 0o4755)
    os.link(su, layer / "bin" / "su-link")
    (layer / "home").mkdir()
    os.chown(layer / "home", 1000, 1000)
    os.symlink("bin/su", layer / "sym")
    os.lchown(layer / "sym", 0, 0)
    calls: list[int] = []

    def here(fn: object) -> None:
        calls.append(1)
        fn()  # type: ignore[operator]

    [copy] = shifted.shifted_dirs([str(layer)], UID_SHIFT, UID_SHIFT, here)
    c = Path(copy)
    st = os.lstat(c / "bin" / "su")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1, 1, 0o4755)
    assert os.lstat(c / "bin" / "su-link").st_ino == st.st_ino
    assert (os.lstat(c / "home").st_uid, os.lstat(c / "sym").st_uid) == (0, 1)
    assert (su.stat().st_uid, su.stat().st_mode & 0o7777) == (0, 0o4755)  # source intact
    # A second run reuses the copy; pruning with the layer gone removes it.
    assert shifted.shifted_dirs([str(layer)], UID_SHIFT, UID_SHIFT, here) == [copy]
    assert len(calls) == 1
    assert shifted.prune({"ab12"}, here) == 0 and c.is_dir()
    assert shifted.prune(set(), here) == 1 and not c.exists()
