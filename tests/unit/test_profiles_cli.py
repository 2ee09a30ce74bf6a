"""The profile verbs through click, in-process: sbx profile list/show/validate/init,
sbx lock (with a fake resolver) and sbx generate kube. tests/integration/
test_profile_cli.py runs the installed command as the unprivileged user."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from sandbox.cli import cli

DIGEST = "sha256:" + "d" * 64


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    proj = tmp_path / "proj"
    proj.mkdir()
    monkeypatch.chdir(proj)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("HOME", str(tmp_path))
    return proj


def sbx(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_list_table_and_json(project):
    (project / "sbx.toml").write_text('[profiles.python]\nextends = "python"\n'
                                      'description = "mine"\n')
    result = sbx("profile", "list")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAME", "SOURCE", "IMAGE", "DESCRIPTION"]
    assert lines[1].split()[:3] == ["python", "sbx.toml", "docker.io/library/python:3.12-bookworm"]
    assert any(line.startswith("debian-offline ") and "(bundled)" in line for line in lines)
    assert not any("shadowed" in line for line in lines)
    assert "(shadowed)" in sbx("profile", "list", "--all").stdout
    rows = json.loads(sbx("profile", "list", "--format", "json").stdout)
    first = rows[0]
    assert first["name"] == "python" and first["origin"] == "project"
    assert first["description"] == "mine" and first["error"] is None


def test_list_shows_broken_profiles_and_goes_on(project):
    (project / "sbx.toml").write_text('[profiles.bad]\nimage = "debian"\nnetwork = 3\n')
    result = sbx("profile", "list")
    assert result.exit_code == 0
    assert "!error" in result.stdout
    assert "sbx.toml:3: profiles.bad.network" in result.stderr


def test_show_toml_and_json(project):
    (project / "sbx.toml").write_text('[profiles.dev]\nextends = "python"\nsetup = ["x"]\n')
    result = sbx("profile", "show", "dev")
    assert result.exit_code == 0
    data = tomllib.loads(result.stdout)
    assert data["image"] == "docker.io/library/python:3.12-bookworm"
    assert data["setup"] == ["x"] and "extends" not in data
    assert result.stdout.startswith("# profile dev, merged from:\n#   dev: ")
    shown = json.loads(sbx("profile", "show", "dev", "--format", "json").stdout)
    assert shown["name"] == "dev" and shown["profile"] == data
    assert len(shown["sources"]) == 2


def test_show_unknown_profile(project):
    result = sbx("profile", "show", "nope")
    assert result.exit_code == 125
    assert "sbx: no profile named 'nope'" in result.stderr
    assert "hint: `sbx profile list`" in result.stderr


def test_validate_ok_and_problems(project):
    (project / "sbx.toml").write_text(
        '[profiles.good]\nimage = "debian"\n\n[profiles.bad]\nimage = "debian"\n'
        'limits = { memory = 12 }\nimgae = "x"\n')
    result = sbx("profile", "validate")
    assert result.exit_code == 125
    assert "ok  good" in result.stdout
    assert result.stderr.splitlines() == [
        'sbx.toml:6: profiles.bad.limits.memory: expected a size like "2g", got 12',
        'sbx.toml:7: profiles.bad.imgae: unknown key (did you mean "image"?)',
        "sbx: 1 of 2 profile(s) have problems",
    ]
    assert sbx("profile", "validate", "good").exit_code == 0
    assert sbx("profile", "validate", "python").exit_code == 0  # bundled, by name


def test_validate_nothing_here(project):
    result = sbx("profile", "validate")
    assert result.exit_code == 125
    assert "no profiles here to validate" in result.stderr


def test_validate_a_file(project):
    (project / "ci.toml").write_text('image = "debian"\nuser = "Nobody Here"\n')
    result = sbx("profile", "validate", "ci.toml")
    assert result.exit_code == 125
    assert result.stderr.startswith('ci.toml:2: user: expected "keep-id"')


def test_init_writes_and_refuses_to_overwrite(project):
    (project / "go.mod").write_text("module x\n")
    result = sbx("profile", "init")
    assert result.exit_code == 0, result.stderr
    assert "profile dev (extends go)" in result.stdout
    text = (project / "sbx.toml").read_text()
    assert 'extends = "go"' in text
    again = sbx("profile", "init")
    assert again.exit_code == 125
    assert "sbx.toml already exists" in again.stderr and "--force" in again.stderr
    assert (project / "sbx.toml").read_text() == text
    (project / "Cargo.toml").unlink(missing_ok=True)
    (project / "go.mod").unlink()
    (project / "package.json").write_text("{}")
    assert sbx("profile", "init", "--force").exit_code == 0
    assert 'extends = "node"' in (project / "sbx.toml").read_text()


def test_lock_and_check(project, monkeypatch):
    import sandbox.cli.lock as cli_lock

    asked: list[str] = []

    def fake(tls_verify: bool, refresh: bool):
        def resolve(ref: str) -> str:
            asked.append(ref)
            return DIGEST
        return resolve

    monkeypatch.setattr(cli_lock, "store_resolver", fake)
    (project / "sbx.toml").write_text('[profiles.dev]\nextends = "python"\n'
                                      '[profiles.off]\nextends = "debian-offline"\n')
    result = sbx("lock")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[0] == (
        f"dev: docker.io/library/python:3.12-bookworm@{DIGEST}")
    assert result.stdout.splitlines()[1].startswith("off: bootstrap sha256:")
    assert asked == ["docker.io/library/python:3.12-bookworm"]
    lock = tomllib.loads((project / "sbx.lock").read_text())
    assert lock["profiles"]["dev"]["digest"] == DIGEST
    assert sbx("lock", "--check").exit_code == 0
    (project / "sbx.toml").write_text('[profiles.dev]\nimage = "debian:trixie"\n'
                                      '[profiles.off]\nextends = "debian-offline"\n')
    check = sbx("lock", "--check")
    assert check.exit_code == 125
    assert "profile dev: image is 'debian:trixie'" in check.stderr
    assert sbx("lock", "rust").exit_code == 0  # a bundled one, by name; others kept
    lock = tomllib.loads((project / "sbx.lock").read_text())
    assert set(lock["profiles"]) == {"dev", "off", "rust"}


def test_lock_nothing_to_lock(project):
    result = sbx("lock")
    assert result.exit_code == 125
    assert "no profiles in this project to lock" in result.stderr


def test_generate_kube_uses_the_lock(project):
    (project / "sbx.toml").write_text('[profiles.dev]\nextends = "python"\n'
                                      'command = ["pytest"]\n')
    (project / "sbx.lock").write_text(
        f'version = 1\n[profiles.dev]\nimage = "docker.io/library/python:3.12-bookworm"\n'
        f'digest = "{DIGEST}"\n')
    result = sbx("generate", "kube", "dev")
    assert result.exit_code == 0, result.stderr
    assert f"image: docker.io/library/python:3.12-bookworm@{DIGEST}" in result.stdout
    pod = json.loads(sbx("generate", "kube", "dev", "--format", "json").stdout)
    assert pod["kind"] == "Pod" and pod["spec"]["containers"][0]["args"] == ["pytest"]


def test_generate_kube_refuses_bootstrap(project):
    result = sbx("generate", "kube", "debian-offline")
    assert result.exit_code == 125
    assert "needs an image a registry serves" in result.stderr


class _Record:
    manifest_digest = "sha256:" + "e" * 64


class _Client:
    def __init__(self, found: bool) -> None:
        self.found = found
        self.asked: list[tuple[str, str]] = []

    def head_manifest(self, repository: str, reference: str):
        from sandbox.registry.media import Descriptor

        self.asked.append((repository, reference))
        if not self.found:
            return None
        return Descriptor("application/vnd.oci.image.index.v1+json", DIGEST, 100)


def _wire(monkeypatch, local: bool, client: _Client) -> list[tuple]:
    import sandbox.cli.images
    import sandbox.images.pull
    from sandbox.images.store import ImageNotFound

    calls: list[tuple] = []

    class Ctx:
        store = object()

    def find_local(store, text):
        calls.append(("local", text))
        if not local:
            raise ImageNotFound(text)
        return _Record()

    def connect(registry, repository, tls_verify=True):
        calls.append(("connect", registry, repository, tls_verify))
        return client

    monkeypatch.setattr(sandbox.cli.images, "ImageContext", Ctx)
    monkeypatch.setattr(sandbox.images.pull, "find_local", find_local)
    monkeypatch.setattr(sandbox.images.pull, "connect", connect)
    return calls


def test_resolver_prefers_the_local_store(monkeypatch):
    from sandbox.cli.lock import store_resolver

    client = _Client(found=True)
    calls = _wire(monkeypatch, local=True, client=client)
    assert store_resolver(True, refresh=False)("python:3.12") == _Record.manifest_digest
    assert calls == [("local", "python:3.12")]


def test_resolver_asks_the_registry(monkeypatch):
    from sandbox.cli.lock import store_resolver

    client = _Client(found=True)
    calls = _wire(monkeypatch, local=False, client=client)
    assert store_resolver(False, refresh=False)("python:3.12") == DIGEST
    assert calls[1] == ("connect", "docker.io", "library/python", False)
    assert client.asked == [("library/python", "3.12")]
    calls.clear()
    _wire(monkeypatch, local=True, client=client)
    assert store_resolver(True, refresh=True)("python:3.12") == DIGEST  # --refresh


def test_resolver_unknown_tag(monkeypatch):
    from sandbox.cli.lock import store_resolver
    from sandbox.errors import SbxError

    _wire(monkeypatch, local=False, client=_Client(found=False))
    with pytest.raises(SbxError, match=r"python:9: no such image in docker\.io"):
        store_resolver(True, refresh=False)("python:9")
