"""profiles/cache.py: a loaded profile comes back while its files are unchanged, and
not once a source changes, a file that shadows it appears, or a file is too new."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from sandbox.profiles import cache
from sandbox.profiles.load import Search

OLD = time.time() - 60


def _age(*paths: Path) -> None:
    for p in paths:
        os.utime(p, (OLD, OLD))


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    (tmp_path / "run").mkdir(mode=0o700)
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "sbx.toml").write_text('[profiles.dev]\nimage = "x:1"\nenv = { A = "1" }\n')
    _age(proj / "sbx.toml", proj)
    return proj


def load(proj: Path) -> object:
    return Search(str(proj)).load("dev")


def test_hit_then_miss_when_the_file_changes(project: Path) -> None:
    cwd = str(project)
    assert cache.get("dev", cwd) is None
    profile = load(project)
    cache.put("dev", cwd, profile)  # type: ignore[arg-type]
    hit = cache.get("dev", cwd)
    assert hit == profile and hit is not profile
    (project / "sbx.toml").write_text('[profiles.dev]\nimage = "x:2"\n')
    _age(project / "sbx.toml")
    assert cache.get("dev", cwd) is None


def test_a_shadowing_file_invalidates(project: Path) -> None:
    cwd = str(project)
    cache.put("dev", cwd, load(project))  # type: ignore[arg-type]
    assert cache.get("dev", cwd) is not None
    (project / ".sbx").mkdir()
    assert cache.get("dev", cwd) is None


def test_nothing_cached_while_a_file_is_new(project: Path) -> None:
    cwd = str(project)
    (project / "sbx.toml").write_text('[profiles.dev]\nimage = "x:3"\n')  # mtime: now
    cache.put("dev", cwd, load(project))  # type: ignore[arg-type]
    assert cache.get("dev", cwd) is None
