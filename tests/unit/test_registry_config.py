"""registries.conf: which registries podman's configuration marks insecure."""

from pathlib import Path

import pytest

from sandbox.registry.config import insecure
from sandbox.registry.errors import RegistryError


def test_v2_location_and_prefix(tmp_path: Path) -> None:
    conf = tmp_path / "registries.conf"
    conf.write_text('[[registry]]\nlocation = "reg.lan:5000"\ninsecure = true\n'
                    '[[registry]]\nlocation = "secure.lan"\n'
                    '[[registry]]\nprefix = "*.corp.example"\nlocation = "x"\ninsecure = true\n')
    files = [str(conf)]
    assert insecure("reg.lan:5000", files)
    assert not insecure("reg.lan", files)
    assert not insecure("secure.lan", files)
    assert insecure("a.corp.example", files)
    assert not insecure("docker.io", files)


def test_v1_insecure_list(tmp_path: Path) -> None:
    conf = tmp_path / "registries.conf"
    conf.write_text('[registries.insecure]\nregistries = ["old.lan:5000"]\n')
    assert insecure("old.lan:5000", [str(conf)])
    assert not insecure("other.lan", [str(conf)])


def test_first_file_found_is_the_configuration(tmp_path: Path) -> None:
    user = tmp_path / "user.conf"
    system = tmp_path / "system.conf"
    user.write_text('[[registry]]\nlocation = "a.lan"\n')
    system.write_text('[[registry]]\nlocation = "b.lan"\ninsecure = true\n')
    assert not insecure("b.lan", [str(user), str(system)])
    assert insecure("b.lan", [str(tmp_path / "missing.conf"), str(system)])


def test_broken_file_names_itself(tmp_path: Path) -> None:
    conf = tmp_path / "registries.conf"
    conf.write_text("[[registry]\n")
    with pytest.raises(RegistryError, match=str(conf)):
        insecure("x", [str(conf)])
