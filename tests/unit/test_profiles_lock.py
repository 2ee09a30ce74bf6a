"""sbx.lock: write, read, and check against profiles: sandbox/profiles/lock.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox.profiles.errors import ProfileError
from sandbox.profiles.lock import (
    Lock,
    check_lock,
    lock_path,
    lock_profiles,
    locked_reference,
    make_entry,
    parse_lock,
    read_lock,
)
from sandbox.profiles.model import Profile, bootstrap_key

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
IMAGE = "docker.io/library/python:3.12-bookworm"


def prof(name: str = "py", **data) -> Profile:
    data.setdefault("image", IMAGE)
    return Profile(name, data, ["/x/sbx.toml"], "project")


class Resolver:
    def __init__(self, digest: str = D1) -> None:
        self.digest = digest
        self.asked: list[str] = []

    def __call__(self, ref: str) -> str:
        self.asked.append(ref)
        return self.digest


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "requirements.txt").write_text("flask\n")
    return tmp_path


def test_write_read_roundtrip(project):
    setup = prof(setup=["pip install -r requirements.txt"], inputs=["requirements.txt"])
    boot = prof("off", image={"bootstrap": "debian:bookworm", "packages": ["python3"]},
                setup=["true"])
    lock = lock_profiles([setup, boot, prof("plain")], str(project), Resolver())
    path = lock.write(lock_path(str(project)))
    assert path == str(project / "sbx.lock")
    again = read_lock(path)
    assert again == lock
    assert again.entries["plain"] == {"image": IMAGE, "digest": D1}
    assert set(again.entries["py"]) == {"image", "digest", "setup", "inputs"}
    assert list(again.entries["py"]["inputs"]) == ["requirements.txt"]
    assert again.entries["off"]["bootstrap"] == bootstrap_key(boot.bootstrap)
    assert "digest" not in again.entries["off"]
    text = Path(path).read_text()
    assert text.startswith("# sbx.lock: written by `sbx lock`")
    assert "version = 1" in text


def test_no_lock_file(tmp_path):
    assert read_lock(str(tmp_path / "sbx.lock")) is None


def test_resolver_only_asked_for_tags(project):
    r = Resolver()
    pinned = f"docker.io/library/debian@{D2}"
    assert make_entry(prof(image=pinned), str(project), r) == {"image": pinned, "digest": D2}
    assert make_entry(prof(image={"bootstrap": "debian:bookworm"}), str(project), r) == {
        "bootstrap": bootstrap_key({"bootstrap": "debian:bookworm"})}
    assert r.asked == []
    make_entry(prof(), str(project), r)
    assert r.asked == [IMAGE]


def test_locking_some_keeps_the_others(project):
    lock = lock_profiles([prof("a"), prof("b")], str(project), Resolver(D1))
    lock = lock_profiles([prof("b")], str(project), Resolver(D2), lock)
    assert lock.entries["a"]["digest"] == D1
    assert lock.entries["b"]["digest"] == D2


def test_check_lock_agrees(project):
    p = prof(setup=["pip install -r requirements.txt"], inputs=["requirements.txt"])
    lock = lock_profiles([p], str(project), Resolver())
    assert check_lock(p, lock, str(project)) == []
    assert locked_reference(p, lock) == f"{IMAGE}@{D1}"


def test_check_lock_no_lock_or_no_entry(project):
    assert check_lock(prof(), None) == ["profile py: there is no sbx.lock (run `sbx lock`)"]
    assert check_lock(prof(), Lock()) == ["profile py: not in sbx.lock (run `sbx lock py`)"]


def test_check_lock_image_changed(project):
    lock = lock_profiles([prof()], str(project), Resolver())
    changed = prof(image="docker.io/library/python:3.13-bookworm")
    assert check_lock(changed, lock) == [
        "profile py: image is 'docker.io/library/python:3.13-bookworm', sbx.lock has "
        f"'{IMAGE}'"]
    assert locked_reference(changed, lock) is None


def test_check_lock_pinned_digest_differs(project):
    pinned = f"docker.io/library/python@{D1}"
    lock = Lock({"py": {"image": pinned, "digest": D2}})
    assert check_lock(prof(image=pinned), lock) == [
        f"profile py: image pins {D1}, sbx.lock has {D2}"]


def test_check_lock_input_changed_names_the_file(project):
    p = prof(setup=["pip install -r requirements.txt"], inputs=["requirements.txt"])
    lock = lock_profiles([p], str(project), Resolver())
    (project / "requirements.txt").write_text("flask\ndjango\n")
    assert check_lock(p, lock, str(project)) == [
        "profile py: inputs changed since sbx.lock: requirements.txt"]
    assert check_lock(p, lock) == []  # without the project dir, inputs are not hashed


def test_check_lock_steps_changed(project):
    lock = lock_profiles([prof(setup=["a"])], str(project), Resolver())
    assert check_lock(prof(setup=["b"]), lock, str(project)) == [
        "profile py: setup steps or env changed since sbx.lock"]
    assert check_lock(prof(setup=["a"], env={"X": "1"}), lock, str(project)) == [
        "profile py: setup steps or env changed since sbx.lock"]
    assert check_lock(prof(), lock, str(project)) == [
        "profile py: sbx.lock has a setup layer, the profile has no setup steps"]
    plain = lock_profiles([prof()], str(project), Resolver())
    assert check_lock(prof(setup=["a"]), plain, str(project)) == [
        "profile py: has setup steps that sbx.lock does not know"]


def test_check_lock_bootstrap(project):
    boot = prof(image={"bootstrap": "debian:bookworm", "packages": ["python3"]})
    lock = lock_profiles([boot], str(project), Resolver())
    assert check_lock(boot, lock) == []
    assert locked_reference(boot, lock) is None
    more = prof(image={"bootstrap": "debian:bookworm", "packages": ["python3", "git"]})
    assert check_lock(more, lock) == [
        "profile py: the bootstrap (suite, packages, mirror) changed since sbx.lock was "
        "written"]
    assert check_lock(prof(), lock) == [
        f"profile py: image is '{IMAGE}', sbx.lock has 'a bootstrapped image'"]


def test_the_setup_key_is_the_same_on_another_machine(project, tmp_path_factory):
    """The lock's setup key depends on the profile's env as written, not on the
    host's values, so a teammate's check agrees."""
    p = prof(setup=["make"], env={"HOME_COPY": "${HOME}"})
    lock = lock_profiles([p], str(project), Resolver())
    other = tmp_path_factory.mktemp("elsewhere")
    assert check_lock(p, lock, str(other)) == []


@pytest.mark.parametrize(("text", "message"), [
    ("version = 2\n", "sbx.lock: lock version 2 is not 1"),
    ("version = 1\nprofiles = 3\n", "sbx.lock: profiles: expected a table"),
    ("version = 1\n[profiles.a]\ndigest = 1\n", "sbx.lock: profiles.a.digest: expected a string"),
    ("version = 1\n[profiles.a]\nextra = '1'\n", "sbx.lock: profiles.a.extra: unknown key"),
    ("version = 1\n[profiles.a]\ninputs = 'x'\n",
     "sbx.lock: profiles.a.inputs: expected a table of hashes"),
    ("version = \n", "sbx.lock:1:11: Invalid value"),
])
def test_bad_lock_files(text, message):
    with pytest.raises(ProfileError) as exc:
        parse_lock(text)
    assert exc.value.message == message


def test_write_failure_is_a_profile_error(tmp_path):
    with pytest.raises(ProfileError, match="can't write"):
        Lock({}).write(str(tmp_path / "no" / "dir" / "sbx.lock"))
    assert list(tmp_path.iterdir()) == []
