"""Credential files: lookup order and key matching as podman does, and `sbx login`
storage (mode 0600 from creation, atomic replace, other entries kept)."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from sandbox.registry import credentials
from sandbox.registry.credentials import Credentials, candidate_keys, lookup, normalize_key
from sandbox.registry.errors import CredentialsError


def entry(user: str, password: str) -> dict[str, str]:
    return {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A clean HOME with XDG_RUNTIME_DIR and XDG_CONFIG_HOME inside it."""
    home = tmp_path / "home"
    (home / "run").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(home / "run"))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    return home


def write(path: Path, doc: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def runtime_auth(home: Path) -> Path:
    return home / "run" / "containers" / "auth.json"


def config_auth(home: Path) -> Path:
    return home / ".config" / "containers" / "auth.json"


def docker_config(home: Path) -> Path:
    return home / ".docker" / "config.json"


def test_files_in_podman_order(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert credentials.auth_files() == [runtime_auth(home), config_auth(home), docker_config(home)]
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "cfg"))
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(home / "override.json"))
    assert credentials.auth_files() == [
        home / "override.json",
        runtime_auth(home),
        home / "cfg" / "containers" / "auth.json",
        docker_config(home),
    ]


def test_first_file_with_a_match_wins(home: Path) -> None:
    write(
        docker_config(home), {"auths": {"quay.io": entry("docker", "d"), "r.io": entry("x", "y")}}
    )
    write(config_auth(home), {"auths": {"quay.io": entry("config", "c")}})
    write(runtime_auth(home), {"auths": {"quay.io": entry("runtime", "r")}})
    found = lookup("quay.io")
    assert found == Credentials("runtime", "r")
    assert found is not None and found.source == runtime_auth(home)
    runtime_auth(home).unlink()
    assert lookup("quay.io") == Credentials("config", "c")
    config_auth(home).unlink()
    assert lookup("quay.io") == Credentials("docker", "d")
    # A file without the registry does not stop the search.
    write(runtime_auth(home), {"auths": {"other.io": entry("o", "o")}})
    assert lookup("r.io") == Credentials("x", "y")
    assert lookup("nowhere.io") is None


def test_no_files(home: Path) -> None:
    assert lookup("quay.io", "a/b") is None


@pytest.mark.parametrize(
    "key",
    ["docker.io", "index.docker.io", "registry-1.docker.io", "https://index.docker.io/v1/",
     "http://index.docker.io/v1/", "https://docker.io"],
)  # fmt: skip
def test_docker_hub_keys(home: Path, key: str) -> None:
    write(docker_config(home), {"auths": {key: entry("hub", "pw")}})
    assert lookup("docker.io", "library/busybox") == Credentials("hub", "pw")
    assert lookup("registry-1.docker.io") == Credentials("hub", "pw")


def test_most_specific_key_first(home: Path) -> None:
    write(
        config_auth(home),
        {
            "auths": {
                "registry:5000": entry("host", "1"),
                "registry:5000/team": entry("team", "2"),
                "registry:5000/team/app": entry("app", "3"),
            }
        },
    )
    assert lookup("registry:5000", "team/app") == Credentials("app", "3")
    assert lookup("registry:5000", "team/app/sub") == Credentials("app", "3")
    assert lookup("registry:5000", "team/other") == Credentials("team", "2")
    assert lookup("registry:5000", "solo") == Credentials("host", "1")
    assert lookup("registry:5000") == Credentials("host", "1")
    assert lookup("registry") is None  # the port is part of the key


def test_url_keys_lose_scheme_and_path(home: Path) -> None:
    write(docker_config(home), {"auths": {"https://registry:5000/v2/": entry("u", "p")}})
    assert lookup("registry:5000", "a") == Credentials("u", "p")


def test_candidate_keys_and_normalize() -> None:
    assert candidate_keys("quay.io", "a/b/c") == [
        "quay.io/a/b/c",
        "quay.io/a/b",
        "quay.io/a",
        "quay.io",
    ]
    assert candidate_keys("index.docker.io") == ["docker.io"]
    assert normalize_key("https://index.docker.io/v1/") == "docker.io"
    assert normalize_key("quay.io/ns") == "quay.io/ns"


def test_password_with_colon(home: Path) -> None:
    write(config_auth(home), {"auths": {"q.io": entry("u", "a:b:c")}})
    assert lookup("q.io") == Credentials("u", "a:b:c")


def test_helper_only_is_an_error(home: Path) -> None:
    write(docker_config(home), {"auths": {}, "credHelpers": {"gcr.io": "gcloud"}})
    with pytest.raises(CredentialsError) as info:
        lookup("gcr.io", "proj/app")
    assert "docker-credential-gcloud" in info.value.message
    assert "not support" in info.value.message
    assert info.value.hint and "sbx login gcr.io" in info.value.hint
    # Other registries are simply anonymous.
    assert lookup("quay.io") is None


def test_creds_store_listed_registry_is_an_error(home: Path) -> None:
    # docker login with a credsStore writes an empty entry per registry.
    write(
        docker_config(home), {"auths": {"https://index.docker.io/v1/": {}}, "credsStore": "desktop"}
    )
    with pytest.raises(CredentialsError, match="docker-credential-desktop"):
        lookup("docker.io", "library/busybox")
    # A credsStore says nothing about registries it does not list.
    assert lookup("quay.io") is None


def test_auth_json_entry_beats_a_helper(home: Path) -> None:
    write(docker_config(home), {"auths": {}, "credHelpers": {"quay.io": "x"}})
    write(config_auth(home), {"auths": {"quay.io": entry("u", "p")}})
    assert lookup("quay.io") == Credentials("u", "p")


def test_identity_token_is_an_error(home: Path) -> None:
    write(docker_config(home), {"auths": {"my.azurecr.io": {"identitytoken": "xyz"}}})
    with pytest.raises(CredentialsError, match="identity token"):
        lookup("my.azurecr.io")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{not json", "cannot parse"),
        ("[]", "not a JSON object"),
        ('{"auths": []}', "'auths' is not an object"),
        ('{"auths": {"q.io": {"auth": "!!!"}}}', "not base64"),
        (
            '{"auths": {"q.io": {"auth": "' + base64.b64encode(b"nocolon").decode() + '"}}}',
            "not base64",
        ),
    ],
)
def test_malformed_files(home: Path, text: str, problem: str) -> None:
    path = config_auth(home)
    path.parent.mkdir(parents=True)
    path.write_text(text)
    with pytest.raises(CredentialsError) as info:
        lookup("q.io")
    assert problem in info.value.message
    assert str(path) in info.value.message


def test_empty_file_is_no_credentials(home: Path) -> None:
    config_auth(home).parent.mkdir(parents=True)
    config_auth(home).write_text("")
    assert lookup("q.io") is None


# --- save / remove ------------------------------------------------------------------
def test_save_location_follows_podman(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert credentials.auth_file() == runtime_auth(home)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(home / "missing"))
    assert credentials.auth_file() == config_auth(home)
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert credentials.auth_file() == config_auth(home)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "cfg"))
    assert credentials.auth_file() == home / "cfg" / "containers" / "auth.json"
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(home / "o.json"))
    assert credentials.auth_file() == home / "o.json"


def test_save_mode_0600_and_round_trip(home: Path) -> None:
    old_umask = os.umask(0)  # even with a permissive umask
    try:
        path = credentials.save("quay.io", "user", "pa:ss")
    finally:
        os.umask(old_umask)
    assert path == runtime_auth(home)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert lookup("quay.io") == Credentials("user", "pa:ss")
    assert json.loads(path.read_text())["auths"]["quay.io"] == entry("user", "pa:ss")


def test_save_preserves_other_entries_and_fields(home: Path) -> None:
    path = write(
        runtime_auth(home),
        {
            "auths": {"a.io": entry("a", "1"), "https://index.docker.io/v1/": entry("old", "x")},
            "credHelpers": {"gcr.io": "gcloud"},
            "custom": {"keep": True},
        },
    )
    os.chmod(path, 0o644)
    credentials.save("docker.io", "new", "y")
    doc = json.loads(path.read_text())
    # The legacy alias of the same registry is replaced, not duplicated.
    assert doc["auths"] == {"a.io": entry("a", "1"), "docker.io": entry("new", "y")}
    assert doc["credHelpers"] == {"gcr.io": "gcloud"}
    assert doc["custom"] == {"keep": True}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert lookup("docker.io", "library/busybox") == Credentials("new", "y")


def test_save_is_atomic(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(runtime_auth(home), {"auths": {"a.io": entry("a", "1")}})
    before = path.read_text()

    def fail_replace(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(credentials.os, "replace", fail_replace)
    with pytest.raises(CredentialsError, match="No space left"):
        credentials.save("b.io", "b", "2")
    # The old file is intact and no temporary file is left behind.
    assert path.read_text() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["auth.json"]


def test_save_writes_through_a_new_inode(home: Path) -> None:
    path = write(runtime_auth(home), {"auths": {}})
    inode = path.stat().st_ino
    credentials.save("b.io", "b", "2")
    assert path.stat().st_ino != inode  # renamed into place, never rewritten in place


def test_save_rejects_bad_usernames(home: Path) -> None:
    with pytest.raises(CredentialsError):
        credentials.save("q.io", "a:b", "p")
    with pytest.raises(CredentialsError):
        credentials.save("q.io", "", "p")


def test_remove_and_remove_all(home: Path) -> None:
    credentials.save("a.io", "a", "1")
    credentials.save("b.io/ns", "b", "2")
    credentials.save("docker.io", "c", "3")
    assert credentials.remove("a.io") is True
    assert credentials.remove("a.io") is False
    assert lookup("a.io") is None
    assert lookup("b.io", "ns/app") == Credentials("b", "2")
    assert credentials.remove("https://index.docker.io/v1/") is True
    assert lookup("docker.io") is None
    credentials.remove_all()
    assert json.loads(runtime_auth(home).read_text()) == {"auths": {}}
    assert lookup("b.io", "ns/app") is None


def test_remove_without_file(home: Path) -> None:
    assert credentials.remove("a.io") is False
    credentials.remove_all()
    assert not runtime_auth(home).exists()
