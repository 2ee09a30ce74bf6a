"""What a real registry does not do on demand: wrong data, hangs, resets, 5xx,
redirects to storage, lying digest headers, schema 1. Served by FakeRegistry
(tests/registry_rig.py), an HTTP server in a thread on 127.0.0.1."""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import os
import time
from pathlib import Path

import pytest
from registry_rig import FakeRegistry, _send, sha256

from sandbox.registry import media
from sandbox.registry.client import RegistryClient
from sandbox.registry.credentials import Credentials
from sandbox.registry.errors import (
    DigestMismatchError,
    ManifestError,
    RegistryConnectionError,
    RegistryError,
    RegistryTLSError,
)

pytest_plugins = ["registry_rig"]

DATA = os.urandom(400_000)


def fast_client(fake: FakeRegistry, **kw: object) -> RegistryClient:
    options: dict[str, object] = {"timeout": 2.0, "backoff": 0.05, **kw}
    return RegistryClient(fake.host, **options)  # type: ignore[arg-type]


def download_atomically(client: RegistryClient, repo: str, digest: str, dest: Path) -> None:
    """The pattern the image store uses: a temporary file next to the target,
    renamed into place only once fetch_blob has verified the content."""
    tmp = dest.with_name(dest.name + ".partial")
    try:
        with open(tmp, "wb") as out:
            client.fetch_blob(repo, digest, out)
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def test_wrong_digest_blob_is_rejected(fake_registry: FakeRegistry, tmp_path: Path) -> None:
    claimed = sha256(b"what the manifest promised")
    fake_registry.serve_blob("sbx/app", DATA, digest=claimed)
    client = fast_client(fake_registry)
    dest = tmp_path / "blob"
    with pytest.raises(DigestMismatchError) as info:
        download_atomically(client, "sbx/app", claimed, dest)
    message = info.value.message
    assert claimed in message and "sbx/app" in message and sha256(DATA) in message
    assert not dest.exists()
    assert list(tmp_path.iterdir()) == []


def test_output_is_truncated_back_on_failure(fake_registry: FakeRegistry, tmp_path: Path) -> None:
    claimed = sha256(b"other")
    fake_registry.serve_blob("sbx/app", DATA, digest=claimed)
    path = tmp_path / "out"
    with open(path, "wb") as out:
        out.write(b"header kept")
        with pytest.raises(DigestMismatchError):
            fast_client(fake_registry).fetch_blob("sbx/app", claimed, out)
    assert path.read_bytes() == b"header kept"


def test_wrong_size_is_rejected(fake_registry: FakeRegistry) -> None:
    digest = fake_registry.serve_blob("sbx/app", DATA)
    client = fast_client(fake_registry)
    import io

    with pytest.raises(DigestMismatchError, match="more than the expected 10 bytes"):
        client.fetch_blob("sbx/app", digest, io.BytesIO(), expected_size=10)


def test_hang_mid_blob_times_out_after_retries(fake_registry: FakeRegistry, tmp_path: Path) -> None:
    digest = fake_registry.serve_blob("sbx/app", DATA, fail_first=99, failure="hang")
    client = fast_client(fake_registry, timeout=0.3)
    started = time.monotonic()
    with pytest.raises(RegistryConnectionError) as info:
        download_atomically(client, "sbx/app", digest, tmp_path / "blob")
    elapsed = time.monotonic() - started
    assert elapsed < 5
    assert "timed out" in info.value.message
    assert "gave up after 3 attempts" in info.value.message
    assert digest in info.value.message
    assert len(fake_registry.paths("GET")) == 1 + 3  # /v2/ probe + 3 attempts
    assert not (tmp_path / "blob").exists()


def test_reset_mid_blob_resumes(fake_registry: FakeRegistry) -> None:
    digest = fake_registry.serve_blob("sbx/app", DATA, fail_first=2, failure="reset")
    import io

    out = io.BytesIO()
    assert fast_client(fake_registry).fetch_blob("sbx/app", digest, out) == len(DATA)
    assert out.getvalue() == DATA
    gets = [r for r in fake_registry.requests if r[0] == "GET" and "/blobs/" in r[1]]
    assert len(gets) == 3
    # The retries asked only for the rest, with a Range header.
    assert "Range" not in gets[0][2]
    starts = [int(g[2]["Range"][6:].rstrip("-")) for g in gets[1:]]
    assert 0 < starts[0] < starts[1] < len(DATA)


def test_reset_without_range_support_restarts(fake_registry: FakeRegistry, tmp_path: Path) -> None:
    digest = fake_registry.serve_blob("sbx/app", DATA, fail_first=2, failure="reset", ranges=False)
    path = tmp_path / "out"
    with open(path, "wb") as out:
        fast_client(fake_registry).fetch_blob("sbx/app", digest, out)
    assert path.read_bytes() == DATA


def test_5xx_is_retried(fake_registry: FakeRegistry) -> None:
    digest = fake_registry.serve_blob("sbx/app", DATA, fail_first=2, failure="500")
    import io

    out = io.BytesIO()
    fast_client(fake_registry).fetch_blob("sbx/app", digest, out)
    assert out.getvalue() == DATA


def test_5xx_gives_up(fake_registry: FakeRegistry) -> None:
    digest = fake_registry.serve_blob("sbx/app", DATA, fail_first=9, failure="500")
    import io

    with pytest.raises(RegistryConnectionError, match="500"):
        fast_client(fake_registry).fetch_blob("sbx/app", digest, io.BytesIO())


def test_redirect_to_storage_drops_authorization(fake_registry: FakeRegistry) -> None:
    storage = FakeRegistry()
    try:
        digest = storage.serve_blob("sbx/app", DATA)
        token = base64.b64encode(b"u:p").decode()

        def v2(h: http.server.BaseHTTPRequestHandler) -> None:
            if h.headers.get("Authorization") == f"Basic {token}":
                _send(h, 200, b"{}")
            else:
                _send(h, 401, b"{}", headers={"WWW-Authenticate": 'Basic realm="fake"'})

        def redirect(h: http.server.BaseHTTPRequestHandler) -> None:
            assert h.headers.get("Authorization") == f"Basic {token}"
            location = f"http://{storage.host}/v2/sbx/app/blobs/{digest}?X-Signature=abc"
            _send(h, 307, b"", headers={"Location": location})

        fake_registry.routes[("GET", "/v2/")] = v2
        fake_registry.routes[("GET", f"/v2/sbx/app/blobs/{digest}")] = redirect
        client = fast_client(fake_registry, credentials=Credentials("u", "p"))
        import io

        out = io.BytesIO()
        client.fetch_blob("sbx/app", digest, out)
        assert out.getvalue() == DATA
        ((_method, path, headers),) = storage.requests
        assert path.endswith("?X-Signature=abc")
        assert "Authorization" not in headers
    finally:
        storage.stop()


def manifest_route(
    fake: FakeRegistry, path: str, body: bytes, content_type: str, digest: str | None
) -> None:
    def route(h: http.server.BaseHTTPRequestHandler) -> None:
        headers = {"Docker-Content-Digest": digest} if digest else {}
        _send(h, 200, body, content_type, headers)

    fake.routes[("GET", path)] = route
    fake.routes[("HEAD", path)] = route


MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": media.OCI_MANIFEST,
        "config": {"mediaType": media.OCI_CONFIG, "digest": sha256(b"c"), "size": 1},
        "layers": [],
    }
).encode()


def test_lying_digest_header_is_caught(fake_registry: FakeRegistry) -> None:
    manifest_route(
        fake_registry, "/v2/sbx/app/manifests/v1", MANIFEST, media.OCI_MANIFEST, sha256(b"x")
    )
    with pytest.raises(DigestMismatchError) as info:
        fast_client(fake_registry).get_manifest("sbx/app", "v1")
    assert sha256(MANIFEST) in info.value.message and sha256(b"x") in info.value.message


def test_manifest_by_digest_is_verified(fake_registry: FakeRegistry) -> None:
    wanted = sha256(b"a different manifest")
    manifest_route(
        fake_registry, f"/v2/sbx/app/manifests/{wanted}", MANIFEST, media.OCI_MANIFEST, None
    )
    with pytest.raises(DigestMismatchError, match="does not match its digest"):
        fast_client(fake_registry).get_manifest("sbx/app", wanted)


def test_manifest_without_digest_header(fake_registry: FakeRegistry) -> None:
    manifest_route(fake_registry, "/v2/sbx/app/manifests/v1", MANIFEST, "application/json", None)
    client = fast_client(fake_registry)
    media_type, digest, data = client.get_manifest("sbx/app", "v1")
    assert (media_type, digest, data) == (media.OCI_MANIFEST, sha256(MANIFEST), MANIFEST)
    # HEAD without a digest header falls back to GET.
    desc = client.head_manifest("sbx/app", "v1")
    assert desc is not None and desc.digest == sha256(MANIFEST)


def test_schema1_is_refused(fake_registry: FakeRegistry) -> None:
    body = json.dumps({"schemaVersion": 1, "name": "sbx/app", "tag": "old", "fsLayers": []})
    manifest_route(
        fake_registry, "/v2/sbx/app/manifests/old", body.encode(), media.DOCKER_SCHEMA1_SIGNED, None
    )
    with pytest.raises(ManifestError) as info:
        fast_client(fake_registry).get_manifest("sbx/app", "old")
    assert "schema 1" in info.value.message
    assert info.value.hint and "re-push" in info.value.hint


def test_huge_manifest_is_refused(fake_registry: FakeRegistry) -> None:
    body = b" " * (media.MANIFEST_MAX_BYTES + 10)
    manifest_route(fake_registry, "/v2/sbx/app/manifests/big", body, media.OCI_MANIFEST, None)
    with pytest.raises(RegistryError, match="larger than"):
        fast_client(fake_registry).get_manifest("sbx/app", "big")


def test_stale_keep_alive_connection_is_replaced(fake_registry: FakeRegistry) -> None:
    def closing(h: http.server.BaseHTTPRequestHandler) -> None:
        # Answer as if the connection stays open, then close it: what a registry
        # or proxy does when its idle timeout ends a keep-alive connection.
        _send(h, 200, MANIFEST, media.OCI_MANIFEST)
        h.close_connection = True

    fake_registry.routes[("GET", "/v2/sbx/app/manifests/v1")] = closing
    client = fast_client(fake_registry, retries=1)  # no retries: only the reconnect
    for _ in range(3):
        assert client.get_manifest("sbx/app", "v1")[2] == MANIFEST
        time.sleep(0.05)


def test_plain_http_refused_when_disabled(fake_registry: FakeRegistry) -> None:
    client = fast_client(fake_registry, insecure_http=False)
    with pytest.raises(RegistryTLSError) as info:
        client.ping()
    assert "--tls-verify=false" in (info.value.hint or "")


def test_unreachable_registry() -> None:
    from registry_rig import free_port

    client = RegistryClient(f"127.0.0.1:{free_port()}", timeout=0.5, backoff=0.01)
    with pytest.raises(RegistryConnectionError) as info:
        client.ping()
    assert "refused" in info.value.message.lower()


def upload_routes(fake: FakeRegistry, *, close_after_post: bool, reject_first_put: bool) -> dict:
    """POST opens an upload at a relative Location; PUT stores the body. Returns
    what the server received, per PUT."""
    received: dict[str, list[bytes]] = {"puts": []}

    def post(h: http.server.BaseHTTPRequestHandler) -> None:
        _send(h, 202, b"", headers={"Location": "/upload/1?_state=xyz"})
        if close_after_post:
            h.close_connection = True  # without saying so: a stale keep-alive

    def put(h: http.server.BaseHTTPRequestHandler) -> None:
        body = h.rfile.read(int(h.headers["Content-Length"]))
        received["puts"].append(body)
        if reject_first_put and len(received["puts"]) == 1:
            _send(h, 401, b"{}", headers={"WWW-Authenticate": 'Basic realm="fake"'})
            return
        query = h.path.partition("?")[2]
        assert "_state=xyz" in query
        _send(h, 201, b"", headers={"Docker-Content-Digest": sha256(body)})

    fake.routes[("POST", "/v2/sbx/app/blobs/uploads/")] = post
    fake.routes[("PUT", "/upload/1")] = put
    return received


def test_upload_resent_on_a_stale_connection(fake_registry: FakeRegistry) -> None:
    import io

    received = upload_routes(fake_registry, close_after_post=True, reject_first_put=False)
    client = fast_client(fake_registry, retries=1)
    client.push_blob("sbx/app", sha256(DATA), len(DATA), io.BytesIO(DATA))
    assert received["puts"][-1] == DATA


def test_upload_resent_after_401(fake_registry: FakeRegistry) -> None:
    """A token that expires between POST and PUT: the PUT is answered 401 and must
    be sent again, whole, with fresh credentials."""
    import io

    received = upload_routes(fake_registry, close_after_post=False, reject_first_put=True)
    client = fast_client(fake_registry, retries=1, credentials=Credentials("u", "p"))
    src = io.BytesIO(b"prefix" + DATA)
    src.seek(6)
    progress: list[int] = []
    client.push_blob(
        "sbx/app", sha256(DATA), len(DATA), src, progress=lambda d, t: progress.append(d)
    )
    assert received["puts"] == [DATA, DATA]
    assert progress[-1] == len(DATA)
    put_headers = [h for m, _, h in fake_registry.requests if m == "PUT"]
    assert put_headers[1]["Authorization"].startswith("Basic ")


def test_manifest_5xx_is_retried(fake_registry: FakeRegistry) -> None:
    answers = iter([502, 503, 200])

    def flaky(h: http.server.BaseHTTPRequestHandler) -> None:
        status = next(answers)
        _send(h, status, MANIFEST if status == 200 else b"bad gateway", media.OCI_MANIFEST)

    fake_registry.routes[("GET", "/v2/sbx/app/manifests/v1")] = flaky
    assert fast_client(fake_registry).get_manifest("sbx/app", "v1")[2] == MANIFEST


def test_denied_and_not_a_registry(fake_registry: FakeRegistry) -> None:
    from sandbox.registry.errors import DeniedError, NotFoundError

    def denied(h: http.server.BaseHTTPRequestHandler) -> None:
        _send(h, 403, b'{"errors":[{"code":"DENIED","message":"requested access is denied"}]}')

    fake_registry.routes[("GET", "/v2/sbx/app/manifests/v1")] = denied
    with pytest.raises(DeniedError) as info:
        fast_client(fake_registry).get_manifest("sbx/app", "v1")
    assert info.value.code == "DENIED" and info.value.status == 403
    assert f"{fake_registry.host}/sbx/app:v1" in info.value.message
    assert "requested access is denied" in info.value.message

    fake_registry.routes[("GET", "/v2/")] = lambda h: _send(h, 404, b"not here")
    with pytest.raises(NotFoundError, match="is not a registry"):
        fast_client(fake_registry).ping()
