"""`sbx run PROFILE`, `sbx shell` and `sbx profile rebuild` as the unprivileged test
user, on the busybox image from the registry rig, in a project folder of the user's:
setup steps kept as a layer (a hit, then a change of an input that rebuilds),
keep-id ownership in the workspace, extends, the lock and --locked, profile errors
that start nothing, a failed setup that keeps nothing, and two runs of a test
environment in parallel that share nothing."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import SbxRunner, User
from test_lifecycle_commands import Life, end_life, life_store, make_life  # noqa: F401
from test_run_tty import Pty

pytest_plugins = ["registry_rig", "image_rig"]

BUILDING = "building the setup layer"


@dataclass
class Project:
    life: Life
    dir: Path
    user: User

    @property
    def env(self) -> dict[str, str]:
        return {**self.life.env, "XDG_CONFIG_HOME": str(self.life.root / "config")}

    def write(self, name: str, text: str) -> None:
        path = self.dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        self.user.chown(path)

    def sbx(self, *args: str, check: bool = True, timeout: float = 120
            ) -> subprocess.CompletedProcess[str]:
        p = self.life.sbx.run(*args, cwd=self.dir, env=self.env, timeout=timeout)
        if check:
            assert p.returncode == 0, f"sbx {' '.join(args)}: exit {p.returncode}\n{p.stderr}"
        return p

    def popen(self, *args: str) -> subprocess.Popen[str]:
        p = self.life.sbx.popen(*args, cwd=self.dir, env=self.env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.life.spawned.append(p)
        return p

    def images(self) -> list[str]:
        rows = json.loads(self.sbx("images", "--format", "json").stdout)
        return sorted(n for r in rows for n in r.get("Names") or [])

    def containers(self) -> list[dict[str, object]]:
        return json.loads(self.sbx("ps", "-a", "--format", "json").stdout)


@pytest.fixture
def proj(sbx: SbxRunner, test_user: User, life_store: tuple[Path, str]  # noqa: F811
         ) -> Iterator[Project]:
    life = make_life(sbx, test_user, *life_store)
    d = life.root / "proj"
    d.mkdir()
    test_user.chown(d)
    p = Project(life, d, test_user)
    try:
        yield p
    finally:
        for name in p.images():
            if name.startswith("localhost/sbx-setup:"):
                life.sbx.run("rmi", "-f", name, env=p.env, timeout=60)
        end_life(life)


def dev_profile(image: str, step: str = "cp requirements.txt /opt/req && echo built") -> str:
    return f"""\
        [profiles.base]
        image = "{image}"
        env = {{ FROM_BASE = "base", WHO = "base" }}

        [profiles.dev]
        extends = "base"
        description = "the test project's environment"
        setup = ["mkdir -p /opt", "{step}"]
        inputs = ["requirements.txt"]
        env = {{ WHO = "dev", GREETING = "hello ${{USER}}" }}
        """


def test_setup_layer_is_kept_and_rebuilt_when_an_input_changes(proj: Project) -> None:
    proj.write("sbx.toml", dev_profile(proj.life.image))
    proj.write("requirements.txt", "one==1\n")
    first = proj.sbx("run", "dev", "--", "cat", "/opt/req")
    assert BUILDING in first.stderr and "setup step 2/2" in first.stderr
    # The steps' output goes to stderr, as a build's does; stdout is the command's.
    assert first.stdout == "one==1\n" and "built" in first.stderr
    assert [n for n in proj.images() if "sbx-setup" in n]

    again = proj.sbx("run", "dev", "--", "cat", "/opt/req")
    assert BUILDING not in again.stderr and again.stdout == "one==1\n"

    proj.write("requirements.txt", "two==2\n")
    changed = proj.sbx("run", "dev", "--", "cat", "/opt/req")
    assert BUILDING in changed.stderr and changed.stdout == "two==2\n"

    # `profile rebuild` builds even on a hit; every run removed its container.
    rebuilt = proj.sbx("profile", "rebuild", "dev")
    assert BUILDING in rebuilt.stderr and rebuilt.stdout.startswith("localhost/sbx-setup:")
    assert proj.containers() == []


def test_keep_id_workspace_env_and_extends(proj: Project) -> None:
    proj.write("sbx.toml", dev_profile(proj.life.image))
    proj.write("requirements.txt", "x\n")
    u = proj.user
    out = proj.sbx("run", "dev", "--", "sh", "-c",
                   'id -u; id -g; id -un; pwd; echo "$WHO $FROM_BASE $GREETING"; '
                   'touch made-inside; mkdir -p sub/dir; echo "$HOME"; '
                   'touch "$HOME/.history" && stat -c %u "$HOME"; '
                   'stat -c %u:%g /bin/busybox').stdout.splitlines()
    assert out[:5] == [str(u.uid), str(u.gid), u.name, str(proj.dir),
                       f"dev base hello {u.name}"]
    assert out[5:] == [str(u.home), str(u.uid), "0:0"]  # the image's files stay root's
    for made in ("made-inside", "sub/dir"):
        st = (proj.dir / made).stat()
        assert (st.st_uid, st.st_gid) == (u.uid, u.gid)


def test_failed_setup_keeps_nothing(proj: Project) -> None:
    proj.write("sbx.toml", dev_profile(proj.life.image, step="echo oops; exit 7"))
    proj.write("requirements.txt", "x\n")
    p = proj.sbx("run", "dev", "--", "true", check=False)
    assert p.returncode == 125
    assert "setup step 2/2 failed (exit 7)" in p.stderr and "nothing was kept" in p.stderr
    assert not [n for n in proj.images() if "sbx-setup" in n]
    assert proj.containers() == []


def test_lock_and_locked(proj: Project) -> None:
    proj.write("sbx.toml", dev_profile(proj.life.image))
    proj.write("requirements.txt", "x\n")
    p = proj.sbx("run", "--locked", "dev", "--", "true", check=False)
    assert p.returncode == 125 and "no sbx.lock" in p.stderr
    proj.sbx("lock", "dev")
    lock = (proj.dir / "sbx.lock").read_text()
    assert "[profiles.dev]" in lock and "digest = \"sha256:" in lock
    proj.sbx("run", "--locked", "dev", "--", "true")
    # An input changed: a warning, or an error with --locked (nothing starts).
    proj.write("requirements.txt", "y\n")
    warned = proj.sbx("run", "dev", "--", "echo", "ran")
    assert "inputs changed since sbx.lock: requirements.txt" in warned.stderr
    assert warned.stdout.endswith("ran\n")
    refused = proj.sbx("run", "--locked", "dev", "--", "echo", "ran", check=False)
    assert refused.returncode == 125 and "ran" not in refused.stdout
    assert "requirements.txt" in refused.stderr


def test_profile_errors_start_nothing(proj: Project) -> None:
    proj.write("sbx.toml", '[profiles.dev]\nimage = "x"\nenv = { A = 1\n')
    p = proj.sbx("run", "dev", "--", "true", check=False)
    assert p.returncode == 125 and "sbx.toml:3:" in p.stderr
    proj.write("sbx.toml", f'[profiles.dev]\nimage = "{proj.life.image}"\nimgae = "y"\n')
    p = proj.sbx("run", "dev", "--", "true", check=False)
    assert p.returncode == 125
    assert "sbx.toml:3: profiles.dev.imgae" in p.stderr and "did you mean" in p.stderr
    assert proj.containers() == []


def test_test_environment_runs_in_parallel_share_nothing(proj: Project) -> None:
    script = ("test ! -e /tmp/mine && echo $$ > /tmp/mine && sleep 1 && cat /tmp/mine "
              "&& hostname")
    proj.write("sbx.toml", f"""\
        [profiles.testenv]
        image = "{proj.life.image}"
        command = ["sh", "-c", {json.dumps(script)}]
        network = "none"
        """)
    runs = [proj.popen("run", "testenv") for _ in range(2)]
    outs = [r.communicate(timeout=120) for r in runs]
    assert [r.returncode for r in runs] == [0, 0], outs
    lines = [o[0].split() for o in outs]
    assert all(len(lines_) == 2 for lines_ in lines)
    assert lines[0][1] != lines[1][1]  # two containers, two host names
    assert proj.containers() == []


def test_shell_is_an_interactive_login_shell(proj: Project) -> None:
    proj.write("sbx.toml", f"""\
        [profiles.sh]
        image = "{proj.life.image}"
        command = ["echo", "not-this"]
        """)
    pid, master = proj.life.sbx.spawn_pty("shell", "sh", cwd=proj.dir, env=proj.env)
    session = Pty(pid, master)
    try:
        session.expect(b"$ ")  # the prompt: ash reads the line only once it is up
        session.write(b"echo in-$((6*7)); tty; id -un; exit 3\n")
        session.expect(b"in-42")
        assert session.finish() == 3
        assert "/dev/pts/" in session.text and proj.user.name in session.text
        assert "not-this" not in session.text
    finally:
        if session.status is None:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        os.close(master)


def test_project_under_home_is_not_hidden_by_the_home_inside(proj: Project) -> None:
    """keep-id gives an empty home inside; a project inside the home (the usual
    place) must still be the real folder, mounted over it."""
    home_proj = proj.user.home / f"sbx-test-proj-{os.getpid()}"
    home_proj.mkdir()
    proj.user.chown(home_proj)
    try:
        (home_proj / "sbx.toml").write_text(f'[profiles.p]\nimage = "{proj.life.image}"\n')
        p = proj.life.sbx.run("run", "p", "--", "sh", "-c",
                              'pwd; cat sbx.toml >/dev/null && echo x > out; ls -A "$HOME"',
                              cwd=home_proj, env=proj.env, timeout=120)
        assert p.returncode == 0, p.stderr
        assert p.stdout.splitlines()[0] == str(home_proj)
        assert home_proj.name in p.stdout.splitlines()[1:]
        assert (home_proj / "out").read_text() == "x\n"
        assert (home_proj / "out").stat().st_uid == proj.user.uid
    finally:
        import shutil

        shutil.rmtree(home_proj, ignore_errors=True)


def test_bootstrapped_offline_profile(proj: Project) -> None:
    """The README's profile: its base image built from Debian packages with
    mmdebstrap (the Debian mirror is the only network it needs), then cached."""
    proj.write("sbx.toml", """\
        [profiles.off]
        extends = "debian-offline"
        setup = ["python3 -c 'import sys; print(sys.version_info[0])' > /opt/py-major"]
        """)
    first = proj.sbx("run", "off", "--", "sh", "-c",
                     "cat /opt/py-major; . /etc/os-release; echo $VERSION_CODENAME; "
                     "echo made > here", timeout=600)
    assert "bootstrapping debian:bookworm with mmdebstrap" in first.stderr
    assert first.stdout.split() == ["3", "bookworm"]
    assert (proj.dir / "here").stat().st_uid == proj.user.uid
    again = proj.sbx("run", "off", "--", "python3", "-c", "print('ok')")
    assert again.stdout == "ok\n"
    assert "bootstrapping" not in again.stderr and BUILDING not in again.stderr
    [img] = [n for n in proj.images() if n.startswith("localhost/sbx-bootstrap:")]
    # The lock records what the image is built from; --locked accepts it.
    proj.sbx("lock", "off")
    assert 'bootstrap = "sha256:' in (proj.dir / "sbx.lock").read_text()
    proj.sbx("run", "--locked", "off", "--", "true")
    proj.life.sbx.run("rmi", "-f", img, env=proj.env, timeout=60)


def test_named_volumes_persist_across_runs(proj: Project) -> None:
    proj.write("sbx.toml", f"""\
        [profiles.cache]
        image = "{proj.life.image}"
        volumes = {{ pkg-cache = "/var/cache/pkgs" }}
        """)
    proj.sbx("run", "cache", "--", "sh", "-c",
             "test ! -e /var/cache/pkgs/a && echo one > /var/cache/pkgs/a")
    out = proj.sbx("run", "cache", "--", "sh", "-c",
                   "cat /var/cache/pkgs/a; stat -c %u /var/cache/pkgs /var/cache/pkgs/a")
    assert out.stdout.split() == ["one", str(proj.user.uid), str(proj.user.uid)]
    [vol] = json.loads(proj.sbx("volume", "inspect", "pkg-cache").stdout)
    assert vol["Name"] == "pkg-cache"
    assert proj.containers() == []  # the runs are gone, the volume stays


def test_a_mistyped_profile_name_gets_a_did_you_mean(proj: Project) -> None:
    """A bare name that is no profile is an image reference (docs/profiles.md);
    when no such image exists either, the error says which profile was meant."""
    proj.write("sbx.toml", dev_profile(proj.life.image))
    p = proj.sbx("run", "--pull", "never", "devv", "--", "true", check=False)
    assert p.returncode == 125
    assert "'devv' is not a profile here either; did you mean 'dev'?" in p.stderr
    assert proj.containers() == []
