"""`RegistryClient`: the OCI distribution API over HTTP(S), with everything verified.

Owns the wire protocol of the OCI distribution spec (opencontainers/distribution-spec
spec.md; Docker's registry HTTP API V2 before it): pinging /v2/, manifests and blobs
by digest, uploads, mounts and tag lists. It does not know where content is stored:
callers pass file objects, and own atomicity (write to a temporary file, rename it
into place after `fetch_blob` returns; on error `fetch_blob` truncates a seekable
output back to where it started, so no partial data is left in it).

Connections, TLS, the plain-HTTP policy and retry timing belong to `transport`.
The rules kept here, and where they come from:
- HTTPS first. Plain HTTP only when HTTPS fails, for a registry that allows it:
  loopback hosts (docker treats 127.0.0.0/8 as insecure by default) or
  `tls_verify=False` (podman's --tls-verify=false tries HTTPS first, then HTTP).
  A certificate that fails verification is never silently downgraded.
- GET /v2/ first (the spec's API version check), which also tells how the registry
  authenticates, so later requests authenticate up front (as podman does).
- Digests are checked against the content: manifests fetched by digest, the
  Docker-Content-Digest header, every blob (hashed while streaming; never held
  in memory). Manifests are capped at 4 MiB.
- Blob downloads follow redirects to storage (S3 and the like), dropping the
  Authorization header on a cross-host redirect (it is the registry's token, and
  a pre-signed URL must not see it), and survive connection resets, timeouts and
  5xx answers: up to `retries` attempts in a row without progress, with
  exponential backoff, resuming with a Range request where the server allows.
- The client is thread-safe: the threads of one pull share it (and its tokens).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import IO, Any

from sandbox.registry.auth import Authenticator, repository_scope
from sandbox.registry.credentials import Credentials
from sandbox.registry.digest import compute_digest, hasher_for, split_digest, validate_digest
from sandbox.registry.errors import (
    CertificateVerifyError,
    DeniedError,
    DigestMismatchError,
    InvalidDigestError,
    InvalidReferenceError,
    ManifestError,
    NotFoundError,
    RegistryConnectionError,
    RegistryError,
    RegistryTLSError,
)
from sandbox.registry.media import (
    MANIFEST_ACCEPT,
    MANIFEST_MAX_BYTES,
    SCHEMA1_TYPES,
    Descriptor,
    detect_media_type,
    parse_manifest,
)
from sandbox.registry.reference import _PATH_RE, _TAG_RE, api_host, normalize_registry
from sandbox.registry.transport import (
    ERROR_BODY_MAX,
    Response,
    Transient,
    Transport,
    is_loopback,
    origin,
    raise_if_transient,
)

# progress(bytes_done, total or None)
Progress = Callable[[int, int | None], None]

USER_AGENT = "sbx/0.1"
READ_CHUNK = 256 * 1024
# Larger blobs go up in PATCH chunks of this size (distribution spec, "Pushing a
# blob in chunks"); smaller ones in one PUT.
DEFAULT_UPLOAD_CHUNK = 64 * 1024 * 1024
MAX_REDIRECTS = 10
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


@dataclass
class _Download:
    done: int
    hasher: Any


class _HashBox:
    """The running hash of the bytes sent so far, replaceable on a re-send."""

    def __init__(self, hasher: Any) -> None:
        self.hasher = hasher


class _UploadReader:
    """A file-like view of `size` bytes of `f` for http.client to send; reports
    progress and hashes what it sends, so a mismatch can be named."""

    def __init__(
        self,
        f: IO[bytes],
        size: int,
        box: _HashBox,
        progress: Progress | None,
        base: int,
        total: int,
    ) -> None:
        self._f = f
        self._left = size
        self._box = box
        self._progress = progress
        self._done = base
        self._total = total
        self.mode = "rb"

    def read(self, n: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        want = self._left if n is None or n < 0 else min(n, self._left)
        data = self._f.read(want)
        if not data:
            raise RegistryError(f"the blob file ended {self._left} bytes short of its size")
        self._left -= len(data)
        self._done += len(data)
        self._box.hasher.update(data)
        if self._progress:
            self._progress(self._done, self._total)
        return data


def _upload_body(
    f: IO[bytes],
    start: int | None,
    offset: int,
    size: int,
    box: _HashBox,
    progress: Progress | None,
    total: int,
) -> Callable[[], _UploadReader]:
    """A factory of the body for one PUT or PATCH. `_request` may have to send a
    body twice (a keep-alive connection found closed, a token that expired on
    the way); each call rewinds the source and the hash to where this body
    starts, which needs a seekable source."""
    snapshot = box.hasher.copy()
    calls = 0

    def make() -> _UploadReader:
        nonlocal calls
        calls += 1
        if calls > 1:
            if start is None:
                raise RegistryConnectionError(
                    "the upload must be sent again, and its source cannot be re-read"
                )
            f.seek(start + offset)
            box.hasher = snapshot.copy()
        return _UploadReader(f, size, box, progress, offset, total)

    return make


def _add_query(url: str, **params: str) -> str:
    parts = urllib.parse.urlsplit(url)
    query = parts.query
    extra = urllib.parse.urlencode(params)
    query = f"{query}&{extra}" if query else extra
    return urllib.parse.urlunsplit(parts._replace(query=query))


def _error_detail(body: bytes) -> tuple[str | None, str]:
    """(code, message) of a distribution error body ({"errors": [{code, message}]})."""
    try:
        doc = json.loads(body)
        first = doc["errors"][0]
        code = str(first.get("code") or "") or None
        message = str(first.get("message") or "")
        return code, message
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        text = body.decode("utf-8", "replace").strip().splitlines()
        return None, text[0][:200] if text else ""


def _tell(f: IO[bytes]) -> int | None:
    try:
        return f.tell() if f.seekable() else None
    except (OSError, AttributeError, ValueError):
        return None


class RegistryClient:
    """A client for one registry. Thread-safe: share one between the threads of a
    pull or push.

    `registry` is the name from the image reference ("docker.io", "quay.io",
    "localhost:5000"); Docker Hub's API host is used for docker.io.
    `credentials` are used for Basic auth and for token requests; None is
    anonymous. `timeout` is per network operation (connect, each read), in
    seconds. `insecure_http`: None allows plain HTTP for loopback registries or
    when tls_verify is False; True or False force it on or off.
    """

    def __init__(
        self,
        registry: str,
        *,
        tls_verify: bool = True,
        ca_file: str | os.PathLike[str] | None = None,
        credentials: Credentials | None = None,
        timeout: float = 30,
        insecure_http: bool | None = None,
        retries: int = 3,
        backoff: float = 0.5,
        user_agent: str = USER_AGENT,
    ) -> None:
        self.registry = normalize_registry(registry)
        self.host = api_host(self.registry)
        self.tls_verify = tls_verify
        if insecure_http is None:
            insecure_http = is_loopback(self.host) or not tls_verify
        self.insecure_http = insecure_http
        self._transport = Transport(
            self.registry,
            self.host,
            tls_verify=tls_verify,
            ca_file=Path(ca_file) if ca_file else None,
            timeout=timeout,
            insecure_http=insecure_http,
            retries=retries,
            backoff=backoff,
            user_agent=user_agent,
        )
        self.auth = Authenticator(self.registry, credentials, self._plain_get)
        self._base: str | None = None
        self._ready_lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------
    def close(self) -> None:
        """Close every idle connection."""
        self._transport.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- public API --------------------------------------------------------------
    def ping(self) -> None:
        """GET /v2/, and check the credentials if the registry wants any (what
        `sbx login` runs). Raises UnauthorizedError for wrong credentials."""
        self._ensure_ready()
        if self.auth.scheme == "basic" and self.auth.credentials is not None:
            resp = self._transport.retry("ping", lambda: self._request("GET", "/v2/", scopes=()))
            status = resp.status
            resp.discard()
            if status == 401:
                raise self.auth.unauthorized(self.registry)
            if status != 200:
                raise RegistryError(
                    f"{self.registry} answered {status} to GET /v2/", registry=self.registry
                )
        elif self.auth.scheme == "bearer":
            self.auth.check_credentials()

    def get_manifest(
        self, repository: str, reference: str, accept: Sequence[str] = MANIFEST_ACCEPT
    ) -> tuple[str, str, bytes]:
        """(media_type, digest, bytes) of a manifest or index, by tag or digest.

        The content is checked against the digest asked for and against the
        Docker-Content-Digest header. Schema 1 manifests are refused."""
        self._check_repo(repository)
        pinned = self._check_manifest_ref(reference)
        image = self._image(repository, reference)

        def go() -> tuple[Message, bytes]:
            resp = self._request(
                "GET",
                f"/v2/{repository}/manifests/{reference}",
                scopes=[repository_scope(repository, "pull")],
                headers={"Accept": ", ".join(accept)},
                follow=True,
            )
            raise_if_transient(resp)
            if resp.status == 200:
                return resp.headers, resp.read_all(MANIFEST_MAX_BYTES)
            raise self._error(resp, image, not_found=f"image not found: {image}")

        headers, data = self._transport.retry(f"fetching the manifest of {image}", go)
        media_type = detect_media_type(data, headers.get("Content-Type"))
        if media_type in SCHEMA1_TYPES:
            parse_manifest(data, media_type)  # raises, with the re-push hint
        digest = self._verify_manifest(image, data, pinned, headers.get("Docker-Content-Digest"))
        return media_type, digest, data

    def head_manifest(
        self, repository: str, reference: str, accept: Sequence[str] = MANIFEST_ACCEPT
    ) -> Descriptor | None:
        """The descriptor of a manifest (media type, digest, size), or None if the
        registry has no such tag or digest. Cheap: no body is transferred unless
        the registry omits the digest header."""
        self._check_repo(repository)
        self._check_manifest_ref(reference)
        image = self._image(repository, reference)

        def go() -> Response:
            resp = self._request(
                "HEAD",
                f"/v2/{repository}/manifests/{reference}",
                scopes=[repository_scope(repository, "pull")],
                headers={"Accept": ", ".join(accept)},
                follow=True,
            )
            raise_if_transient(resp)
            return resp

        resp = self._transport.retry(f"checking {image}", go)
        resp.discard()
        if resp.status == 404:
            return None
        if resp.status != 200:
            raise self._error(resp, image)
        digest = resp.header("Docker-Content-Digest")
        media_type = (resp.header("Content-Type") or "").split(";")[0].strip()
        if not digest or resp.length is None or not media_type:
            media_type, digest, data = self.get_manifest(repository, reference, accept)
            return Descriptor(media_type, digest, len(data))
        try:
            validate_digest(digest)
        except InvalidDigestError as err:
            raise RegistryError(
                f"{self.registry} sent a bad Docker-Content-Digest for {image}: {err.message}",
                registry=self.registry,
            ) from None
        return Descriptor(media_type, digest, resp.length)

    def fetch_blob(
        self,
        repository: str,
        digest: str,
        out: IO[bytes],
        *,
        expected_size: int | None = None,
        progress: Progress | None = None,
    ) -> int:
        """Stream a blob into `out`, verifying its digest (and size, if given).
        Returns the number of bytes written.

        Raises DigestMismatchError if the data is wrong, NotFoundError if the
        registry has no such blob, RegistryConnectionError after `retries`
        failed attempts in a row. On any error a seekable `out` is truncated back
        to its starting position; the caller still owns the file and its name."""
        self._check_repo(repository)
        validate_digest(digest)
        what = f"blob {digest} of {self.registry}/{repository}"
        start = _tell(out)
        state = _Download(0, hasher_for(digest))
        try:
            self._download(repository, digest, out, start, state, expected_size, progress, what)
            if expected_size is not None and state.done != expected_size:
                raise DigestMismatchError(
                    f"{what}: got {state.done} bytes, expected {expected_size}",
                    hint="the registry or a proxy served wrong data; try again",
                    registry=self.registry,
                )
            algorithm, _ = split_digest(digest)
            actual = f"{algorithm}:{state.hasher.hexdigest()}"
            if actual != digest:
                raise DigestMismatchError(
                    f"{what}: content does not match its digest (got {actual})",
                    hint="the registry or a proxy served wrong data; try again, and tell "
                    "the registry's operator if it happens again",
                    registry=self.registry,
                )
        except BaseException:
            if start is not None:
                with contextlib.suppress(OSError, ValueError):
                    out.seek(start)
                    out.truncate()
            raise
        return state.done

    def read_blob(self, repository: str, digest: str, max_size: int = 16 * 1024 * 1024) -> bytes:
        """A small blob (an image config) in memory, verified."""
        buf = io.BytesIO()
        self.fetch_blob(repository, digest, _Capped(buf, max_size, digest))
        return buf.getvalue()

    def blob_exists(self, repository: str, digest: str) -> bool:
        """Whether the repository has the blob (HEAD; a redirect counts as yes)."""
        self._check_repo(repository)
        validate_digest(digest)

        def go() -> int:
            resp = self._request(
                "HEAD",
                f"/v2/{repository}/blobs/{digest}",
                scopes=[repository_scope(repository, "pull")],
            )
            resp.discard()
            if resp.status >= 500:
                raise Transient(f"{resp.status} {resp.reason}")
            if resp.status in (200, *_REDIRECTS):
                return 200
            if resp.status == 404:
                return 404
            raise self._error(resp, f"blob {digest} of {self.registry}/{repository}")

        return self._transport.retry(f"checking blob {digest}", go) == 200

    def mount_blob(self, repository: str, digest: str, from_repository: str) -> bool:
        """Ask the registry to link a blob from another repository instead of
        uploading it (distribution spec, "Mounting a blob from another
        repository"). True if mounted; False if the caller must push it."""
        self._check_repo(repository)
        self._check_repo(from_repository)
        validate_digest(digest)
        query = urllib.parse.urlencode({"mount": digest, "from": from_repository})
        scopes = [
            repository_scope(repository, "pull", "push"),
            repository_scope(from_repository, "pull"),
        ]

        def go() -> bool:
            resp = self._request(
                "POST",
                f"/v2/{repository}/blobs/uploads/?{query}",
                scopes=scopes,
                headers={"Content-Length": "0"},
                body=b"",
            )
            raise_if_transient(resp)
            if resp.status == 201:
                resp.discard()
                return True
            if resp.status == 202:
                # The registry opened an ordinary upload instead; cancel it, the
                # caller pushes the blob through a fresh one.
                location = resp.header("Location")
                resp.discard()
                if location:
                    self._cancel_upload(urllib.parse.urljoin(resp.url, location), scopes)
                return False
            raise self._error(resp, f"mounting {digest} into {self.registry}/{repository}")

        return self._transport.retry(f"mounting blob {digest}", go)

    def push_blob(
        self,
        repository: str,
        digest: str,
        size: int,
        fileobj: IO[bytes],
        *,
        progress: Progress | None = None,
        chunk_size: int = DEFAULT_UPLOAD_CHUNK,
    ) -> None:
        """Upload `size` bytes from `fileobj` as blob `digest`: one PUT up to
        `chunk_size`, PATCH chunks beyond. Retried from the start on transient
        failures when `fileobj` is seekable. Does not check whether the blob is
        already there: call `blob_exists` or `mount_blob` first."""
        self._check_repo(repository)
        validate_digest(digest)
        if size < 0:
            raise ValueError("size must not be negative")
        what = f"blob {digest} to {self.registry}/{repository}"
        start = _tell(fileobj)
        attempts = 0

        def go() -> None:
            nonlocal attempts
            attempts += 1
            if attempts > 1:
                if start is None:
                    raise RegistryConnectionError(
                        f"pushing {what} failed and the source cannot be re-read",
                        registry=self.registry,
                    )
                fileobj.seek(start)
            self._upload(repository, digest, size, fileobj, progress, chunk_size, what)

        self._transport.retry(f"pushing {what}", go)

    def put_manifest(self, repository: str, reference: str, media_type: str, data: bytes) -> str:
        """Upload a manifest or index under a tag or its digest; returns its digest."""
        self._check_repo(repository)
        pinned = self._check_manifest_ref(reference)
        algorithm = split_digest(pinned)[0] if pinned else "sha256"
        digest = compute_digest(data, algorithm)
        image = self._image(repository, reference)
        if pinned and digest != pinned:
            raise DigestMismatchError(
                f"manifest for {image} has digest {digest}", registry=self.registry
            )

        def go() -> str | None:
            resp = self._request(
                "PUT",
                f"/v2/{repository}/manifests/{reference}",
                scopes=[repository_scope(repository, "pull", "push")],
                headers={"Content-Type": media_type, "Content-Length": str(len(data))},
                body=data,
            )
            raise_if_transient(resp)
            if resp.status not in (200, 201, 202):
                raise self._error(resp, f"pushing the manifest of {image}")
            resp.discard()
            return resp.header("Docker-Content-Digest")

        echoed = self._transport.retry(f"pushing the manifest of {image}", go)
        if echoed and echoed != digest and echoed.partition(":")[0] == algorithm:
            raise DigestMismatchError(
                f"{self.registry} stored the manifest of {image} as {echoed}, "
                f"but its content has digest {digest}",
                registry=self.registry,
            )
        return digest

    def tags_list(self, repository: str, page_size: int = 1000) -> list[str]:
        """Every tag of a repository, following pagination (Link: rel="next")."""
        self._check_repo(repository)
        name = f"{self.registry}/{repository}"
        tags: list[str] = []
        path: str | None = f"/v2/{repository}/tags/list?n={page_size}"
        pages = 0
        while path and pages < 10_000:
            pages += 1
            url = path

            def go(url: str = url) -> tuple[bytes, str | None, str]:
                resp = self._request("GET", url, scopes=[repository_scope(repository, "pull")])
                raise_if_transient(resp)
                if resp.status == 200:
                    return resp.read_all(MANIFEST_MAX_BYTES), resp.header("Link"), resp.url
                raise self._error(resp, name, not_found=f"repository not found: {name}")

            body, link, here = self._transport.retry(f"listing the tags of {name}", go)
            try:
                page = json.loads(body).get("tags") or []
            except (ValueError, AttributeError):
                raise RegistryError(f"{self.registry} sent a malformed tag list") from None
            tags.extend(str(t) for t in page)
            path = _next_link(link, here)
        return tags

    # -- transport ---------------------------------------------------------------
    def _plain_get(self, url: str, headers: Mapping[str, str]) -> tuple[int, Message, bytes]:
        """GET an absolute URL (the token realm) and read it; used by the
        Authenticator, with this client's TLS policy and retries."""

        def go() -> tuple[int, Message, bytes]:
            resp = self._transport.open("GET", url, headers)
            if resp.status >= 500:
                resp.discard()
                raise Transient(f"token service answered {resp.status}")
            return resp.status, resp.headers, resp.read_all(1024 * 1024)

        return self._transport.retry(f"getting a token for {self.registry}", go)

    def _ensure_ready(self) -> None:
        """Pick https or http, and learn how the registry authenticates, from
        GET /v2/ (the "API version check" of the distribution spec). Runs once."""
        if self._base is not None:
            return
        with self._ready_lock:
            if self._base is not None:
                return
            schemes = ["https", "http"] if self.insecure_http else ["https"]
            first_error: RegistryError | None = None
            for scheme in schemes:
                base = f"{scheme}://{self.host}"
                fallback = scheme == "https" and len(schemes) > 1
                try:
                    resp = self._probe(base, single_try=fallback)
                except RegistryTLSError as err:
                    # A certificate that fails verification is a real TLS server
                    # we must not talk past; anything else may be a plain HTTP one.
                    if not fallback or isinstance(err, CertificateVerifyError):
                        raise
                    first_error = err
                    continue
                except RegistryConnectionError as err:
                    if not fallback:
                        raise
                    first_error = err
                    continue
                if resp.status == 401:
                    self.auth.learn(resp.header("WWW-Authenticate"))
                    resp.discard()
                elif resp.status == 200:
                    resp.discard()
                else:
                    raise self._error(
                        resp,
                        f"{self.registry}/v2/",
                        not_found=f"{self.host} is not a registry (GET /v2/ answered 404)",
                    )
                self._base = base  # last: other threads go ahead once this is set
                return
            assert first_error is not None
            raise first_error

    def _probe(self, base: str, *, single_try: bool) -> Response:
        def go() -> Response:
            resp = self._transport.open("GET", f"{base}/v2/", {})
            raise_if_transient(resp)
            return resp

        if single_try:
            try:
                return go()
            except Transient as err:
                raise RegistryConnectionError(
                    f"cannot reach {self.registry}: {err.reason}", registry=self.registry
                ) from None
        return self._transport.retry(f"reaching {self.registry}", go)

    def _request(
        self,
        method: str,
        path: str,
        *,
        scopes: Iterable[str],
        headers: Mapping[str, str] | None = None,
        body: Any = None,
        follow: bool = False,
    ) -> Response:
        """A request to the registry (path, or absolute URL from a Location
        header), authenticated, with one re-authentication on 401 and redirects
        followed if `follow`. The Authorization header only ever goes to the
        registry's own origin."""
        self._ensure_ready()
        assert self._base is not None
        url = urllib.parse.urljoin(self._base, path)
        scopes = list(scopes)
        send = dict(headers or {})
        same_origin = origin(url) == origin(self._base)
        if same_origin:
            authorization = self.auth.authorization(scopes)
            if authorization:
                send["Authorization"] = authorization
        resp = self._transport.open(method, url, send, body)
        if resp.status == 401 and same_origin:
            challenge = resp.header("WWW-Authenticate")
            resp.discard()
            what = self._scope_subject(scopes)
            send["Authorization"] = self.auth.on_unauthorized(challenge, scopes, what)
            resp = self._transport.open(method, url, send, body)
        redirects = 0
        while follow and resp.status in _REDIRECTS:
            location = resp.header("Location")
            resp.discard()
            redirects += 1
            if not location or redirects > MAX_REDIRECTS:
                raise RegistryError(
                    f"too many or broken redirects from {url}", registry=self.registry
                )
            target = urllib.parse.urljoin(url, location)
            if origin(target) != origin(url):
                # RFC 9110 15.4 leaves credentials on redirects to the client; the
                # token is for the registry, and storage URLs are pre-signed.
                send.pop("Authorization", None)
            if resp.status == 303 and method != "HEAD":
                method, body = "GET", None
            url = target
            resp = self._transport.open(method, url, send, body)
        return resp

    # -- blobs --------------------------------------------------------------------
    def _download(
        self,
        repository: str,
        digest: str,
        out: IO[bytes],
        start: int | None,
        state: _Download,
        expected_size: int | None,
        progress: Progress | None,
        what: str,
    ) -> None:
        failures = 0
        high_water = 0
        delay = self._transport.backoff
        while True:
            try:
                self._download_attempt(
                    repository, digest, out, start, state, expected_size, progress, what
                )
                return
            except Transient as err:
                # Count failures in a row: an attempt that got further than any
                # before made progress, so a flaky but moving transfer goes on.
                if state.done > high_water:
                    high_water = state.done
                    failures = 0
                    delay = self._transport.backoff
                failures += 1
                if failures >= self._transport.retries:
                    raise self._transport.gave_up(f"downloading {what}", err, failures) from None
                time.sleep(delay)
                delay *= 2

    def _download_attempt(
        self,
        repository: str,
        digest: str,
        out: IO[bytes],
        start: int | None,
        state: _Download,
        expected_size: int | None,
        progress: Progress | None,
        what: str,
    ) -> None:
        headers = {}
        if state.done and start is not None:
            headers["Range"] = f"bytes={state.done}-"
        resp = self._request(
            "GET",
            f"/v2/{repository}/blobs/{digest}",
            scopes=[repository_scope(repository, "pull")],
            headers=headers,
            follow=True,
        )
        try:
            if resp.status == 206 and state.done and _range_start(resp) == state.done:
                pass  # resumed where we were
            elif resp.status == 200:
                if state.done:
                    # No resume: start over, from the caller's starting position.
                    if start is None:
                        raise RegistryConnectionError(
                            f"downloading {what}: the transfer broke and the output "
                            "cannot be rewound",
                            registry=self.registry,
                        )
                    out.seek(start)
                    out.truncate()
                    state.done = 0
                    state.hasher = hasher_for(digest)
            elif resp.status >= 500 or resp.status == 416:
                raise Transient(f"{resp.status} {resp.reason}")
            else:
                raise self._error(resp, what, not_found=f"{what} not found")
            length = resp.length
            total = (
                expected_size
                if expected_size is not None
                else (state.done + length if length is not None else None)
            )
            while True:
                chunk = resp.read_chunk(READ_CHUNK)
                if not chunk:
                    break
                state.done += len(chunk)
                if expected_size is not None and state.done > expected_size:
                    raise DigestMismatchError(
                        f"{what}: more than the expected {expected_size} bytes",
                        hint="the registry or a proxy served wrong data",
                        registry=self.registry,
                    )
                state.hasher.update(chunk)
                out.write(chunk)
                if progress:
                    progress(state.done, total)
            # http.client's read(n) reports a body cut short of its Content-Length
            # as a plain EOF (only chunked bodies raise IncompleteRead): check it.
            remaining = resp.raw.length
            if (remaining is not None and remaining > 0) or (
                expected_size is not None and state.done < expected_size
            ):
                raise Transient("connection closed before the end of the blob")
        finally:
            resp.close() if resp.raw.fp is not None else resp.release()

    def _start_upload(self, repository: str) -> str:
        resp = self._request(
            "POST",
            f"/v2/{repository}/blobs/uploads/",
            scopes=[repository_scope(repository, "pull", "push")],
            headers={"Content-Length": "0"},
            body=b"",
        )
        raise_if_transient(resp)
        if resp.status != 202:
            raise self._error(resp, f"pushing to {self.registry}/{repository}")
        location = resp.header("Location")
        resp.discard()
        if not location:
            raise RegistryError(
                f"{self.registry} opened an upload without a Location", registry=self.registry
            )
        # Location may be relative (distribution spec: "<location> ... MAY be
        # absolute or relative"); resolve against the URL that answered.
        return urllib.parse.urljoin(resp.url, location)

    def _upload(
        self,
        repository: str,
        digest: str,
        size: int,
        fileobj: IO[bytes],
        progress: Progress | None,
        chunk_size: int,
        what: str,
    ) -> None:
        scopes = [repository_scope(repository, "pull", "push")]
        location = self._start_upload(repository)
        start = _tell(fileobj)
        box = _HashBox(hasher_for(digest))
        sent = 0
        if size > chunk_size > 0:
            while sent < size:
                n = min(chunk_size, size - sent)
                resp = self._request(
                    "PATCH",
                    location,
                    scopes=scopes,
                    headers={
                        "Content-Type": "application/octet-stream",
                        # distribution spec, "Pushing a blob in chunks": an
                        # inclusive range with no unit.
                        "Content-Range": f"{sent}-{sent + n - 1}",
                        "Content-Length": str(n),
                    },
                    body=_upload_body(fileobj, start, sent, n, box, progress, size),
                )
                raise_if_transient(resp)
                if resp.status != 202:
                    raise self._upload_error(resp, what, digest, box.hasher)
                next_location = resp.header("Location")
                resp.discard()
                if next_location:
                    location = urllib.parse.urljoin(resp.url, next_location)
                sent += n
            body: Any = b""
            length = 0
        else:
            body = _upload_body(fileobj, start, 0, size, box, progress, size)
            length = size
        resp = self._request(
            "PUT",
            _add_query(location, digest=digest),
            scopes=scopes,
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(length)},
            body=body,
        )
        raise_if_transient(resp)
        if resp.status not in (201, 204):
            raise self._upload_error(resp, what, digest, box.hasher)
        echoed = resp.header("Docker-Content-Digest")
        resp.discard()
        if echoed and echoed.partition(":")[0] == digest.partition(":")[0] and echoed != digest:
            raise DigestMismatchError(
                f"{self.registry} stored {what} as {echoed}", registry=self.registry
            )

    def _upload_error(self, resp: Response, what: str, digest: str, hasher: Any) -> RegistryError:
        err = self._error(resp, f"pushing {what}")
        actual = f"{digest.partition(':')[0]}:{hasher.hexdigest()}"
        if err.code == "DIGEST_INVALID" or (err.status == 400 and actual != digest):
            return DigestMismatchError(
                f"pushing {what}: the data sent has digest {actual}",
                hint="the local copy of this blob is corrupt; remove the image and pull "
                "or build it again",
                registry=self.registry,
                status=err.status,
                code=err.code,
            )
        return err

    def _cancel_upload(self, url: str, scopes: Sequence[str]) -> None:
        with contextlib.suppress(Transient, RegistryError):
            self._request("DELETE", url, scopes=scopes).discard()

    # -- helpers ------------------------------------------------------------------
    def _scope_subject(self, scopes: Sequence[str]) -> str:
        """What a request was about, for messages: registry/repository."""
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            if kind == "repository":
                return f"{self.registry}/{rest.rpartition(':')[0]}"
        return self.registry

    def _image(self, repository: str, reference: str) -> str:
        sep = "@" if ":" in reference else ":"
        return f"{self.registry}/{repository}{sep}{reference}"

    @staticmethod
    def _check_repo(repository: str) -> None:
        # The name goes into URL paths: only the reference grammar's characters.
        if not _PATH_RE.fullmatch(repository or ""):
            raise InvalidReferenceError(repository, "invalid repository name")

    @staticmethod
    def _check_manifest_ref(reference: str) -> str | None:
        """The digest if `reference` is one (validated), None for a valid tag."""
        if ":" in reference:
            return validate_digest(reference)
        if not _TAG_RE.fullmatch(reference):
            raise InvalidReferenceError(reference, "invalid tag")
        return None

    def _verify_manifest(
        self, image: str, data: bytes, pinned: str | None, header: str | None
    ) -> str:
        if pinned:
            actual = compute_digest(data, split_digest(pinned)[0])
            if actual != pinned:
                raise DigestMismatchError(
                    f"manifest of {image} does not match its digest (got {actual})",
                    hint="the registry or a proxy served wrong data",
                    registry=self.registry,
                )
        if header:
            try:
                algorithm, _ = split_digest(header)
            except InvalidDigestError as err:
                raise RegistryError(
                    f"{self.registry} sent a bad Docker-Content-Digest for {image}: {err.message}",
                    registry=self.registry,
                ) from None
            actual = compute_digest(data, algorithm)
            if actual != header:
                raise DigestMismatchError(
                    f"manifest of {image}: content has digest {actual}, but the registry "
                    f"says {header}",
                    hint="the registry or a proxy served wrong data",
                    registry=self.registry,
                )
            return pinned or header
        return pinned or compute_digest(data)

    def _error(self, resp: Response, what: str, *, not_found: str | None = None) -> RegistryError:
        """The typed error for a response we cannot use; reads and releases it."""
        try:
            body = resp.read_all(ERROR_BODY_MAX)
        except (Transient, RegistryError):
            body = b""
        code, message = _error_detail(body)
        status = resp.status
        detail = f"{code}: {message}" if code else message
        suffix = f" ({detail})" if detail else ""
        if status == 401:
            err: RegistryError = self.auth.unauthorized(what, detail)
        elif status == 403:
            err = DeniedError(
                f"denied: access to {what} is denied{suffix}",
                hint="check the repository name and that your account may use it "
                f"(sbx login {self.registry})",
                registry=self.registry,
            )
        elif status == 404:
            err = NotFoundError(
                not_found or f"{what} not found",
                hint="check the image name and tag" if not_found and "image" in not_found else None,
                registry=self.registry,
            )
        elif status == 429:
            err = RegistryError(
                f"too many requests to {self.registry} ({what})",
                hint="wait and try again; logged-in users get higher limits on Docker Hub",
                registry=self.registry,
            )
        else:
            err = RegistryError(
                f"{self.registry} answered {status} {resp.reason} for {what}{suffix}",
                registry=self.registry,
            )
        err.status, err.code = status, code
        return err


class _Capped:
    """A writable that refuses more than `limit` bytes (for in-memory blobs)."""

    def __init__(self, buf: IO[bytes], limit: int, digest: str) -> None:
        self._buf = buf
        self._left = limit
        self._limit = limit
        self._digest = digest

    def write(self, data: bytes) -> int:
        self._left -= len(data)
        if self._left < 0:
            raise ManifestError(f"blob {self._digest} is larger than {self._limit} bytes")
        return self._buf.write(data)

    def seekable(self) -> bool:
        return self._buf.seekable()

    def tell(self) -> int:
        return self._buf.tell()

    def seek(self, pos: int) -> int:
        self._left = self._limit - pos
        return self._buf.seek(pos)

    def truncate(self, size: int | None = None) -> int:
        return self._buf.truncate(size)


def _range_start(resp: Response) -> int | None:
    # Content-Range: bytes START-END/TOTAL (RFC 9110 14.4)
    value = resp.header("Content-Range") or ""
    unit, _, spec = value.partition(" ")
    if unit != "bytes":
        return None
    first = spec.partition("-")[0]
    return int(first) if first.isdigit() else None


def _next_link(link: str | None, here: str) -> str | None:
    """The URL of rel="next" in a Link header (RFC 8288), resolved against `here`."""
    if not link:
        return None
    for part in link.split(","):
        target, _, params = part.partition(";")
        target = target.strip()
        if (
            target.startswith("<")
            and target.endswith(">")
            and 'rel="next"' in params.replace(" ", "").replace("rel=next", 'rel="next"')
        ):
            return urllib.parse.urljoin(here, target[1:-1])
    return None


__all__ = ["Progress", "RegistryClient"]
