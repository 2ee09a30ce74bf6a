"""The profiles shipped with sbx: each loads, and profiles/ mirrors them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sandbox.profiles.load import BUNDLED_DIR, Search

REPO = Path(__file__).resolve().parents[2]
NAMES = ["debian", "debian-offline", "go", "node", "python", "rust"]


def bundled_search(tmp_path: Path) -> Search:
    return Search(str(tmp_path), str(tmp_path / "no-user-profiles"))


def test_the_bundled_set():
    assert sorted(p.stem for p in Path(BUNDLED_DIR).glob("*.toml")) == NAMES


def test_top_level_profiles_folder_links_to_the_bundled_files():
    top = REPO / "profiles"
    assert sorted(p.stem for p in top.glob("*.toml")) == NAMES
    for p in top.glob("*.toml"):
        assert p.is_symlink()
        assert os.path.samefile(p, Path(BUNDLED_DIR) / p.name)


@pytest.mark.parametrize("name", NAMES)
def test_each_loads_from_the_bundle(tmp_path, name):
    prof = bundled_search(tmp_path).load(name)
    assert prof.origin == "bundled"
    assert prof.description
    assert prof.data["shell"] == "/bin/bash"


@pytest.mark.parametrize("name", ["debian", "python", "node", "go", "rust"])
def test_registry_profiles_use_official_docker_hub_images(tmp_path, name):
    image = bundled_search(tmp_path).load(name).image
    assert isinstance(image, str) and image.startswith("docker.io/library/")
    assert "@" not in image  # sbx.lock pins digests; the bundle names tags


@pytest.mark.parametrize(("name", "volume"), [
    ("python", "pip-cache"), ("node", "npm-cache"), ("go", "go-mod"), ("go", "go-build"),
    ("rust", "cargo-registry")])
def test_caches_are_named_volumes(tmp_path, name, volume):
    assert volume in bundled_search(tmp_path).load(name).data["volumes"]


def test_offline_profile_bootstraps(tmp_path):
    prof = bundled_search(tmp_path).load("debian-offline")
    assert prof.bootstrap is not None
    assert prof.bootstrap["bootstrap"] == "debian:bookworm"
    assert "python3" in prof.bootstrap["packages"]
