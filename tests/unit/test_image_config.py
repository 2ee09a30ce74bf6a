"""sandbox.images.config: parsing an image's configuration (OCI and Docker)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sandbox.images.config import (
    ImageConfigError,
    check_layers,
    history_for_inspect,
    load_config,
    parse_config,
    parse_time,
)
from sandbox.images.store import Store

DIFF = "sha256:" + "a" * 64

FULL = {
    "created": "2024-01-02T03:04:05.123456789Z",
    "author": "someone",
    "architecture": "arm",
    "variant": "v7",
    "os": "linux",
    "config": {
        "User": "1000:1000",
        "ExposedPorts": {"8080/tcp": {}, "53/udp": {}},
        "Env": ["PATH=/usr/bin:/bin", "LANG=C.UTF-8", "PATH=/override"],
        "Entrypoint": ["/entry.sh"],
        "Cmd": ["serve", "--port", "8080"],
        "Volumes": {"/data": {}, "/cache": {}},
        "WorkingDir": "/srv",
        "Labels": {"a": "1"},
        "StopSignal": "SIGQUIT",
    },
    "rootfs": {"type": "layers", "diff_ids": [DIFF]},
    "history": [
        {"created": "2024-01-02T03:04:05Z", "created_by": "ADD x /", "comment": "c"},
        {"created_by": "ENV A=1", "empty_layer": True},
    ],
}


def test_every_field() -> None:
    c = parse_config(json.dumps(FULL).encode())
    assert (c.os, c.architecture, c.variant, c.platform) == ("linux", "arm", "v7", "linux/arm/v7")
    assert c.user == "1000:1000"
    assert c.entrypoint == ("/entry.sh",)
    assert c.cmd == ("serve", "--port", "8080")
    assert c.working_dir == "/srv"
    assert c.stop_signal == "SIGQUIT"
    assert c.volumes == ("/cache", "/data")
    assert c.exposed_ports == ("53/udp", "8080/tcp")
    assert c.labels == {"a": "1"}
    assert c.diff_ids == (DIFF,)
    assert c.author == "someone"
    assert c.env_dict() == {"PATH": "/override", "LANG": "C.UTF-8"}
    assert c.history[1].empty_layer and c.history[0].created_by == "ADD x /"
    assert c.run_config["WorkingDir"] == "/srv"
    assert c.created_at() == datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
    assert history_for_inspect(c.history) == [
        {"created": "2024-01-02T03:04:05Z", "created_by": "ADD x /", "comment": "c"},
        {"created_by": "ENV A=1", "empty_layer": True},
    ]


def test_unset_entrypoint_differs_from_empty() -> None:
    minimal = {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers",
                                                                 "diff_ids": []}}
    c = parse_config(json.dumps(minimal).encode())
    assert c.entrypoint is None and c.cmd is None
    assert (c.user, c.working_dir, c.env, c.volumes, c.labels) == ("", "", (), (), {})
    c = parse_config(json.dumps({**minimal, "config": {"Entrypoint": [], "Cmd": None}}).encode())
    assert c.entrypoint == () and c.cmd is None


def test_docker_extras_are_kept_raw() -> None:
    doc = {**FULL, "docker_version": "24.0", "container_config": {"Hostname": "x"}}
    c = parse_config(json.dumps(doc).encode())
    assert c.raw["docker_version"] == "24.0"


@pytest.mark.parametrize(
    ("doc", "problem"),
    [
        (b"not json", "not JSON"),
        (b"[]", "not a JSON object"),
        ({"rootfs": {"type": "layers"}, "config": []}, "config is not an object"),
        ({"rootfs": {"type": "layers"}, "config": {"Cmd": "sh"}}, "config.Cmd is not a list"),
        ({"rootfs": {"type": "layers"}, "config": {"Env": [1]}}, "config.Env is not a list"),
        ({"rootfs": {"type": "layers"}, "config": {"Labels": {"a": 1}}}, "Labels must map"),
        ({"rootfs": {"type": "layers"}, "config": {"Volumes": ["/x"]}}, "Volumes is not an"),
        ({}, "rootfs is missing"),
        ({"rootfs": {"type": "zfs"}}, "rootfs.type is 'zfs'"),
        ({"rootfs": {"type": "layers", "diff_ids": ["sha256:../x"]}}, r"diff_ids\[0\]"),
        ({"rootfs": {"type": "layers"}, "history": [1]}, r"history\[0\] is not an object"),
    ],
)
def test_malformed(doc: object, problem: str) -> None:
    data = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    with pytest.raises(ImageConfigError, match=problem) as info:
        parse_config(data)
    assert info.value.hint


def test_layer_count_must_match() -> None:
    c = parse_config(json.dumps(FULL).encode())
    check_layers(c, 1)
    with pytest.raises(ImageConfigError, match="has 2 layers but its config lists 1"):
        check_layers(c, 2)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2023-11-14T22:13:20Z", datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)),
        ("2023-11-14T22:13:20.5Z", datetime(2023, 11, 14, 22, 13, 20, 500000, tzinfo=UTC)),
        ("2023-11-14T23:13:20.123456789+01:00", datetime(2023, 11, 14, 22, 13, 20, 123456,
                                                         tzinfo=UTC)),
        ("2023-11-14T22:13:20", datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)),
        ("", None),
        (None, None),
        ("yesterday", None),
    ],
)
def test_parse_time(text: str | None, expected: datetime | None) -> None:
    assert parse_time(text) == expected


def test_load_config_reads_the_store(tmp_path: Path) -> None:
    store = Store(tmp_path / "store", sync_layers=False)
    data = json.dumps(FULL).encode()
    digest = store.put_blob_bytes(data)
    assert load_config(store, digest).cmd == ("serve", "--port", "8080")
