"""How `extends` combines tables and lists: sandbox/profiles/merge.py (pure)."""

from __future__ import annotations

from sandbox.profiles.merge import merge

PARENT = {
    "description": "parent", "image": "debian", "command": ["a", "b"], "shell": "/bin/sh",
    "env": {"A": "1", "B": "1"}, "limits": {"memory": "1g", "cpus": 1},
    "forward": {"ssh_agent": True}, "volumes": {"cache": "/c"},
    "workspace": {"source": ".", "target": "/w"},
    "mounts": [{"source": "/x", "target": "/x"}, {"source": "/y", "target": "/y"}],
    "tmpfs": ["/tmp:size=1m", "/run"],
    "ports": ["80:80", "443:443"], "setup": ["s1", "s2"], "inputs": ["a.txt"],
}


def test_scalars_and_command_replace():
    out = merge(PARENT, {"image": "ubuntu", "command": ["c"], "description": "child"})
    assert out["image"] == "ubuntu"
    assert out["command"] == ["c"]  # not ["a", "b", "c"]
    assert out["description"] == "child"
    assert out["shell"] == "/bin/sh"  # inherited


def test_tables_merge_by_key_child_wins():
    out = merge(PARENT, {"env": {"B": "2", "C": "2"}, "limits": {"cpus": 4},
                         "forward": {"gpu": True}, "volumes": {"more": "/m"}})
    assert out["env"] == {"A": "1", "B": "2", "C": "2"}
    assert out["limits"] == {"memory": "1g", "cpus": 4}
    assert out["forward"] == {"ssh_agent": True, "gpu": True}
    assert out["volumes"] == {"cache": "/c", "more": "/m"}


def test_workspace_merges_and_false_wins():
    assert merge(PARENT, {"workspace": {"ro": True}})["workspace"] == {
        "source": ".", "target": "/w", "ro": True}
    assert merge(PARENT, {"workspace": False})["workspace"] is False
    assert merge({"workspace": False}, {"workspace": {"target": "/t"}})["workspace"] == {
        "target": "/t"}


def test_mounts_merge_by_target_in_place():
    out = merge(PARENT, {"mounts": [{"source": "/new", "target": "/x", "ro": True},
                                    {"source": "/z", "target": "/z"}]})
    assert out["mounts"] == [{"source": "/new", "target": "/x", "ro": True},
                             {"source": "/y", "target": "/y"},
                             {"source": "/z", "target": "/z"}]


def test_tmpfs_merges_by_path():
    assert merge(PARENT, {"tmpfs": ["/tmp:size=9m", "/var/tmp"]})["tmpfs"] == [
        "/tmp:size=9m", "/run", "/var/tmp"]


def test_lists_append_parent_first():
    out = merge(PARENT, {"ports": ["443:443", "8080:80"], "setup": ["s2", "s3"],
                         "inputs": ["a.txt", "b.txt"]})
    assert out["ports"] == ["80:80", "443:443", "8080:80"]  # without repeats
    assert out["setup"] == ["s1", "s2", "s2", "s3"]  # steps are kept as written
    assert out["inputs"] == ["a.txt", "b.txt"]


def test_extends_is_not_inherited_and_inputs_are_not_changed():
    child = {"extends": "parent", "env": {"X": "1"}}
    out = merge(PARENT, child)
    assert "extends" not in out
    out["env"]["Y"] = "2"
    out["mounts"][0]["target"] = "/changed"
    assert PARENT["env"] == {"A": "1", "B": "1"}
    assert PARENT["mounts"][0]["target"] == "/x"
    assert child == {"extends": "parent", "env": {"X": "1"}}


def test_merge_with_empty_parent_is_the_child():
    assert merge({}, {"image": "debian", "setup": ["x"]}) == {"image": "debian", "setup": ["x"]}
