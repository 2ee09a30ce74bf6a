"""secure_join never leaves the root, whatever the links inside say."""

import os

from sandbox.runtime.securejoin import secure_join


def test_plain_paths(tmp_path):
    assert secure_join(str(tmp_path), "/a/b") == str(tmp_path / "a" / "b")
    assert secure_join(str(tmp_path), "/") == str(tmp_path)


def test_dotdot_is_clamped_at_the_root(tmp_path):
    assert secure_join(str(tmp_path), "/../../etc/passwd") == str(tmp_path / "etc" / "passwd")


def test_absolute_symlink_is_resolved_in_the_root(tmp_path):
    (tmp_path / "data").symlink_to("/etc")
    assert secure_join(str(tmp_path), "/data/x") == str(tmp_path / "etc" / "x")


def test_relative_symlink_escaping_upwards_is_clamped(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "up").symlink_to("../../../../tmp")
    assert secure_join(str(tmp_path), "/d/up/f") == str(tmp_path / "tmp" / "f")


def test_symlink_loop_is_an_error(tmp_path):
    import pytest

    from sandbox.errors import SbxError

    os.symlink("b", tmp_path / "a")
    os.symlink("a", tmp_path / "b")
    with pytest.raises(SbxError, match="too many levels"):
        secure_join(str(tmp_path), "/a")
