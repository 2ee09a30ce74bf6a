"""Spec generation from run options: pure, so every rule is checked here."""

import pytest

from sandbox.errors import UsageError
from sandbox.runtime import caps
from sandbox.runtime.spec import IdMapping
from sandbox.runtime.specgen import (
    MASKED_PATHS,
    RunOptions,
    generate,
    merge_env,
    parse_env_file,
    parse_tmpfs,
    parse_volume,
)
from sandbox.runtime.users import ExecUser

ROOT = ExecUser(0, 0, [], "root", "/root")
MAPS = [IdMapping(0, 1000, 1), IdMapping(1, 100000, 65536)]


def _gen(**kw):
    opts = RunOptions(rootfs="/r", args=kw.pop("args", ["true"]), **kw)
    return generate(opts, kw.get("user", ROOT), MAPS, MAPS, {"TERM": "vt100", "FOO": "host"},
                    "ab" * 32, "/home/me/proj")


def test_env_precedence_defaults_then_files_then_flags():
    spec = _gen(env=["A=flag", "FOO"], env_file_text=[("f", "A=file\nB=file\n# c\n")])
    env = dict(e.split("=", 1) for e in spec.process.env)
    assert env["A"] == "flag"
    assert env["B"] == "file"
    assert env["FOO"] == "host"
    assert env["PATH"].startswith("/usr/local/sbin")
    assert env["HOME"] == "/root"
    assert env["HOSTNAME"] == "abababababab"
    assert "TERM" not in env


def test_tty_sets_term_from_the_host():
    env = dict(e.split("=", 1) for e in _gen(tty=True).process.env)
    assert env["TERM"] == "vt100"


def test_env_key_without_value_and_unset_on_host_is_dropped():
    assert merge_env([["X"]], {}) == []


def test_env_file_errors_name_file_and_line():
    with pytest.raises(UsageError, match=r"vars.env:2: invalid variable name"):
        parse_env_file("vars.env", "OK=1\nBAD KEY=2\n", {})


def test_volume_parsing():
    m = parse_volume("./data:/data:ro", "/home/me/proj")
    assert (m.source, m.destination) == ("/home/me/proj/data", "/data")
    assert m.options == ["rbind", "ro"]
    assert parse_volume("/a:/b:z", "/").options == ["rbind"]
    for bad in ("a", "/a:b", ":/b", "/a:/b:bogus", "/a:/b:ro:x", "/a:/b:nocopy"):
        with pytest.raises(UsageError):
            parse_volume(bad, "/")


def test_named_and_anonymous_volume_parsing():
    m = parse_volume("cache:/var/cache/:ro,nocopy", "/")
    assert (m.type, m.source, m.destination, m.options) == (
        "volume", "cache", "/var/cache", ["ro", "nocopy"])
    anon = parse_volume("/scratch", "/")
    assert (anon.type, anon.source, anon.destination) == ("volume", "", "/scratch")
    with pytest.raises(UsageError, match="neither a host path nor a volume name"):
        parse_volume("~/x:/x", "/")
    with pytest.raises(UsageError, match="invalid option 'rbind'"):
        parse_volume("cache:/c:rbind", "/")


def test_unresolved_volume_is_refused():
    from sandbox.runtime.spec import Mount

    with pytest.raises(UsageError, match="not resolved"):
        _gen(mounts=[Mount("/c", "volume", "cache", [])])
    spec = _gen(mounts=[Mount("/c", "bind", "/vols/cache/_data", ["rbind"])])
    [mount] = [m for m in spec.mounts if m.destination == "/c"]
    assert mount.source == "/vols/cache/_data"


def test_tmpfs_defaults_as_podman():
    m = parse_tmpfs("/scratch:size=10m")
    assert m.options == ["rw", "noexec", "nosuid", "nodev", "size=10m"]
    with pytest.raises(UsageError):
        parse_tmpfs("rel")


def test_default_spec_shape():
    spec = _gen()
    assert spec.hostname == "abababababab"
    assert "network" not in spec.linux.namespaces
    assert {"user", "mount", "pid", "uts", "ipc", "cgroup"} <= set(spec.linux.namespaces)
    dests = [m.destination for m in spec.mounts]
    assert dests[:3] == ["/proc", "/dev", "/sys"]
    assert {"/dev/pts", "/dev/shm", "/dev/mqueue"} <= set(dests)
    assert "/dev/null" in dests
    assert "/proc/kcore" in spec.linux.masked_paths
    assert set(MASKED_PATHS) == set(spec.linux.masked_paths)
    assert "/proc/sys" in spec.linux.readonly_paths
    assert spec.process.no_new_privileges
    oci = spec.to_oci()
    assert oci["linux"]["uidMappings"][1] == {"containerID": 1, "hostID": 100000, "size": 65536}


def test_network_none_adds_a_network_namespace():
    assert "network" in _gen(network="none").linux.namespaces
    with pytest.raises(UsageError):
        _gen(network="bridge")


def test_capabilities_root_and_non_root():
    root = _gen().process.capabilities
    assert set(root.bounding) == set(caps.DEFAULT_CAPABILITIES)
    assert root.effective == root.bounding and root.inheritable == []
    user = ExecUser(1000, 1000, [], "tester", "/home/tester")
    opts = RunOptions(rootfs="/r", args=["true"], cap_add=["NET_RAW"])
    c = generate(opts, user, MAPS, MAPS, {}, "ab" * 32, "/").process.capabilities
    assert "CAP_NET_RAW" in c.bounding
    assert c.effective == c.ambient == ["CAP_NET_RAW"]


def test_cap_resolution():
    assert caps.resolve(drop=["ALL"]) == []
    assert caps.resolve(add=["net_raw"], drop=["ALL"]) == ["CAP_NET_RAW"]
    assert "CAP_CHOWN" not in caps.resolve(drop=["chown"])
    assert len(caps.resolve(add=["ALL"])) == len(caps.CAPABILITIES)
    assert caps.to_mask(caps.DEFAULT_CAPABILITIES) == 0x800405FB
    with pytest.raises(UsageError, match="unknown capability 'FOO'"):
        caps.resolve(add=["FOO"])


def test_no_command_and_relative_workdir_are_usage_errors():
    with pytest.raises(UsageError, match="no command"):
        _gen(args=[])
    with pytest.raises(UsageError, match="absolute"):
        _gen(workdir="rel")


def test_mounts_go_parents_first():
    """A tmpfs on a home given after a bind inside it must not hide the bind."""
    spec = _gen(volumes=["/srv/proj:/home/me/proj", "/data:/etc"],
                tmpfs=["/home/me"])
    dests = [m.destination for m in spec.mounts]
    for i, d in enumerate(dests):
        for later in dests[i + 1:]:
            assert not d.startswith(later.rstrip("/") + "/"), (d, later, dests)
    assert dests.index("/home/me") < dests.index("/home/me/proj")


def test_parse_device():
    from sandbox.runtime.specgen import parse_device

    m = parse_device("/dev/null")
    assert (m.destination, m.source, m.options[0]) == ("/dev/null", "/dev/null", "bind")
    assert parse_device("/dev/null:/dev/other:rw").destination == "/dev/other"
    assert parse_device("/dev/null:rwm").destination == "/dev/null"
    assert parse_device("/dev").options[0] == "rbind"  # a folder of devices, whole
    for bad in ("", "/dev/null:x:y:z", "/dev/null:bogus", "/etc/passwd", "/no/such"):
        with pytest.raises(UsageError):
            parse_device(bad)
