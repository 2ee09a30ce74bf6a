"""Profile keys, types and their problems: sandbox/profiles/schema.py (pure)."""

from __future__ import annotations

import pytest

from sandbox.profiles.schema import (
    PROFILE_KEYS,
    Problem,
    check_interpolation,
    find_line,
    parse_port,
    parse_size,
    path_text,
    validate_profile,
    validate_project,
)

P = ("profiles", "py")


def problems(table, path=P):
    _clean, found = validate_profile(table, path)
    return [p.text() for p in found]


def clean(table):
    out, found = validate_profile(table)
    assert found == []
    return out


def test_a_full_valid_profile_keeps_every_key_in_order():
    table = {
        "inputs": ["requirements*.txt"], "setup": ["pip install -r requirements.txt"],
        "forward": {"ssh_agent": True, "git_config": False, "x11": False, "wayland": False,
                    "gpu": False},
        "ports": ["8000:8000", "127.0.0.1:5432:5432/tcp", "53:53/udp"],
        "limits": {"memory": "2g", "cpus": 2.5, "pids": 512},
        "tmpfs": ["/tmp:size=64m"],
        "volumes": {"pip-cache": "/var/cache/pip"},
        "mounts": [{"source": "~/data", "target": "/data", "ro": True, "optional": True}],
        "workspace": {"source": ".", "target": "/src", "ro": False},
        "env": {"A": "1", "TOKEN": "${TOKEN}", "N": 3, "F": 1.5, "D": "${X:-d} $$ $PATH"},
        "network": "none", "user": "keep-id", "shell": "/bin/bash", "command": "make test",
        "workdir": "/src", "image": "python:3.12@sha256:" + "a" * 64, "extends": "base",
        "description": "everything",
    }
    out = clean(table)
    assert list(out) == list(PROFILE_KEYS)
    assert out["env"]["N"] == "3" and out["env"]["F"] == "1.5"


@pytest.mark.parametrize(("table", "expected"), [
    ({"image": 3}, 'profiles.py.image: expected an image reference ("debian:bookworm") or a '
     'table ({ bootstrap = "debian:bookworm", packages = [...] }), got 3'),
    ({"image": "Debian:latest!"}, 'profiles.py.image: invalid image reference '
     '"Debian:latest!": invalid tag \'latest!\''),
    ({"image": {"packages": ["xz-utils"]}}, 'profiles.py.image.bootstrap: missing: say what to '
     'bootstrap, e.g. "debian:bookworm"'),
    ({"image": {"bootstrap": "fedora:40"}}, 'profiles.py.image.bootstrap: expected '
     'DISTRIBUTION:SUITE like "debian:bookworm", got "fedora:40"'),
    ({"image": {"bootstrap": "debian:bookworm", "packages": ["Bad Name"]}},
     'profiles.py.image.packages[0]: expected a Debian package name, got "Bad Name"'),
    ({"image": {"bootstrap": "debian:bookworm", "variant": "minbse"}},
     'profiles.py.image.variant: expected one of extract, custom, essential, apt, required, '
     'minbase, buildd, important, debootstrap, standard, got "minbse" '
     '(did you mean "minbase"?)'),
    ({"image": {"bootstrap": "debian:bookworm", "pakages": []}},
     'profiles.py.image.pakages: unknown key (did you mean "packages"?)'),
    ({"extends": "a b"}, 'profiles.py.extends: expected a profile name or a path to a '
     '.toml file, got "a b"'),
    ({"description": 1}, "profiles.py.description: expected a string, got 1"),
    ({"workdir": "src"}, 'profiles.py.workdir: expected an absolute path inside the '
     'container, got "src"'),
    ({"workdir": "/a:b"}, "profiles.py.workdir: a container path can't contain ':', "
     'got "/a:b"'),
    ({"command": []}, "profiles.py.command: must not be empty"),
    ({"command": ["a", 1]}, "profiles.py.command[1]: expected a string, got 1"),
    ({"command": {"a": 1}}, "profiles.py.command: expected a string (run by the shell) or "
     "an array of strings, got a table"),
    ({"shell": ""}, "profiles.py.shell: must not be empty"),
    ({"user": "Bad User"}, 'profiles.py.user: expected "keep-id", "root", a uid[:gid] or a '
     'user name, got "Bad User"'),
    ({"user": -1}, "profiles.py.user: expected a uid of 0 or more, got -1"),
    ({"network": "hots"}, 'profiles.py.network: expected "host" or "none", got "hots" '
     '(did you mean "host"?)'),
    ({"env": []}, "profiles.py.env: expected a table, got an array"),
    ({"env": {"1X": "a"}}, "profiles.py.env.1X: invalid variable name (letters, digits "
     "and _, not starting with a digit)"),
    ({"env": {"DEBUG": True}}, 'profiles.py.env.DEBUG: expected a string or a number, got '
     'true (write "true")'),
    ({"env": {"A": "${"}}, "profiles.py.env.A: unclosed '${': write ${NAME} or "
     "${NAME:-default} ($$ for a $)"),
    ({"env": {"A": "${1BAD}"}}, "profiles.py.env.A: invalid variable name in '${1BAD}'"),
    ({"env": {"A": "${A:+x}"}}, "profiles.py.env.A: invalid reference '${A:+x}': write "
     "${NAME} or ${NAME:-default}"),
    ({"mounts": {"source": "a"}}, 'profiles.py.mounts: expected an array of tables like '
     '{ source = "~/data", target = "/data" }, got a table'),
    ({"mounts": [{"source": "a"}]}, "profiles.py.mounts[0].target: missing"),
    ({"mounts": [{"source": "a", "target": "/t", "ro": "yes"}]},
     'profiles.py.mounts[0].ro: expected true or false, got "yes"'),
    ({"mounts": [{"source": "a", "target": "/t", "readonly": True}]},
     "profiles.py.mounts[0].readonly: unknown key"),
    ({"mounts": [{"source": "a:b", "target": "/t"}]},
     "profiles.py.mounts[0].source: a host path can't contain ':', got \"a:b\""),
    ({"mounts": ["a:/b"]}, 'profiles.py.mounts[0]: expected a table, got "a:/b"'),
    ({"volumes": {"-x": "/c"}}, "profiles.py.volumes.-x: invalid volume name (letters, "
     "digits, '_', '.' and '-', starting with a letter or digit)"),
    ({"volumes": {"cache": "c"}}, 'profiles.py.volumes.cache: expected an absolute path '
     'inside the container, got "c"'),
    ({"workspace": "."}, 'profiles.py.workspace: expected a table, got "."'),
    ({"workspace": {"target": "w"}}, 'profiles.py.workspace.target: expected an absolute '
     'path inside the container, got "w"'),
    ({"workspace": {"sorce": "."}}, 'profiles.py.workspace.sorce: unknown key (did you '
     'mean "source"?)'),
    ({"tmpfs": ["tmp"]}, 'profiles.py.tmpfs[0]: expected an absolute path, optionally with '
     'options ("/tmp:size=64m"), got "tmp"'),
    ({"limits": {"memory": 12}}, 'profiles.py.limits.memory: expected a size like "2g", '
     'got 12'),
    ({"limits": {"memory": "lots"}}, 'profiles.py.limits.memory: expected a size like '
     '"2g", got "lots"'),
    ({"limits": {"memory": "0"}}, 'profiles.py.limits.memory: expected a size like "2g", '
     'got "0"'),
    ({"limits": {"cpus": 0}}, "profiles.py.limits.cpus: expected a number of CPUs above 0, "
     "like 2 or 2.5, got 0"),
    ({"limits": {"cpus": "2"}}, "profiles.py.limits.cpus: expected a number of CPUs above "
     '0, like 2 or 2.5, got "2"'),
    ({"limits": {"pids": 1.5}}, "profiles.py.limits.pids: expected a number of processes "
     "above 0, like 512, got 1.5"),
    ({"limits": {"memroy": "1g"}}, 'profiles.py.limits.memroy: unknown key (did you mean '
     '"memory"?)'),
    ({"ports": ["80"]}, 'profiles.py.ports[0]: expected "HOST:CONTAINER[/tcp|/udp]" with '
     'ports 1-65535, like "8000:8000", got "80"'),
    ({"ports": ["70000:80"]}, 'profiles.py.ports[0]: expected "HOST:CONTAINER[/tcp|/udp]" '
     'with ports 1-65535, like "8000:8000", got "70000:80"'),
    ({"ports": "80:80"}, 'profiles.py.ports: expected an array of strings, got "80:80"'),
    ({"forward": {"ssh-agent": True}}, 'profiles.py.forward.ssh-agent: unknown key (did '
     'you mean "ssh_agent"?)'),
    ({"forward": {"gpu": 1}}, "profiles.py.forward.gpu: expected true or false, got 1"),
    ({"setup": "make"}, 'profiles.py.setup: expected an array of shell steps (write '
     '["make"]), got "make"'),
    ({"setup": [""]}, "profiles.py.setup[0]: must not be empty"),
    ({"inputs": ["/etc/passwd"]}, 'profiles.py.inputs[0]: expected a file pattern inside '
     'the project (relative, no \'..\'), got "/etc/passwd"'),
    ({"inputs": ["../x"]}, 'profiles.py.inputs[0]: expected a file pattern inside the '
     'project (relative, no \'..\'), got "../x"'),
    ({"imgae": "debian"}, 'profiles.py.imgae: unknown key (did you mean "image"?)'),
    ({"zzz": 1}, "profiles.py.zzz: unknown key"),
])
def test_each_problem_names_its_key_path(table, expected):
    assert problems(table) == [expected]


def test_a_profile_that_is_not_a_table():
    assert problems(3) == ["profiles.py: expected a table of profile keys, got 3"]


def test_all_problems_are_reported_and_valid_keys_kept():
    out, found = validate_profile({"image": "debian", "user": 3.5, "network": 1,
                                   "limits": {"memory": "1g", "pids": 0}})
    assert out == {"image": "debian", "limits": {"memory": "1g"}}
    assert len(found) == 3


def test_normal_forms():
    assert clean({"user": 1000})["user"] == "1000"
    assert clean({"user": "1000:100"})["user"] == "1000:100"
    assert clean({"user": "root"})["user"] == "root"
    assert clean({"user": "dev:staff"})["user"] == "dev:staff"
    assert clean({"workspace": True})["workspace"] == {}
    assert clean({"workspace": False})["workspace"] is False
    assert clean({"command": "make"})["command"] == "make"


def test_project_file_shape():
    assert validate_project({"profiles": {"ok": {}}}) == []
    assert [p.text() for p in validate_project({"profiles": {"a b": {}, "c": 3}})] == [
        "profiles.\"a b\": invalid profile name (letters, digits, '.', '_' and '-', "
        "starting with a letter or digit, at most 64)",
        "profiles.c: expected a table of profile keys, got 3"]
    assert [p.text() for p in validate_project({"profiles": []})] == [
        "profiles: expected a table of profiles ([profiles.NAME]), got an array"]


@pytest.mark.parametrize(("text", "size"), [
    ("2g", 2 << 30), ("512m", 512 << 20), ("512MiB", 512 << 20), ("1.5G", 3 << 29),
    ("100k", 102400), ("100kb", 102400), ("4096", 4096), ("10b", 10), ("1t", 1 << 40),
])
def test_parse_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "g", "2x", "-1g", "0", "1 gigabyte"])
def test_parse_size_rejects(text):
    with pytest.raises(ValueError):
        parse_size(text)


def test_parse_port():
    assert parse_port("8000:80") == {"host_ip": "", "host_port": 8000, "container_port": 80,
                                     "protocol": "tcp"}
    assert parse_port("[::1]:53:53/udp")["host_ip"] == "::1"
    assert parse_port("0:80") is None


def test_interpolation_syntax():
    assert check_interpolation("${A} ${B:-x} ${C-y} $$ $D $") is None
    assert check_interpolation("${}") == "invalid variable name in '${}'"


def test_path_text():
    assert path_text(("profiles", "a.b", "mounts", 0, "target")) == \
        'profiles."a.b".mounts[0].target'


def test_problem_equality():
    assert Problem(("a",), "m") == Problem(("a",), "m")
    assert Problem((), "m").text() == "m"


# --- find_line -------------------------------------------------------------------------

DOC = """\
# comment
[profiles.python]
image = "python"
limits = { memory = 12 }
env.A = "x"
"quoted key" = 1

[profiles.python.forward]
gpu = 1

[[profiles.python.mounts]]
source = "a"
target = "b"

[[profiles.python.mounts]]
source = "c"
target = "d"
"""


@pytest.mark.parametrize(("path", "line"), [
    (("profiles", "python", "image"), 3),
    (("profiles", "python", "limits", "memory"), 4),  # inside an inline table
    (("profiles", "python", "env", "A"), 5),  # a dotted key
    (("profiles", "python", "quoted key"), 6),
    (("profiles", "python", "forward", "gpu"), 9),
    (("profiles", "python", "mounts", 0, "target"), 13),
    (("profiles", "python", "mounts", 1, "target"), 17),
    (("profiles", "python", "mounts", 1), 15),
    (("profiles", "python"), 2),
    (("profiles", "python", "missing"), 2),  # falls back to the table
    (("profiles", "other", "image"), None),
])
def test_find_line(path, line):
    assert find_line(DOC, path) == line


def test_find_line_in_a_top_level_profile():
    assert find_line('image = "x"\n\n[limits]\nmemory = 1\n', ("limits", "memory")) == 4
