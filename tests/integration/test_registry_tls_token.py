"""TLS and authentication against real registries: docker-registry with a
self-signed certificate and htpasswd Basic auth, and docker-registry with Bearer
token auth from an in-process token service (tests/registry_rig.py)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from registry_rig import PASSWORD, USER, RunningRegistry, make_image, sha256

from sandbox.registry import credentials, media
from sandbox.registry.client import RegistryClient
from sandbox.registry.credentials import Credentials
from sandbox.registry.errors import RegistryTLSError, UnauthorizedError

pytest_plugins = ["registry_rig"]


def round_trip(client: RegistryClient, repo: str, tag: str = "v1") -> None:
    """Push a small image and pull it back, verified."""
    image = make_image({"f": f"{repo}:{tag}".encode()})
    for blob in (image.layer, image.config):
        if not client.blob_exists(repo, sha256(blob)):
            client.push_blob(repo, sha256(blob), len(blob), io.BytesIO(blob))
    client.put_manifest(repo, tag, media.OCI_MANIFEST, image.manifest)
    _, digest, data = client.get_manifest(repo, tag)
    assert (digest, data) == (image.manifest_digest, image.manifest)
    out = io.BytesIO()
    client.fetch_blob(repo, image.layer_digest, out)
    assert out.getvalue() == image.layer


GOOD = Credentials(USER, PASSWORD)
BAD = Credentials(USER, "wrong-password")


# --- TLS + Basic ---------------------------------------------------------------------
def test_unknown_ca_is_a_clear_tls_error(registry_tls_auth: RunningRegistry) -> None:
    client = RegistryClient(registry_tls_auth.host, credentials=GOOD, timeout=5)
    with pytest.raises(RegistryTLSError) as info:
        client.ping()
    assert "certificate" in info.value.message
    assert registry_tls_auth.host in info.value.message
    hint = info.value.hint or ""
    assert "--tls-verify=false" in hint
    assert "CA certificate" in hint


def test_ca_file_and_basic_auth(registry_tls_auth: RunningRegistry) -> None:
    with RegistryClient(
        registry_tls_auth.host, ca_file=registry_tls_auth.ca_file, credentials=GOOD, timeout=5
    ) as client:
        client.ping()
        assert client.auth.scheme == "basic"
        assert client._base == f"https://{registry_tls_auth.host}"
        round_trip(client, "sbx/basic")


def test_tls_verify_false_skips_verification(registry_tls_auth: RunningRegistry) -> None:
    with RegistryClient(registry_tls_auth.host, tls_verify=False, credentials=GOOD) as client:
        round_trip(client, "sbx/noverify")
        # Still HTTPS: HTTP is only a fallback when HTTPS does not work at all.
        assert client._base == f"https://{registry_tls_auth.host}"


def test_wrong_password(registry_tls_auth: RunningRegistry) -> None:
    host = registry_tls_auth.host
    client = RegistryClient(host, ca_file=registry_tls_auth.ca_file, credentials=BAD, timeout=5)
    with pytest.raises(UnauthorizedError) as info:
        client.ping()
    assert info.value.message.startswith(
        f"unauthorized: check your username/password for {host} (sbx login {host})"
    )
    assert "wrong-password" not in info.value.message + (info.value.hint or "")
    with pytest.raises(UnauthorizedError):
        client.get_manifest("sbx/basic", "v1")


def test_no_credentials(registry_tls_auth: RunningRegistry) -> None:
    host = registry_tls_auth.host
    client = RegistryClient(host, ca_file=registry_tls_auth.ca_file, timeout=5)
    client.ping()  # nothing to check without credentials
    with pytest.raises(UnauthorizedError) as info:
        client.get_manifest("sbx/basic", "v1")
    assert info.value.message.startswith("authentication required for")
    assert (info.value.hint or "").endswith(f"log in first: sbx login {host}")


def test_credentials_saved_by_login_are_found(
    registry_tls_auth: RunningRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What `sbx login` then `sbx pull` do: ping with the given credentials, save
    them, and later look them up for the registry."""
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(tmp_path / "auth.json"))
    host = registry_tls_auth.host
    RegistryClient(host, ca_file=registry_tls_auth.ca_file, credentials=GOOD).ping()
    credentials.save(host, USER, PASSWORD)
    found = credentials.lookup(host, "sbx/login")
    assert found == GOOD
    with RegistryClient(host, ca_file=registry_tls_auth.ca_file, credentials=found) as client:
        round_trip(client, "sbx/login")


# --- Bearer tokens ---------------------------------------------------------------------
def test_token_flow_and_reuse(registry_token: RunningRegistry) -> None:
    tokens = registry_token.token_server
    assert tokens is not None
    tokens.reset()
    with RegistryClient(registry_token.host, credentials=GOOD, timeout=5) as client:
        client.ping()
        assert client.auth.scheme == "bearer"
        assert [r["scopes"] for r in tokens.requests] == [[]]  # login check: no scope
        round_trip(client, "sbx/token")
        # One token for pull (the first HEAD), one for pull,push; everything after
        # reuses the pull,push token, which covers pull.
        assert [r["scopes"] for r in tokens.requests] == [
            [],
            ["repository:sbx/token:pull"],
            ["repository:sbx/token:pull,push"],
        ]
        assert all(r["user"] == USER for r in tokens.requests)
        for _ in range(3):
            client.get_manifest("sbx/token", "v1")
        assert len(tokens.requests) == 3

        # A cross-repository mount needs push on the target and pull on the source.
        image = make_image({"f": b"sbx/token:v1"})
        assert client.mount_blob("sbx/token-copy", image.layer_digest, "sbx/token") is True
        assert tokens.requests[-1]["scopes"] == [
            "repository:sbx/token:pull",
            "repository:sbx/token-copy:pull,push",
        ]


def test_token_anonymous_pull_but_not_push(registry_token: RunningRegistry) -> None:
    with RegistryClient(registry_token.host, credentials=GOOD) as client:
        round_trip(client, "sbx/public")
    with RegistryClient(registry_token.host) as anonymous:
        anonymous.ping()
        _, _, data = anonymous.get_manifest("sbx/public", "v1")
        assert data
        blob = b"anonymous upload"
        with pytest.raises(UnauthorizedError) as info:
            anonymous.push_blob("sbx/public", sha256(blob), len(blob), io.BytesIO(blob))
        assert info.value.message.startswith("authentication required for")
        assert f"sbx login {registry_token.host}" in (info.value.hint or "")


def test_token_wrong_password(registry_token: RunningRegistry) -> None:
    host = registry_token.host
    with RegistryClient(host, credentials=BAD) as client:
        with pytest.raises(UnauthorizedError) as info:
            client.ping()
        assert f"check your username/password for {host} (sbx login {host})" in info.value.message
        with pytest.raises(UnauthorizedError):
            client.get_manifest("sbx/token", "v1")
