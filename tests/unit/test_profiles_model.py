"""Profile -> what a run needs, env expansion, setup keys: sandbox/profiles/model.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sandbox.profiles.errors import ProfileError
from sandbox.profiles.model import (
    SSH_AGENT_SOCK,
    Profile,
    bootstrap_key,
    command_args,
    expand,
    expand_env,
    hash_inputs,
    resolve_inputs,
    setup_key,
    to_run_options,
)

HOST = {"HOME": "/home/me", "USER": "me", "EMPTY": "", "TOKEN": "s3cret"}


def prof(**data) -> Profile:
    data.setdefault("image", "docker.io/library/debian:bookworm")
    return Profile("p", data, ["/x/sbx.toml"], "project")


# --- ${VAR} -----------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "out"), [
    ("${TOKEN}", "s3cret"),
    ("a-${USER}-b", "a-me-b"),
    ("${NOPE:-dflt}", "dflt"),
    ("${EMPTY:-dflt}", "dflt"),  # :- also covers set-but-empty
    ("${EMPTY-dflt}", ""),  # - only covers unset
    ("${NOPE-dflt}", "dflt"),
    ("${USER:-dflt}", "me"),
    ("$$HOME", "$HOME"),  # $$ is a literal $
    ("$HOME", "$HOME"),  # bare $VAR is left for the container's shell
    ("${NOPE}", ""),
    ("${NOPE:-}", ""),
    ("${NOPE:-a b/c}", "a b/c"),
])
def test_expand(text, out):
    assert expand(text, HOST) == out


def test_expand_reports_unset_variables():
    unset: list[str] = []
    assert expand("${A}${B:-x}${C}", {}, unset) == "x"
    assert unset == ["A", "C"]


def test_expand_env_warns_about_unset():
    warnings: list[str] = []
    assert expand_env({"T": "${TOKEN}", "U": "${UNSET}"}, HOST, warnings) == [
        "T=s3cret", "U="]
    assert warnings == ['env U: ${UNSET} is not set on the host: using ""']


# --- to_run_options --------------------------------------------------------------------


def test_defaults(tmp_path):
    opts = to_run_options(prof(), str(tmp_path), HOST)
    assert opts["image"] == "docker.io/library/debian:bookworm"
    assert opts["bootstrap"] is None
    assert opts["args"] == ["/bin/sh", "-l"]
    assert opts["shell_args"] == ["/bin/sh", "-l"]
    assert opts["volumes"] == [f"{tmp_path}:{tmp_path}"]  # the project at the same path
    assert opts["workdir"] == str(tmp_path)
    assert (opts["userns"], opts["user"], opts["user_mode"]) == ("keep-id", None, "keep-id")
    assert opts["network"] == "host"
    assert opts["limits"] == {"memory": None, "cpus": None, "pids": None}
    assert opts["env"] == [] and opts["named_volumes"] == [] and opts["tmpfs"] == []
    assert opts["setup"] == [] and opts["inputs"] == [] and opts["warnings"] == []


def test_full(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "requirements.txt").write_text("flask\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "req-dev.txt").write_text("pytest\n")
    p = prof(command=["pytest", "-x"], workdir="/src/app", user="1000:1000", network="none",
             env={"T": "${TOKEN}", "D": "${NOPE:-d}"},
             workspace={"target": "/src", "ro": True},
             mounts=[{"source": "data", "target": "/data", "ro": True},
                     {"source": "~/absent", "target": "/opt", "optional": True}],
             volumes={"pip-cache": "/var/cache/pip"}, tmpfs=["/tmp:size=64m"],
             limits={"memory": "512m", "cpus": 1.5, "pids": 64}, ports=["8000:80"],
             setup=["pip install -r requirements.txt"],
             inputs=["requirements.txt", "**/req-*.txt", "missing.txt"])
    opts = to_run_options(p, str(tmp_path), HOST)
    assert opts["args"] == ["pytest", "-x"]
    assert opts["workdir"] == "/src/app"
    assert opts["volumes"] == [f"{tmp_path}:/src:ro", f"{tmp_path}/data:/data:ro"]
    assert opts["named_volumes"] == [("pip-cache", "/var/cache/pip")]
    assert opts["tmpfs"] == ["/tmp:size=64m"]
    assert opts["env"] == ["T=s3cret", "D=d"]
    assert (opts["userns"], opts["user"]) == ("", "1000:1000")
    assert opts["network"] == "none"
    assert opts["limits"] == {"memory": 512 << 20, "cpus": 1.5, "pids": 64}
    assert opts["ports"] == [{"host_ip": "", "host_port": 8000, "container_port": 80,
                              "protocol": "tcp"}]
    assert opts["setup"] == ["pip install -r requirements.txt"]
    assert opts["inputs"] == ["requirements.txt", "sub/req-dev.txt"]
    assert opts["warnings"] == [f"inputs: 'missing.txt' matches no file in {tmp_path}"]


def test_command_given_on_the_command_line_replaces_the_profiles(tmp_path):
    opts = to_run_options(prof(command=["make"]), str(tmp_path), HOST, command=["ls", "-l"])
    assert opts["args"] == ["ls", "-l"]


def test_string_command_runs_with_the_profiles_shell():
    assert command_args(prof(command="make test", shell="/bin/bash")) == [
        "/bin/bash", "-c", "make test"]
    assert command_args(prof(command="make")) == ["/bin/sh", "-c", "make"]
    assert command_args(prof(shell="/bin/zsh")) == ["/bin/zsh", "-l"]


@pytest.mark.parametrize(("user", "userns", "as_user"), [
    ("keep-id", "keep-id", None), ("root", "", "0:0"), ("1000", "", "1000"),
    ("dev:staff", "", "dev:staff")])
def test_user_modes(tmp_path, user, userns, as_user):
    opts = to_run_options(prof(user=user), str(tmp_path), HOST)
    assert (opts["userns"], opts["user"]) == (userns, as_user)


def test_no_workspace(tmp_path):
    opts = to_run_options(prof(workspace=False), str(tmp_path), HOST)
    assert opts["volumes"] == [] and opts["workdir"] is None


def test_workspace_source_expands_home_and_vars(tmp_path):
    home = tmp_path / "home"
    (home / "code").mkdir(parents=True)
    opts = to_run_options(prof(workspace={"source": "~/code"}), str(tmp_path),
                          {"HOME": str(home)})
    assert opts["volumes"] == [f"{home}/code:{home}/code"]
    opts = to_run_options(prof(workspace={"source": "${HOME}/code", "target": "/c"}),
                          str(tmp_path), {"HOME": str(home)})
    assert opts["volumes"] == [f"{home}/code:/c"]


def test_missing_mount_source_is_an_error(tmp_path):
    with pytest.raises(ProfileError, match=r"mounts\[0\].source .*/nope does not exist"):
        to_run_options(prof(mounts=[{"source": "nope", "target": "/n"}]), str(tmp_path), HOST)


def test_workspace_must_exist(tmp_path):
    with pytest.raises(ProfileError, match="is not a directory"):
        to_run_options(prof(workspace={"source": "gone"}), str(tmp_path), HOST)


def test_ports_with_host_network_warn(tmp_path):
    opts = to_run_options(prof(ports=["80:80"]), str(tmp_path), HOST)
    assert any("ports" in w for w in opts["warnings"])


def test_bootstrap_image(tmp_path):
    image = {"bootstrap": "debian:bookworm", "packages": ["python3"]}
    opts = to_run_options(prof(image=image), str(tmp_path), HOST)
    assert opts["image"] is None
    assert opts["bootstrap"]["bootstrap"] == "debian:bookworm"
    assert opts["bootstrap"]["packages"] == ["python3"]
    assert opts["bootstrap"]["key"] == bootstrap_key(image)
    assert opts["base_key"] == bootstrap_key(image)


# --- forwards ---------------------------------------------------------------------------


def test_forward_ssh_agent(tmp_path):
    sock = tmp_path / "agent.sock"
    sock.write_text("")
    opts = to_run_options(prof(forward={"ssh_agent": True}), str(tmp_path),
                          {**HOST, "SSH_AUTH_SOCK": str(sock)})
    assert f"{sock}:{SSH_AGENT_SOCK}" in opts["volumes"]
    assert opts["env"] == [f"SSH_AUTH_SOCK={SSH_AGENT_SOCK}"]


def test_forward_ssh_agent_without_agent_warns(tmp_path):
    opts = to_run_options(prof(forward={"ssh_agent": True}), str(tmp_path), HOST)
    assert opts["env"] == []
    assert opts["warnings"][0].startswith("forward.ssh_agent: no agent socket")


def test_forward_env_comes_before_the_profiles(tmp_path):
    sock = tmp_path / "agent.sock"
    sock.write_text("")
    opts = to_run_options(prof(forward={"ssh_agent": True}, env={"SSH_AUTH_SOCK": "/mine"}),
                          str(tmp_path), {**HOST, "SSH_AUTH_SOCK": str(sock)})
    assert opts["env"] == [f"SSH_AUTH_SOCK={SSH_AGENT_SOCK}", "SSH_AUTH_SOCK=/mine"]


def test_forward_git_config(tmp_path):
    home = tmp_path / "home"
    (home / ".config" / "git").mkdir(parents=True)
    (home / ".gitconfig").write_text("[user]\n")
    (home / ".config" / "git" / "config").write_text("[core]\n")
    host = {"HOME": str(home)}
    opts = to_run_options(prof(forward={"git_config": True}), str(tmp_path), host)
    assert opts["volumes"][1:] == [f"{home}/.gitconfig:{home}/.gitconfig:ro",
                                   f"{home}/.config/git/config:{home}/.config/git/config:ro"]
    opts = to_run_options(prof(forward={"git_config": True}, user="root"), str(tmp_path), host)
    assert opts["volumes"][1] == f"{home}/.gitconfig:/root/.gitconfig:ro"
    opts = to_run_options(prof(forward={"git_config": True}, user="dev"), str(tmp_path), host)
    assert len(opts["volumes"]) == 1 and "home directory inside is unknown" in \
        opts["warnings"][0]


def test_forward_x11_and_wayland(tmp_path):
    runtime = tmp_path / "run"
    runtime.mkdir()
    (runtime / "wayland-1").write_text("")
    opts = to_run_options(prof(forward={"x11": True, "wayland": True}), str(tmp_path),
                          {**HOST, "DISPLAY": ":0", "WAYLAND_DISPLAY": "wayland-1",
                           "XDG_RUNTIME_DIR": str(runtime)})
    assert "DISPLAY=:0" in opts["env"]
    assert f"{runtime}/wayland-1:/run/host-services/wayland-0" in opts["volumes"]
    assert "WAYLAND_DISPLAY=/run/host-services/wayland-0" in opts["env"]
    opts = to_run_options(prof(forward={"x11": True, "wayland": True}), str(tmp_path), HOST)
    assert len(opts["warnings"]) == 2


def test_forward_gpu(tmp_path, monkeypatch):
    real = os.path.exists
    monkeypatch.setattr(os.path, "exists", lambda p: p in ("/dev/dri", "/dev/nvidiactl")
                        or (not p.startswith("/dev/") and real(p)))
    monkeypatch.setattr("glob.glob", lambda pattern, **kw: ["/dev/nvidia0"]
                        if pattern.startswith("/dev/") else [])
    opts = to_run_options(prof(forward={"gpu": True}), str(tmp_path), HOST)
    assert opts["devices"] == ["/dev/dri", "/dev/nvidiactl"]  # /dev/nvidia0 "vanished"
    monkeypatch.setattr(os.path, "exists", lambda p: not p.startswith("/dev/") and real(p))
    opts = to_run_options(prof(forward={"gpu": True}), str(tmp_path), HOST)
    assert opts["devices"] == [] and opts["warnings"][0].startswith("forward.gpu")


# --- inputs and setup keys ---------------------------------------------------------------


def test_resolve_inputs_directories_and_globs(tmp_path: Path):
    (tmp_path / "req").mkdir()
    (tmp_path / "req" / "b.txt").write_text("b")
    (tmp_path / "req" / "a.txt").write_text("a")
    (tmp_path / "x.lock").write_text("x")
    assert resolve_inputs(str(tmp_path), ["req", "*.lock", "req/a.txt"]) == [
        "req/a.txt", "req/b.txt", "x.lock"]


def test_hash_inputs(tmp_path: Path):
    (tmp_path / "f").write_bytes(b"abc")
    assert hash_inputs(str(tmp_path), ["f"]) == [
        ("f", "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")]
    with pytest.raises(ProfileError, match="can't read gone"):
        hash_inputs(str(tmp_path), ["gone"])


BASE = "sha256:" + "1" * 64


def test_setup_key_is_stable():
    key = setup_key(BASE, ["apt-get update", "make"], [("a", "sha256:aa"), ("b", "sha256:bb")])
    assert key.startswith("sha256:") and len(key) == 71
    # The same inputs in another order, or as lists (from TOML), give the same key.
    assert setup_key(BASE, ["apt-get update", "make"],
                     [["b", "sha256:bb"], ["a", "sha256:aa"]]) == key
    # A fixed value: the key must not change between sbx versions without a reason
    # (SETUP_KEY_VERSION), or every user's setup layers would be rebuilt.
    assert setup_key(BASE, ["make"], [("a", "sha256:aa")]) == (
        "sha256:fb274701b3fd65b1d0398104ee42aa577d0eeb51fc53e61c9e8dc7e607a3e8c2")


def test_setup_key_changes_with_each_ingredient(tmp_path: Path):
    (tmp_path / "requirements.txt").write_text("flask==3.0\n")
    hashes = hash_inputs(str(tmp_path), ["requirements.txt"])
    key = setup_key(BASE, ["pip install -r requirements.txt"], hashes)
    (tmp_path / "requirements.txt").write_text("flask==3.1\n")
    changed = hash_inputs(str(tmp_path), ["requirements.txt"])
    others = {
        setup_key(BASE, ["pip install -r requirements.txt"], changed),  # input content
        setup_key("sha256:" + "2" * 64, ["pip install -r requirements.txt"], hashes),  # base
        setup_key(BASE, ["pip install -r requirements.txt", "true"], hashes),  # steps
        setup_key(BASE, ["true", "pip install -r requirements.txt"],
                  [*hashes, ("x", "sha256:00")]),
        setup_key(BASE, ["pip install -r requirements.txt"], [("other.txt", hashes[0][1])]),
        setup_key(BASE, ["pip install -r requirements.txt"], hashes, env=["A=1"]),
    }
    assert key not in others and len(others) == 6


def test_setup_key_step_boundaries_matter():
    assert setup_key(BASE, ["a", "b"], []) != setup_key(BASE, ["a\nb"], [])
    assert setup_key(BASE, ["ab"], []) != setup_key(BASE, ["a", "b"], [])


def test_bootstrap_key_ignores_package_order_and_repeats():
    a = bootstrap_key({"bootstrap": "debian:bookworm", "packages": ["python3", "git"]})
    assert a == bootstrap_key({"bootstrap": "debian:bookworm",
                               "packages": ["git", "python3", "git"]})
    assert a != bootstrap_key({"bootstrap": "debian:trixie", "packages": ["python3", "git"]})
    assert a != bootstrap_key({"bootstrap": "debian:bookworm", "packages": ["python3"]})
    assert a != bootstrap_key({"bootstrap": "debian:bookworm", "packages": ["python3", "git"],
                               "mirror": "http://deb.example/debian"})


def test_profile_to_toml_loads_back(tmp_path: Path):
    from sandbox.profiles.load import Search

    p = prof(command="make", env={"A": "${B:-c}"}, mounts=[{"source": "/s", "target": "/t"}],
             limits={"cpus": 2}, workspace=False, description='with "quotes"\nand lines')
    (tmp_path / "again.toml").write_text(p.to_toml())
    again = Search(str(tmp_path), str(tmp_path / "u"), str(tmp_path / "b")).load("again.toml")
    assert again.data == p.data
