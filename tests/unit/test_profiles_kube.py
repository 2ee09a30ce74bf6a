"""`sbx generate kube`: the Pod manifest, checked against the Kubernetes API's own
models (the kubernetes client's V1Pod and friends, which enforce required fields),
and its YAML read back by PyYAML (sandbox/profiles/kube.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox.profiles.errors import ProfileError
from sandbox.profiles.kube import cpu_quantity, dns_label, memory_quantity, pod_manifest, to_yaml
from sandbox.profiles.lock import Lock
from sandbox.profiles.model import Profile

kubernetes = pytest.importorskip("kubernetes", reason="the test extra installs kubernetes")
yaml = pytest.importorskip("yaml", reason="PyYAML comes with the kubernetes client")

DIGEST = "sha256:" + "c" * 64
IMAGE = "docker.io/library/python:3.12-bookworm"
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def full_profile() -> Profile:
    return Profile("Py_Dev", {
        "description": "yes",  # a YAML 1.1 boolean when written bare
        "image": IMAGE, "command": ["pytest", "-x"], "user": "1000:100",
        "env": {"TOKEN": "${TOKEN}", "N": "1:20", "EMPTY": "", "ON": "on"},
        "workspace": {"target": "/src", "ro": True},
        "mounts": [{"source": "/etc/hosts", "target": "/etc/hosts", "ro": True}],
        "volumes": {"pip-cache": "/var/cache/pip", "Pip_Cache": "/other"},
        "tmpfs": ["/tmp:size=64m", "/run"],
        "limits": {"memory": "2g", "cpus": 2.5, "pids": 100},
        "ports": ["8000:8000", "53:53/udp"],
        "forward": {"ssh_agent": True, "gpu": False},
        "setup": ["pip install -r requirements.txt", "echo 'done'"],
    }, ["/p/sbx.toml"], "project")


def deserialize(pod: dict) -> object:
    client = kubernetes.client.ApiClient()
    return client._ApiClient__deserialize(pod, "V1Pod")


def check_names(pod: dict) -> None:
    spec = pod["spec"]
    names = [c["name"] for c in spec["containers"]] + [v["name"] for v in spec.get("volumes", [])]
    for name in names:
        assert DNS_LABEL.fullmatch(name) and len(name) <= 63, name
    volume_names = [v["name"] for v in spec.get("volumes", [])]
    assert len(set(volume_names)) == len(volume_names)
    for mount in spec["containers"][0].get("volumeMounts", []):
        assert mount["name"] in volume_names


def test_full_profile_is_a_valid_pod(tmp_path: Path):
    lock = Lock({"Py_Dev": {"image": IMAGE, "digest": DIGEST}})
    pod, notes, comments = pod_manifest(full_profile(), str(tmp_path), {"TOKEN": "t"}, lock)
    v1 = deserialize(pod)
    assert isinstance(v1, kubernetes.client.V1Pod)
    assert v1.api_version == "v1" and v1.kind == "Pod"
    assert v1.metadata.name == "py-dev"
    c = v1.spec.containers[0]
    assert c.image == f"{IMAGE}@{DIGEST}"
    assert c.args == ["pytest", "-x"]
    assert c.command[:2] == ["/bin/sh", "-c"] and "echo 'done'" in c.command[2]
    assert c.working_dir == "/src"
    assert {e.name: e.value for e in c.env} == {"TOKEN": "t", "N": "1:20", "EMPTY": "",
                                                "ON": "on"}
    assert c.resources.limits == {"memory": "2Gi", "cpu": "2500m"}
    assert c.security_context.run_as_user == 1000 and c.security_context.run_as_group == 100
    assert [(p.container_port, p.protocol) for p in c.ports] == [(8000, "TCP"), (53, "UDP")]
    assert c.stdin is None and c.tty is None  # a command: no shell to attach to
    volumes = {v.name: v for v in v1.spec.volumes}
    ws = volumes["workspace"]
    assert ws.host_path.path == str(tmp_path) and ws.host_path.type == "Directory"
    assert volumes["pip-cache"].empty_dir is not None
    assert volumes["pip-cache-2"].empty_dir is not None  # Pip_Cache, made unique
    assert volumes["tmpfs-tmp"].empty_dir.medium == "Memory"
    assert volumes["tmpfs-tmp"].empty_dir.size_limit == "64Mi"
    mounts = {m.mount_path: m for m in c.volume_mounts}
    assert mounts["/src"].read_only is True
    assert mounts["/etc/hosts"].read_only is True
    check_names(pod)
    assert any("pids" in n for n in notes)
    assert any("forward.ssh_agent" in n for n in notes)
    assert any("TOKEN" in n for n in notes)
    assert not any("not pinned" in n for n in notes)
    assert ("spec", "volumes", 0) in comments


def test_yaml_reads_back_as_the_same_data(tmp_path: Path):
    pod, notes, comments = pod_manifest(full_profile(), str(tmp_path), {"TOKEN": "t: #x"})
    text = to_yaml(pod, notes, comments)
    assert yaml.safe_load(text) == pod
    assert text.startswith("# note: ")
    assert "# the project folder, from the node's file system" in text
    assert "description: \"yes\"" in text
    assert 'value: "1:20"' in text  # YAML 1.1 would read 1:20 as the number 80
    deserialize(yaml.safe_load(text))


def test_json_format_is_the_same_data(tmp_path: Path):
    pod, _, _ = pod_manifest(full_profile(), str(tmp_path), {})
    assert json.loads(json.dumps(pod)) == pod


def test_minimal_profile_is_an_interactive_shell(tmp_path: Path):
    prof = Profile("sh", {"image": "debian", "shell": "/bin/bash", "user": "root"},
                   ["/x"], "bundled")
    pod, notes, _ = pod_manifest(prof, str(tmp_path), {})
    c = deserialize(pod).spec.containers[0]
    assert c.args == ["/bin/bash", "-l"] and c.stdin and c.tty
    assert c.command is None
    assert c.security_context.run_as_user == 0
    assert any("not pinned" in n for n in notes)
    check_names(pod)


def test_no_workspace_no_volumes(tmp_path: Path):
    prof = Profile("x", {"image": "debian", "workspace": False, "user": "keep-id"}, ["/x"],
                   "project")
    pod, notes, _ = pod_manifest(prof, str(tmp_path), {})
    assert "volumes" not in pod["spec"]
    assert any("keep-id" in n for n in notes)
    deserialize(pod)


def test_bootstrap_profiles_are_refused(tmp_path: Path):
    prof = Profile("off", {"image": {"bootstrap": "debian:bookworm"}}, ["/x"], "bundled")
    with pytest.raises(ProfileError, match="needs an image a registry serves"):
        pod_manifest(prof, str(tmp_path), {})


def test_quantities_and_labels():
    assert memory_quantity(2 << 30) == "2Gi"
    assert memory_quantity(512 << 20) == "512Mi"
    assert memory_quantity(1000) == "1000"
    assert cpu_quantity(2) == "2" and cpu_quantity(0.25) == "250m"
    assert dns_label("My_Profile.v2") == "my-profile-v2"
    assert dns_label("---") == "sbx"
    assert len(dns_label("a" * 100)) == 63


keys = st.text(max_size=10)
scalars = st.one_of(st.text(max_size=20), st.integers(), st.booleans(), st.none(),
                    st.floats(allow_nan=False))
trees = st.recursive(scalars, lambda c: st.one_of(st.lists(c, max_size=3),
                                                 st.dictionaries(keys, c, max_size=3)),
                     max_leaves=10)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(keys, trees, max_size=4))
def test_yaml_writer_roundtrips_through_pyyaml(doc):
    assert yaml.safe_load(to_yaml(doc)) == (doc or None)
