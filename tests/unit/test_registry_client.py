"""Pure helpers and policies of sandbox.registry.client and .transport (the network part is
tested against real registries in tests/integration/test_registry_*.py)."""

from __future__ import annotations

import io

import pytest

from sandbox.registry import client as client_mod
from sandbox.registry.client import RegistryClient
from sandbox.registry.errors import InvalidDigestError, InvalidReferenceError
from sandbox.registry.transport import certs_d_dirs, is_loopback


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("localhost", True),
        ("localhost:5000", True),
        ("127.0.0.1", True),
        ("127.1.2.3:80", True),
        ("[::1]:5000", True),
        ("::1", True),
        ("foo.localhost:1", True),
        ("128.0.0.1", False),
        ("quay.io", False),
        ("registry-1.docker.io", False),
        ("localhost.example.com", False),
        ("[fe80::1]:5000", False),
    ],
)
def test_is_loopback(host: str, expected: bool) -> None:
    assert is_loopback(host) is expected


def test_plain_http_policy() -> None:
    assert RegistryClient("localhost:5000").insecure_http is True
    assert RegistryClient("127.0.0.1:5000").insecure_http is True
    assert RegistryClient("quay.io").insecure_http is False
    assert RegistryClient("quay.io", tls_verify=False).insecure_http is True
    assert RegistryClient("localhost:5000", insecure_http=False).insecure_http is False
    assert RegistryClient("docker.io").host == "registry-1.docker.io"
    assert RegistryClient("index.docker.io").registry == "docker.io"


def test_certs_d_dirs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", "/cfg")
    assert [str(p) for p in certs_d_dirs("r:5000")] == [
        "/cfg/containers/certs.d/r:5000",
        "/etc/containers/certs.d/r:5000",
        "/etc/docker/certs.d/r:5000",
    ]


@pytest.mark.parametrize(
    ("link", "here", "expected"),
    [
        (None, "http://r/v2/a/tags/list", None),
        ('</v2/a/tags/list?n=2&last=b>; rel="next"', "http://r/v2/a/tags/list?n=2",
         "http://r/v2/a/tags/list?n=2&last=b"),
        ("<https://other/x>; rel=next", "http://r/", "https://other/x"),
        ('</x>; rel="prev"', "http://r/", None),
    ],
)  # fmt: skip
def test_next_link(link: str | None, here: str, expected: str | None) -> None:
    assert client_mod._next_link(link, here) == expected


def test_error_detail() -> None:
    body = b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{}}]}'
    assert client_mod._error_detail(body) == ("MANIFEST_UNKNOWN", "manifest unknown")
    assert client_mod._error_detail(b"<html>\nBad gateway") == (None, "<html>")
    assert client_mod._error_detail(b"") == (None, "")


def test_add_query_keeps_upload_state() -> None:
    url = "http://r/v2/a/blobs/uploads/u1?_state=abc"
    assert client_mod._add_query(url, digest="sha256:00") == (
        "http://r/v2/a/blobs/uploads/u1?_state=abc&digest=sha256%3A00"
    )
    assert client_mod._add_query("http://r/u", digest="d") == "http://r/u?digest=d"


@pytest.mark.parametrize("repo", ["", "A/b", "a/../b", "a?x=1", "a#b", "/a", "a/", "a b"])
def test_repository_names_are_checked_before_any_request(repo: str) -> None:
    client = RegistryClient("registry.invalid")  # never contacted: checks come first
    with pytest.raises(InvalidReferenceError):
        client.blob_exists(repo, "sha256:" + "0" * 64)


@pytest.mark.parametrize("ref", ["sha256:../../x", "sha256:" + "0" * 63, "md5:" + "0" * 32])
def test_digests_are_checked_before_any_request(ref: str) -> None:
    client = RegistryClient("registry.invalid")
    with pytest.raises(InvalidDigestError):
        client.get_manifest("a", ref)
    with pytest.raises(InvalidDigestError):
        client.fetch_blob("a", ref, io.BytesIO())


def test_bad_tag_is_checked_before_any_request() -> None:
    with pytest.raises(InvalidReferenceError):
        RegistryClient("registry.invalid").get_manifest("a", "-tag")
