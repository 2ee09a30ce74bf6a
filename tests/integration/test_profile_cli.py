"""The profile verbs as a user runs them: the installed sbx, as the unprivileged
test user, in a project folder of theirs (`sbx profile list/show/validate/init`,
`sbx lock`, `sbx generate kube`), with their exit codes and messages. `sbx lock`
resolves digests from the test registry (Debian's docker-registry on 127.0.0.1,
images pushed by skopeo: tests/image_rig.py) and from the user's own image store.
Nothing here starts a container; `sbx run PROFILE` is tested with the run half.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import SbxRunner, User, remove_tree
from image_rig import PushedImages
from test_images_pull import Box, make_box

pytest_plugins = ["registry_rig", "image_rig"]


@pytest.fixture
def env(workdir: Path, test_user: User) -> dict[str, str]:
    """The user's config directory inside the test's folder, so that profiles other
    tests (or the user) left in ~/.config/sbx/profiles can't change the results."""
    config = workdir / ".config"
    config.mkdir()
    test_user.chown(config)
    return {"XDG_CONFIG_HOME": str(config)}


@pytest.fixture
def box(sbx: SbxRunner) -> Iterator[Box]:
    """sbx with a store and config of its own (tests/integration/test_images_pull.py)."""
    b = make_box(sbx)
    yield b
    remove_tree(b.root)


def write_as(user: User, path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    user.chown(path.parent)
    path.write_text(text)
    user.chown(path)
    return path


def test_list_shows_project_user_and_bundled(sbx: SbxRunner, workdir: Path, env, test_user):
    write_as(test_user, workdir / "sbx.toml",
             '[profiles.dev]\nextends = "python"\ndescription = "the project\'s"\n')
    write_as(test_user, Path(env["XDG_CONFIG_HOME"]) / "sbx" / "profiles" / "mine.toml",
             'image = "docker.io/library/alpine:3.20"\n')
    result = sbx.run("profile", "list", cwd=workdir, env=env)
    assert result.returncode == 0, result.stderr
    rows = [line.split(None, 3) for line in result.stdout.splitlines()]
    assert rows[0] == ["NAME", "SOURCE", "IMAGE", "DESCRIPTION"]
    by_name = {r[0]: r for r in rows[1:]}
    assert by_name["dev"][1:] == ["sbx.toml", "docker.io/library/python:3.12-bookworm",
                                  "the project's"]
    assert by_name["mine"][2] == "docker.io/library/alpine:3.20"
    for bundled in ("debian", "debian-offline", "python", "node", "go", "rust"):
        assert by_name[bundled][1] == "(bundled)", bundled
    listed = json.loads(sbx.run("profile", "list", "--format", "json", cwd=workdir,
                                env=env).stdout)
    assert {r["name"] for r in listed} >= {"dev", "mine", "python"}


def test_show_merges_extends(sbx: SbxRunner, workdir: Path, env, test_user):
    write_as(test_user, workdir / "sbx.toml",
             '[profiles.dev]\nextends = "python"\nenv = { DEBUG = "1" }\n')
    result = sbx.run("profile", "show", "dev", cwd=workdir, env=env)
    assert result.returncode == 0, result.stderr
    shown = tomllib.loads(result.stdout)
    assert shown["env"]["DEBUG"] == "1"
    assert shown["env"]["PIP_CACHE_DIR"] == "/var/cache/sbx/pip"  # from the bundled python
    assert shown["volumes"] == {"pip-cache": "/var/cache/sbx/pip"}
    as_json = json.loads(sbx.run("profile", "show", "dev", "--format", "json", cwd=workdir,
                                 env=env).stdout)
    assert as_json["profile"] == shown


def test_validate_exit_codes_and_messages(sbx: SbxRunner, workdir: Path, env, test_user):
    write_as(test_user, workdir / "sbx.toml", '[profiles.ok]\nimage = "debian:bookworm"\n')
    good = sbx.run("profile", "validate", cwd=workdir, env=env)
    assert (good.returncode, good.stdout, good.stderr) == (0, "ok  ok\n", "")

    write_as(test_user, workdir / "sbx.toml",
             '[profiles.python]\nimage = "python:3.12"\n\n[profiles.python.limits]\n'
             'memory = 12\ncpu = 2\n')
    bad = sbx.run("profile", "validate", cwd=workdir, env=env)
    assert bad.returncode == 125
    assert bad.stdout == ""
    assert bad.stderr.splitlines() == [
        'sbx.toml:5: profiles.python.limits.memory: expected a size like "2g", got 12',
        'sbx.toml:6: profiles.python.limits.cpu: unknown key (did you mean "cpus"?)',
        "sbx: 1 of 1 profile(s) have problems",
    ]


def test_syntax_error_names_file_line_and_column(sbx: SbxRunner, workdir: Path, env,
                                                  test_user):
    write_as(test_user, workdir / "sbx.toml", '[profiles.dev]\nimage = debian\n')
    for args in (("profile", "validate"), ("profile", "show", "dev")):
        result = sbx.run(*args, cwd=workdir, env=env)
        assert result.returncode == 125
        assert "sbx.toml:2:9: Invalid value" in result.stderr
        assert "Traceback" not in result.stderr


def test_unknown_profile(sbx: SbxRunner, workdir: Path, env):
    result = sbx.run("profile", "show", "nope", cwd=workdir, env=env)
    assert result.returncode == 125
    assert result.stderr.startswith("sbx: no profile named 'nope' (looked in sbx.toml")


def test_extends_cycle(sbx: SbxRunner, workdir: Path, env, test_user):
    write_as(test_user, workdir / "sbx.toml",
             '[profiles.a]\nextends = "b"\n[profiles.b]\nextends = "a"\n')
    result = sbx.run("profile", "show", "a", cwd=workdir, env=env)
    assert result.returncode == 125
    assert "sbx: extends cycle: a (sbx.toml) -> b (sbx.toml) -> a (sbx.toml)" in result.stderr


def test_init_guesses_and_never_overwrites(sbx: SbxRunner, workdir: Path, env, test_user):
    write_as(test_user, workdir / "requirements.txt", "flask\n")
    result = sbx.run("profile", "init", cwd=workdir, env=env)
    assert result.returncode == 0, result.stderr
    written = workdir / "sbx.toml"
    assert written.stat().st_uid == test_user.uid
    data = tomllib.loads(written.read_text())
    assert data["profiles"]["dev"]["extends"] == "python"
    assert data["profiles"]["dev"]["inputs"] == ["requirements.txt"]
    assert data["profiles"]["test"]["command"] == ["python", "-m", "pytest"]
    assert sbx.run("profile", "validate", cwd=workdir, env=env).returncode == 0

    before = written.read_text()
    again = sbx.run("profile", "init", cwd=workdir, env=env)
    assert again.returncode == 125
    assert "sbx: sbx.toml already exists here" in again.stderr
    assert written.read_text() == before
    assert sbx.run("profile", "init", "--force", cwd=workdir, env=env).returncode == 0


def test_init_in_a_folder_the_user_cannot_write(sbx: SbxRunner, workdir: Path, env):
    locked = workdir / "ro"
    locked.mkdir(mode=0o755)  # owned by root
    result = sbx.run("profile", "init", cwd=locked, env=env)
    assert result.returncode == 125
    assert "can't write" in result.stderr and "Permission denied" in result.stderr


def test_generate_kube(sbx: SbxRunner, workdir: Path, env, test_user):
    write_as(test_user, workdir / "sbx.toml",
             '[profiles.test]\nextends = "python"\ncommand = ["python", "-m", "pytest"]\n'
             'limits = { memory = "1g", cpus = 2 }\n')
    result = sbx.run("generate", "kube", "test", "--format", "json", cwd=workdir, env=env)
    assert result.returncode == 0, result.stderr
    pod = json.loads(result.stdout)
    container = pod["spec"]["containers"][0]
    assert container["args"] == ["python", "-m", "pytest"]
    assert container["resources"]["limits"] == {"memory": "1Gi", "cpu": "2"}
    assert "not pinned by a digest" in result.stderr


# --- sbx lock, against a real registry -------------------------------------------------


def lock_project(box: Box, workdir: Path, test_user: User, image: str) -> dict[str, str]:
    write_as(test_user, workdir / "sbx.toml",
             f'[profiles.dev]\nimage = "{image}"\nsetup = ["true"]\n')
    return box.env


def read_lock(workdir: Path) -> dict:
    return tomllib.loads((workdir / "sbx.lock").read_text())["profiles"]


def test_lock_asks_the_registry_for_the_tags_digest(box: Box, workdir: Path, test_user: User,
                                                     pushed_images: PushedImages):
    multi = pushed_images.multi
    env = lock_project(box, workdir, test_user, multi.ref)
    result = box.sbx.run("lock", cwd=workdir, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"dev: {multi.ref}@{multi.digest}\n"
    entry = read_lock(workdir)["dev"]
    assert entry["digest"] == multi.digest  # the index: every platform pinned
    assert entry["setup"].startswith("sha256:")
    assert (workdir / "sbx.lock").stat().st_uid == test_user.uid

    check = box.sbx.run("lock", "--check", cwd=workdir, env=env)
    assert (check.returncode, check.stdout) == (0, "sbx.lock is up to date\n")
    write_as(test_user, workdir / "sbx.toml",
             f'[profiles.dev]\nimage = "{pushed_images.busybox.ref}"\nsetup = ["true"]\n')
    check = box.sbx.run("lock", "--check", cwd=workdir, env=env)
    assert check.returncode == 125
    assert f"profile dev: image is '{pushed_images.busybox.ref}', sbx.lock has " \
        f"'{multi.ref}'" in check.stderr

    kube = box.sbx.run("generate", "kube", "dev", "--format", "json", cwd=workdir, env=env)
    # The lock no longer agrees with the profile: the tag, and a note saying so.
    assert json.loads(kube.stdout)["spec"]["containers"][0]["image"] == \
        pushed_images.busybox.ref
    box.sbx.run("lock", cwd=workdir, env=env, check=True)
    kube = box.sbx.run("generate", "kube", "dev", "--format", "json", cwd=workdir, env=env)
    assert json.loads(kube.stdout)["spec"]["containers"][0]["image"] == \
        f"{pushed_images.busybox.ref}@{pushed_images.busybox.digest}"


def test_lock_prefers_the_image_in_the_local_store(box: Box, workdir: Path, test_user: User,
                                                    pushed_images: PushedImages):
    multi = pushed_images.multi
    env = lock_project(box, workdir, test_user, multi.ref)
    box.run("pull", multi.ref)
    box.sbx.run("lock", cwd=workdir, env=env, check=True)
    local = read_lock(workdir)["dev"]["digest"]
    # What was pulled: this platform's manifest, not the index.
    assert local in multi.platform_digests.values()
    box.sbx.run("lock", "--refresh", cwd=workdir, env=env, check=True)
    assert read_lock(workdir)["dev"]["digest"] == multi.digest


def test_lock_a_missing_tag(box: Box, workdir: Path, test_user: User,
                            pushed_images: PushedImages):
    env = lock_project(box, workdir, test_user, f"{pushed_images.host}/sbx/nothing:1")
    result = box.sbx.run("lock", cwd=workdir, env=env)
    assert result.returncode == 125
    assert f"sbx: {pushed_images.host}/sbx/nothing:1: no such image in " in result.stderr
    assert not (workdir / "sbx.lock").exists()
