"""The volume store, filters and mount resolution, and the runtime's copy-up, on a
temporary XDG_DATA_HOME (no containers run here)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from sandbox.errors import UsageError
from sandbox.runtime import rootfs
from sandbox.runtime import syscalls as sc
from sandbox.runtime.spec import Mount
from sandbox.volumes import attach, filters
from sandbox.volumes.store import (
    NoSuchVolume,
    VolumeError,
    VolumeExists,
    VolumeStore,
    users_of,
)


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> VolumeStore:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    return VolumeStore()


def test_create_load_list_remove(store: VolumeStore, tmp_path: Path) -> None:
    vol, made = store.create("cache", {"a": "b"})
    assert made and vol.path == str(tmp_path / "data/sbx/volumes/cache/_data")
    assert os.path.isdir(vol.path) and vol.needs_copy_up
    meta = json.loads((tmp_path / "data/sbx/volumes/cache/volume.json").read_text())
    assert meta["labels"] == {"a": "b"} and meta["driver"] == "local"
    assert not meta["anonymous"]
    with pytest.raises(VolumeExists):
        store.create("cache")
    same, made = store.create("cache", exist_ok=True)
    assert not made and same.name == "cache"
    assert store.ensure("other").endswith("/volumes/other/_data")
    anon, _ = store.create(anonymous=True)
    assert len(anon.name) == 64 and anon.inspect()["Anonymous"] is True
    assert store.names() == sorted(["cache", "other", anon.name])
    store.remove("cache", lambda p: __import__("shutil").rmtree(p))
    with pytest.raises(NoSuchVolume):
        store.get("cache")
    with pytest.raises(NoSuchVolume):
        store.remove("cache", lambda p: None)
    assert store.leftovers() == []


@pytest.mark.parametrize("name", ["", ".", "..", "../x", "a/b", "-x", "_x", ".hidden",
                                  "x" * 201, "sp ace"])
def test_bad_names_never_become_paths(store: VolumeStore, name: str) -> None:
    with pytest.raises(VolumeError, match="invalid volume name"):
        store.create(name)
    with pytest.raises(VolumeError):
        store.load(name)


def test_create_race_loser_finds_the_winner(store: VolumeStore, monkeypatch) -> None:
    # The winner renames its volume into place between our look and our rename.
    real_load = store.load
    calls = []

    def load(name: str):
        calls.append(name)
        if len(calls) == 1:
            VolumeStore().create(name)  # the other process
            return None
        return real_load(name)

    monkeypatch.setattr(store, "load", load)
    with pytest.raises(VolumeExists):
        store.create("raced")
    calls.clear()
    monkeypatch.setattr(store, "load", load)
    vol, made = store.create("raced2", exist_ok=True)
    assert vol.name == "raced2" and not made
    assert store.leftovers() == []  # the loser's .tmp- directory is gone


def test_users_of_reads_container_records() -> None:
    ctrs = [SimpleNamespace(id="a" * 64, config={"named_volumes": [
                {"name": "v", "destination": "/v", "anonymous": False}]}),
            SimpleNamespace(id="b" * 64, config={}),
            SimpleNamespace(id="c" * 64, config={"named_volumes": [{"name": "v"}, "junk"]})]
    assert users_of(ctrs) == {"v": ["a" * 64, "c" * 64]}


def test_filters(store: VolumeStore) -> None:
    a, _ = store.create("alpha", {"team": "web", "tier": ""})
    b, _ = store.create("beta")
    f = filters.parse(["label=team=web"])
    assert filters.matches(a, f, set()) and not filters.matches(b, f, set())
    assert filters.matches(a, filters.parse(["label=tier"]), set())
    assert filters.matches(b, filters.parse(["name=^be", "name=zz"]), set())  # ORed
    assert not filters.matches(a, filters.parse(["name=^al", "driver=nfs"]), set())
    dangling = filters.parse(["dangling=true"])
    assert filters.matches(a, dangling, {"beta"}) and not filters.matches(b, dangling, {"beta"})
    for bad in ("color=red", "name", "dangling=maybe", "name=("):
        with pytest.raises(UsageError):
            filters.parse([bad])


def test_anonymous_volumes_for_image_skip_paths_already_mounted() -> None:
    given = [Mount("/data", "volume", "cache", []), Mount("/src", "bind", "/h", ["rbind"])]
    made = attach.anonymous_for_image(given, ["/data", "/vol", "var/lib/x/", "/tmp"],
                                      ["/tmp:size=1m"])
    assert [(m.destination, m.type, m.source) for m in made] == [
        ("/var/lib/x", "volume", ""), ("/vol", "volume", "")]
    attach.check_destinations(given + made)
    with pytest.raises(UsageError, match="duplicate mount destination /data"):
        attach.check_destinations([*given, Mount("/data/", "bind", "/x", [])])


def test_resolve_makes_bind_mounts_and_records(store: VolumeStore) -> None:
    out = attach.resolve([Mount("/c", "volume", "cache", ["ro"]),
                          Mount("/a", "volume", "", []),
                          Mount("/n", "volume", "cache2", ["nocopy"]),
                          Mount("/h", "bind", "/host", ["rbind"])], store)
    c, _a, n, h = out.mounts
    assert (c.type, c.source, c.options[:4]) == (
        "bind", store.get("cache").path, ["rbind", "nosuid", "nodev", "ro"])
    assert c.options[-1] == rootfs.COPY_UP_OPTION + os.path.join(
        os.path.dirname(c.source), "copy-up")
    assert not any(o.startswith(rootfs.COPY_UP_OPTION) for o in n.options)
    assert h.source == "/host"
    assert [r["anonymous"] for r in out.records] == [False, True, False]
    assert sorted(out.created) == sorted(["cache", out.records[1]["name"], "cache2"])
    # A second resolve reuses named volumes and makes a new anonymous one.
    again = attach.resolve([Mount("/c", "volume", "cache", []), Mount("/a", "volume", "", [])],
                           store)
    assert len(again.created) == 1 and again.records[1]["name"] != out.records[1]["name"]


def test_resolve_undoes_what_it_made_on_failure(store: VolumeStore) -> None:
    store.create("exists")
    with pytest.raises(VolumeError):
        attach.resolve([Mount("/a", "volume", "newone", []),
                        Mount("/b", "volume", "exists", []),
                        Mount("/c", "volume", "no/t valid", [])], store)
    assert store.names() == ["exists"]


# -- the runtime's copy-up ---------------------------------------------------------------
def _volume(tmp_path: Path) -> tuple[Path, Path, Path]:
    root = tmp_path / "root"
    (root / "data" / "sub").mkdir(parents=True)
    (root / "data" / "sub" / "f").write_text("hello")
    (root / "data" / "link").symlink_to("/etc/passwd")
    os.chmod(root / "data", 0o750)
    vol = tmp_path / "vol"
    (vol / "_data").mkdir(parents=True)
    marker = vol / "copy-up"
    marker.touch()
    return root, vol / "_data", marker


def _bind(root: Path, dest: str, data: Path, marker: Path) -> rootfs.Executor:
    ex = rootfs.Executor(str(root), sc.RecordingSyscalls(), (os.getuid(), os.getgid()))
    ex.run(rootfs.Step("bind", dest, source=str(data),
                       options=("rbind", rootfs.COPY_UP_OPTION + str(marker))))
    return ex


def test_copy_up_fills_a_new_volume_once(tmp_path: Path) -> None:
    root, data, marker = _volume(tmp_path)
    _bind(root, "/data", data, marker)
    assert (data / "sub" / "f").read_text() == "hello"
    assert os.readlink(data / "link") == "/etc/passwd"  # links copied, not followed
    assert (os.stat(data).st_mode & 0o777) == 0o750  # the image directory's mode
    assert not marker.exists()
    # Mounted again: nothing is copied (the user may have emptied it on purpose).
    (data / "sub" / "f").unlink()
    _bind(root, "/data", data, marker)
    assert not (data / "sub" / "f").exists()


def test_copy_up_into_a_path_the_image_lacks(tmp_path: Path) -> None:
    root, data, marker = _volume(tmp_path)
    _bind(root, "/new/dir", data, marker)
    assert os.listdir(data) == [] and not marker.exists()


def test_copy_up_never_leaves_the_root(tmp_path: Path) -> None:
    root, data, marker = _volume(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("host")
    (root / "escape").symlink_to(str(outside))  # absolute: resolved inside the root
    _bind(root, "/escape", data, marker)
    assert os.listdir(data) == []
