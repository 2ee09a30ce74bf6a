"""Registries for the registry tests: Debian's real `docker-registry`, and a fake.

Real registries (distribution 2.8, /usr/bin/docker-registry) run on 127.0.0.1 on a
free port, with a config and filesystem storage in a temporary directory, and are
stopped by PID at teardown. Three session-scoped fixtures:

- `registry`          plain HTTP, anonymous, deletes enabled;
- `registry_tls_auth` HTTPS with a self-signed certificate made by openssl
                      (SAN 127.0.0.1 and localhost) and htpasswd Basic auth
                      (bcrypt lines from apache2-utils' `htpasswd -B`);
- `registry_token`    Bearer token auth (distribution docs/spec/auth/token.md): the
                      realm is `TokenServer`, a thread in the test process that
                      checks Basic credentials and signs RS256 JWTs with `openssl
                      dgst`, carrying the signing certificate in the `x5c` header; the
                      registry trusts it through `rootcertbundle`.

`FakeRegistry` is an HTTP server in a thread whose routes a test sets, for what
a real registry never does: wrong data, hangs, resets, redirects.

Test modules use these with `pytest_plugins = ["registry_rig"]`. They also import
helpers from here before pytest loads it as a plugin, so it opts out of assertion
rewriting (it has no asserts) to keep pytest from warning: PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.server
import json
import os
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REGISTRY_BIN = "/usr/bin/docker-registry"
SERVICE = "sbx-test-registry"
ISSUER = "sbx-test-issuer"
USER = "sbxuser"
PASSWORD = "s3cret-pass"
START_TIMEOUT = 15.0


def missing_tool_reason(*tools: str) -> str | None:
    """Why the rig cannot run here, or None."""
    for tool in tools:
        if shutil.which(tool) is None and not os.access(tool, os.X_OK):
            return f"{tool} not installed: run scripts/setup.sh"
    return None


def require(*tools: str) -> None:
    reason = missing_tool_reason(*tools)
    if reason:
        pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_cert(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate and key for 127.0.0.1 and localhost."""
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256",
            "-days", "2", "-subj", f"/CN={name}",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return cert, key


def htpasswd_line(user: str, password: str) -> str:
    """A bcrypt htpasswd line: distribution's htpasswd auth accepts only bcrypt."""
    out = subprocess.run(
        ["htpasswd", "-Bbn", user, password], check=True, capture_output=True, text=True
    )
    return out.stdout.strip()


@dataclass
class RunningRegistry:
    """A docker-registry process and what a test needs to talk to it."""

    host: str  # 127.0.0.1:PORT
    scheme: str
    directory: Path
    proc: subprocess.Popen[bytes]
    ca_file: Path | None = None
    username: str | None = None
    password: str | None = None
    token_server: TokenServer | None = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}"

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return (self.directory / "registry.log").read_text()[-4000:]
        return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self.token_server is not None:
            self.token_server.stop()


def _wait_ready(reg: RunningRegistry) -> None:
    ctx = ssl.create_default_context(cafile=str(reg.ca_file)) if reg.ca_file else None
    deadline = time.monotonic() + START_TIMEOUT
    last = ""
    while time.monotonic() < deadline:
        if reg.proc.poll() is not None:
            raise RuntimeError(f"docker-registry exited {reg.proc.returncode}:\n{reg.log()}")
        import http.client

        conn: http.client.HTTPConnection
        if reg.scheme == "https":
            conn = http.client.HTTPSConnection(reg.host, timeout=2, context=ctx)
        else:
            conn = http.client.HTTPConnection(reg.host, timeout=2)
        try:
            conn.request("GET", "/v2/")
            status = conn.getresponse().status
            if status in (200, 401):
                return
            last = f"GET /v2/ answered {status}"
        except OSError as err:
            last = str(err)
        finally:
            conn.close()
        time.sleep(0.05)
    reg.stop()
    raise RuntimeError(f"docker-registry did not answer in {START_TIMEOUT}s ({last}):\n{reg.log()}")


def start_registry(
    directory: Path,
    *,
    tls: bool = False,
    basic_auth: bool = False,
    token_server: TokenServer | None = None,
) -> RunningRegistry:
    """Start docker-registry with a config written to `directory`."""
    require(REGISTRY_BIN, "openssl", *(["htpasswd"] if basic_auth else []))
    directory.mkdir(parents=True, exist_ok=True)
    lines = [
        "version: 0.1",
        "log:",
        "  level: warn",
        "  accesslog:",
        "    disabled: true",
        "storage:",
        "  filesystem:",
        f"    rootdirectory: {directory / 'data'}",
        "  delete:",
        "    enabled: true",
        "http:",
        "  addr: 127.0.0.1:{port}",
        f"  secret: {os.urandom(16).hex()}",
    ]
    ca_file = None
    if tls:
        cert, key = make_cert(directory, "registry")
        lines += ["  tls:", f"    certificate: {cert}", f"    key: {key}"]
        ca_file = cert
    if basic_auth:
        htpasswd = directory / "htpasswd"
        htpasswd.write_text(htpasswd_line(USER, PASSWORD) + "\n")
        lines += ["auth:", "  htpasswd:", "    realm: sbx-test", f"    path: {htpasswd}"]
    if token_server is not None:
        lines += [
            "auth:",
            "  token:",
            f"    realm: {token_server.url}/token",
            f"    service: {SERVICE}",
            f"    issuer: {ISSUER}",
            f"    rootcertbundle: {token_server.cert}",
        ]
    template = "\n".join(lines) + "\n"
    # A free port can be taken between our probe and the registry's bind; retry.
    for _ in range(5):
        port = free_port()
        config = directory / "config.yml"
        config.write_text(template.replace("{port}", str(port)))
        log = open(directory / "registry.log", "wb")  # noqa: SIM115 (the child owns it)
        proc = subprocess.Popen(
            [REGISTRY_BIN, "serve", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        reg = RunningRegistry(
            host=f"127.0.0.1:{port}",
            scheme="https" if tls else "http",
            directory=directory,
            proc=proc,
            ca_file=ca_file,
            username=USER if basic_auth or token_server else None,
            password=PASSWORD if basic_auth or token_server else None,
            token_server=token_server,
        )
        try:
            _wait_ready(reg)
            return reg
        except RuntimeError:
            if "address already in use" not in reg.log():
                raise
    raise RuntimeError("could not find a free port for docker-registry")


class _QuietServer(http.server.ThreadingHTTPServer):
    """Handlers die when a test's client hangs up mid-answer, on purpose; don't
    print those tracebacks into the test output."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


# --- the token server ----------------------------------------------------------
def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    """A Docker token service (docs/spec/auth/token.md) for the token registry.

    Grants what is asked to USER:PASSWORD, pull only to anonymous clients, and
    401 to wrong credentials. Records each request's scopes for the tests."""

    def __init__(self, directory: Path, expires_in: int = 300) -> None:
        require("openssl")
        directory.mkdir(parents=True, exist_ok=True)
        self.cert, self.key = make_cert(directory, "token-signer")
        self._der = ssl.PEM_cert_to_DER_cert(self.cert.read_text())
        self.expires_in = expires_in
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                server._handle(self)

        self._httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def sign(self, claims: dict[str, Any]) -> str:
        header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(self._der).decode()]}
        signing_input = (
            _b64url(json.dumps(header).encode()) + "." + _b64url(json.dumps(claims).encode())
        )
        signature = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", str(self.key)],
            input=signing_input.encode(),
            capture_output=True,
            check=True,
            timeout=30,
        ).stdout
        return signing_input + "." + _b64url(signature)

    def _handle(self, h: http.server.BaseHTTPRequestHandler) -> None:
        url = urllib.parse.urlsplit(h.path)
        query = urllib.parse.parse_qs(url.query)
        scopes = [s for value in query.get("scope", []) for s in value.split()]
        user = None
        auth = h.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
            if (user, password) != (USER, PASSWORD):
                with self._lock:
                    self.requests.append({"scopes": scopes, "user": user, "status": 401})
                _send(h, 401, b'{"details":"wrong credentials"}')
                return
        with self._lock:
            self.requests.append({"scopes": scopes, "user": user, "status": 200})
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            granted = [a for a in actions.split(",") if user or a == "pull"]
            access.append({"type": kind, "name": name, "actions": granted})
        now = int(time.time())
        token = self.sign(
            {
                "iss": ISSUER,
                "sub": user or "",
                "aud": SERVICE,
                "exp": now + self.expires_in,
                "nbf": now - 10,
                "iat": now,
                "jti": os.urandom(8).hex(),
                "access": access,
            }
        )
        body = {"token": token, "expires_in": self.expires_in}
        _send(h, 200, json.dumps(body).encode(), "application/json")


def _send(
    h: http.server.BaseHTTPRequestHandler,
    status: int,
    body: bytes = b"",
    content_type: str = "application/json",
    headers: dict[str, str] | None = None,
) -> None:
    h.send_response(status)
    h.send_header("Content-Type", content_type)
    h.send_header("Content-Length", str(len(body)))
    for name, value in (headers or {}).items():
        h.send_header(name, value)
    h.end_headers()
    if h.command != "HEAD":
        h.wfile.write(body)


# --- the fake registry ------------------------------------------------------------
Route = Callable[[http.server.BaseHTTPRequestHandler], None]


@dataclass
class FakeRegistry:
    """A registry API stand-in whose answers the test chooses, route by route.

    `routes[(METHOD, PATH)]` handles a request; /v2/ answers 200 unless routed.
    Every request is recorded as (method, path, headers)."""

    routes: dict[tuple[str, str], Route] = field(default_factory=dict)
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _any(self) -> None:
                fake.requests.append((self.command, self.path, dict(self.headers)))
                route = fake.routes.get((self.command, self.path.split("?")[0]))
                if route is None and self.path == "/v2/":
                    _send(self, 200, b"{}")
                elif route is None:
                    _send(self, 404, b'{"errors":[{"code":"NOT_FOUND","message":"no route"}]}')
                else:
                    route(self)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _any

        self._httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.host = f"127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self.release.set()  # wake handlers that hang on purpose
        self._httpd.shutdown()
        self._httpd.server_close()

    def paths(self, method: str | None = None) -> list[str]:
        return [p for m, p, _ in self.requests if method is None or m == method]

    # -- canned behaviours ---------------------------------------------------------
    def serve_blob(
        self,
        repository: str,
        data: bytes,
        *,
        digest: str | None = None,
        fail_first: int = 0,
        failure: str = "reset",
        ranges: bool = True,
    ) -> str:
        """Serve `data` as a blob. The first `fail_first` GETs break after half the
        data: "reset" (TCP RST), "hang" (stall until the test ends) or "500".
        Returns the digest it is served under (default: its true digest)."""
        digest = digest or "sha256:" + hashlib.sha256(data).hexdigest()
        state = {"failures": 0}

        def route(h: http.server.BaseHTTPRequestHandler) -> None:
            start = 0
            rng = h.headers.get("Range")
            if ranges and rng and rng.startswith("bytes="):
                start = int(rng[6:].split("-")[0])
            body = data[start:]
            if state["failures"] < fail_first:
                state["failures"] += 1
                if failure == "500":
                    _send(h, 500, b'{"errors":[{"code":"UNKNOWN","message":"boom"}]}')
                    return
                h.send_response(206 if start else 200)
                h.send_header("Content-Length", str(len(body)))
                if start:
                    h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                h.end_headers()
                h.wfile.write(body[: len(body) // 2])
                h.wfile.flush()
                if failure == "hang":
                    self.release.wait(30)
                else:
                    # Let the client read what was sent (a reset makes the kernel
                    # drop data not yet read), then SO_LINGER 0: close() sends RST.
                    self.release.wait(0.2)
                    h.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                h.close_connection = True
                return
            headers = {"Docker-Content-Digest": digest}
            if start:
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            _send(h, 206 if start else 200, body, "application/octet-stream", headers)

        self.routes[("GET", f"/v2/{repository}/blobs/{digest}")] = route
        return digest


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    """A plain-HTTP anonymous docker-registry on 127.0.0.1."""
    reg = start_registry(tmp_path_factory.mktemp("registry-plain"))
    yield reg
    reg.stop()


@pytest.fixture(scope="session")
def registry_tls_auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    """docker-registry with a self-signed certificate and htpasswd Basic auth."""
    reg = start_registry(tmp_path_factory.mktemp("registry-tls"), tls=True, basic_auth=True)
    yield reg
    reg.stop()


@pytest.fixture(scope="session")
def registry_token(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningRegistry]:
    """docker-registry with Bearer token auth from an in-process TokenServer."""
    directory = tmp_path_factory.mktemp("registry-token")
    tokens = TokenServer(directory / "tokens")
    try:
        reg = start_registry(directory, token_server=tokens)
    except BaseException:
        tokens.stop()
        raise
    yield reg
    reg.stop()


@pytest.fixture
def fake_registry() -> Iterator[FakeRegistry]:
    fake = FakeRegistry()
    yield fake
    fake.stop()


# --- tiny images ------------------------------------------------------------------
@dataclass
class SmallImage:
    """A one-layer OCI image made in memory: its blobs and manifest."""

    layer: bytes  # tar+gzip
    diff_id: str
    config: bytes
    manifest: bytes

    @property
    def layer_digest(self) -> str:
        return sha256(self.layer)

    @property
    def config_digest(self) -> str:
        return sha256(self.config)

    @property
    def manifest_digest(self) -> str:
        return sha256(self.manifest)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def make_layer_tar(files: dict[str, bytes]) -> bytes:
    """An uncompressed layer tar of regular files (fixed mtimes: reproducible)."""
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mode = 0o644
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def make_image(files: dict[str, bytes], arch: str = "amd64") -> SmallImage:
    import gzip

    tar = make_layer_tar(files)
    layer = gzip.compress(tar, mtime=0)
    diff_id = sha256(tar)
    config = json.dumps(
        {
            "architecture": arch,
            "os": "linux",
            "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": sha256(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": sha256(layer),
                    "size": len(layer),
                }
            ],
        }
    ).encode()
    return SmallImage(layer, diff_id, config, manifest)
