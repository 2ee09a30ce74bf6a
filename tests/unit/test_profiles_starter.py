"""`sbx profile init`'s starter sbx.toml (sandbox/profiles/starter.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox.profiles.load import Search
from sandbox.profiles.starter import detect, starter


@pytest.mark.parametrize(("files", "base", "test_cmd"), [
    (["pyproject.toml"], "python", ["python", "-m", "pytest"]),
    (["requirements.txt"], "python", ["python", "-m", "pytest"]),
    (["package.json"], "node", ["npm", "test"]),
    (["go.mod"], "go", ["go", "test", "./..."]),
    (["Cargo.toml"], "rust", ["cargo", "test"]),
    ([], "debian", None),
])
def test_guess_and_load(tmp_path: Path, files, base, test_cmd):
    for f in files:
        (tmp_path / f).write_text("")
    text, guessed = starter(str(tmp_path))
    assert guessed == base
    (tmp_path / "sbx.toml").write_text(text)
    s = Search(str(tmp_path), str(tmp_path / "u"))
    dev = s.load("dev")
    assert dev.chain == ["dev", base]
    if test_cmd:
        assert s.load("test").data["command"] == test_cmd
    if files == ["requirements.txt"]:
        assert dev.data["setup"] == ["pip install -r requirements.txt"]
        assert dev.data["inputs"] == ["requirements.txt"]


def test_several_languages(tmp_path: Path):
    (tmp_path / "go.mod").write_text("")
    (tmp_path / "package.json").write_text("")
    assert detect(str(tmp_path)) == ["node", "go"]
    text, base = starter(str(tmp_path))
    assert base == "node"
    assert "# Found files of node, go: started from node." in text
