"""HTTP plumbing for the registry client: connections, TLS, retries.

Owns how bytes reach a registry, not what they mean (that is `client`):
- a pool of keep-alive connections per (scheme, host:port), each used by one
  request at a time (http.client connections are not thread-safe), so that a
  few threads can download layers in parallel over a few reused connections;
- one TLS context: system CAs, plus `ca_file` and the *.crt files of the
  certs.d directories docker and podman read (containers-certs.d(5)), or no
  verification at all when tls_verify is False;
- the plain-HTTP policy: loopback hosts (docker treats 127.0.0.0/8 as insecure
  by default) or an explicit opt-in;
- failures sorted into Transient (resets, timeouts, 5xx: worth retrying) and
  the rest, and `retry` with exponential backoff.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import os
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from email.message import Message
from pathlib import Path
from typing import Any, TypeVar

from sandbox.registry.errors import (
    CertificateVerifyError,
    RegistryConnectionError,
    RegistryError,
    RegistryTLSError,
)

T = TypeVar("T")

SEND_BLOCK = 256 * 1024
ERROR_BODY_MAX = 64 * 1024
MAX_IDLE_PER_HOST = 8


def is_loopback(host: str) -> bool:
    """Whether host (with or without :port, IPv6 in brackets) is this machine."""
    name = host
    if name.startswith("["):
        name = name[1 : name.find("]")]
    elif name.count(":") == 1:
        name = name.partition(":")[0]
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def certs_d_dirs(host: str) -> list[Path]:
    """Per-registry CA directories, as containers-certs.d(5) and docker read them."""
    config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return [
        config / "containers" / "certs.d" / host,
        Path("/etc/containers/certs.d") / host,
        Path("/etc/docker/certs.d") / host,
    ]


class Transient(Exception):
    """A failure worth retrying: a reset, a timeout, a 5xx. Never escapes the
    registry package: `Transport.retry` turns the last one into a RegistryConnectionError."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def origin(url: str) -> tuple[str, str]:
    """(scheme, host:port) of a URL: what decides where credentials may go."""
    parts = urllib.parse.urlsplit(url)
    return parts.scheme, parts.netloc.lower()


def describe(err: BaseException) -> str:
    """A short reason for a network failure, for messages."""
    if isinstance(err, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(err, http.client.IncompleteRead):
        return "connection closed in the middle of the data"
    if isinstance(err, http.client.RemoteDisconnected):
        return "connection closed by the server"
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return str(err) or type(err).__name__


class Response:
    """An HTTP response; its connection returns to the pool once fully read."""

    def __init__(
        self,
        transport: Transport,
        key: tuple[str, str],
        conn: http.client.HTTPConnection,
        raw: http.client.HTTPResponse,
        url: str,
    ) -> None:
        self._transport = transport
        self._key = key
        self._conn: http.client.HTTPConnection | None = conn
        self.raw = raw
        self.url = url
        self.status = raw.status
        self.reason = raw.reason
        self.headers: Message = raw.headers

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    @property
    def length(self) -> int | None:
        value = self.header("Content-Length")
        return int(value) if value and value.isdigit() else None

    def read_chunk(self, size: int) -> bytes:
        try:
            return self.raw.read(size)
        except (OSError, http.client.HTTPException) as err:
            self.close()
            raise Transient(describe(err)) from err

    def read_all(self, limit: int) -> bytes:
        """The whole body, refusing one larger than `limit` bytes."""
        data = self.read_chunk(limit + 1)
        if len(data) > limit:
            self.close()
            raise RegistryError(
                f"response from {self.url} is larger than {limit} bytes",
                registry=self._transport.registry,
            )
        self.release()
        return data

    def discard(self) -> None:
        """Drop the body: read a small one to keep the connection, close otherwise."""
        try:
            if self.length is not None and self.length <= ERROR_BODY_MAX:
                self.raw.read()
        except (OSError, http.client.HTTPException):
            self.close()
        self.release()

    def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self.raw.isclosed() and not self.raw.will_close:
            self._transport._put_conn(self._key, conn)
        else:
            self.raw.close()
            conn.close()

    def close(self) -> None:
        conn, self._conn = self._conn, None
        self.raw.close()
        if conn is not None:
            conn.close()


def raise_if_transient(resp: Response) -> None:
    """5xx answers are worth retrying (distribution spec: 5xx are server errors,
    e.g. a storage backend hiccup); the caller's _retry does that."""
    if resp.status >= 500:
        resp.discard()
        raise Transient(f"{resp.status} {resp.reason}")


class Transport:
    """Connections to one registry (and the hosts it sends us to: token realm,
    blob storage). Thread-safe."""

    def __init__(
        self,
        registry: str,
        host: str,
        *,
        tls_verify: bool,
        ca_file: Path | None,
        timeout: float,
        insecure_http: bool,
        retries: int,
        backoff: float,
        user_agent: str,
    ) -> None:
        self.registry = registry
        self.host = host
        self.tls_verify = tls_verify
        self.ca_file = ca_file
        self.timeout = timeout
        self.insecure_http = insecure_http
        self.retries = max(1, retries)
        self.backoff = backoff
        self.user_agent = user_agent
        self._ssl: ssl.SSLContext | None = None
        self._lock = threading.Lock()
        self._idle: dict[tuple[str, str], list[http.client.HTTPConnection]] = {}

    def close(self) -> None:
        """Close every idle connection."""
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()

    def idle_connections(self) -> int:
        """How many keep-alive connections wait in the pool (for diagnostics)."""
        with self._lock:
            return sum(len(conns) for conns in self._idle.values())

    def ssl_context(self) -> ssl.SSLContext:
        """The TLS context for every HTTPS connection, made once."""
        with self._lock:
            if self._ssl is not None:
                return self._ssl
        ctx = ssl.create_default_context()
        if not self.tls_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        else:
            cas = [self.ca_file] if self.ca_file else []
            for directory in certs_d_dirs(self.host):
                with contextlib.suppress(OSError):
                    cas.extend(sorted(directory.glob("*.crt")))
            for ca in cas:
                try:
                    ctx.load_verify_locations(cafile=str(ca))
                except (OSError, ssl.SSLError) as err:
                    raise RegistryTLSError(
                        f"cannot load CA certificate {ca}: {describe(err)}",
                        registry=self.registry,
                    ) from None
        with self._lock:
            self._ssl = ctx
        return ctx

    def _get_conn(self, key: tuple[str, str]) -> tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            idle = self._idle.get(key)
            if idle:
                return idle.pop(), True
        scheme, netloc = key
        conn: http.client.HTTPConnection
        if scheme == "https":
            conn = http.client.HTTPSConnection(
                netloc, timeout=self.timeout, context=self.ssl_context(), blocksize=SEND_BLOCK
            )
        else:
            conn = http.client.HTTPConnection(netloc, timeout=self.timeout, blocksize=SEND_BLOCK)
        return conn, False

    def _put_conn(self, key: tuple[str, str], conn: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if len(idle) < MAX_IDLE_PER_HOST:
                idle.append(conn)
                return
        conn.close()

    def http_allowed(self, host: str) -> bool:
        """Whether plain HTTP may be used to `host`."""
        return self.insecure_http or is_loopback(host)

    def open(self, method: str, url: str, headers: Mapping[str, str], body: Any = None) -> Response:
        """One HTTP exchange, no auth or redirect logic. A keep-alive connection
        the server already closed is replaced once, transparently. Network
        failures raise Transient; TLS failures RegistryTLSError."""
        parts = urllib.parse.urlsplit(url)
        scheme, netloc = parts.scheme, parts.netloc
        if scheme not in ("https", "http") or not netloc:
            raise RegistryError(f"unsupported URL {url!r}", registry=self.registry)
        if scheme == "http" and not self.http_allowed(netloc):
            raise RegistryError(
                f"refusing plain HTTP to {netloc}",
                hint="use --tls-verify=false if this registry has no TLS",
                registry=self.registry,
            )
        target = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
        key = (scheme, netloc.lower())
        send_headers = {"User-Agent": self.user_agent, **headers}
        for attempt in (1, 2):
            conn, reused = self._get_conn(key)
            try:
                payload = body() if callable(body) else body
                conn.request(method, target, body=payload, headers=send_headers)
                raw = conn.getresponse()
            except ssl.SSLCertVerificationError as err:
                conn.close()
                raise self._tls_error(netloc, err) from None
            except ssl.SSLError as err:
                conn.close()
                # An EOF or reset inside TLS is the network (or a stale keep-alive
                # connection), not a TLS problem; anything else (wrong version,
                # alerts) will not go away by trying again.
                network = isinstance(
                    err, ssl.SSLEOFError | ssl.SSLZeroReturnError | ssl.SSLSyscallError
                )
                if network and reused and attempt == 1:
                    continue
                if network:
                    raise Transient(f"{netloc}: {describe(err)}") from err
                raise RegistryTLSError(
                    f"TLS handshake with {netloc} failed: {err.reason or err}",
                    hint="if this registry speaks plain HTTP, use --tls-verify=false",
                    registry=self.registry,
                ) from None
            except socket.gaierror as err:
                conn.close()
                raise RegistryConnectionError(
                    f"cannot resolve {parts.hostname}: {err.strerror}",
                    hint="check the registry name",
                    registry=self.registry,
                ) from None
            except (ConnectionError, http.client.BadStatusLine) as err:
                conn.close()
                if reused and attempt == 1:
                    continue  # the server closed an idle keep-alive connection
                raise Transient(f"{netloc}: {describe(err)}") from err
            except (OSError, http.client.HTTPException) as err:
                conn.close()
                raise Transient(f"{netloc}: {describe(err)}") from err
            except BaseException:
                conn.close()
                raise
            return Response(self, key, conn, raw, url)
        raise AssertionError("unreachable")

    def _tls_error(self, netloc: str, err: ssl.SSLCertVerificationError) -> RegistryTLSError:
        reason = err.verify_message or err.reason or str(err)
        host = netloc.rsplit(":", 1)[0] if not netloc.endswith("]") else netloc
        return CertificateVerifyError(
            f"cannot verify the TLS certificate of {netloc}: {reason}",
            hint=(
                f"add the registry's CA certificate (--cert-dir, or "
                f"/etc/containers/certs.d/{netloc}/ca.crt), or, if you trust the "
                f"network to {host}, use --tls-verify=false"
            ),
            registry=self.registry,
        )

    def retry(self, what: str, fn: Callable[[], T]) -> T:
        """Run `fn`, again after a Transient failure, up to `retries` times in
        all, with exponential backoff; then raise RegistryConnectionError."""
        delay = self.backoff
        for attempt in range(1, self.retries + 1):
            try:
                return fn()
            except Transient as err:
                if attempt == self.retries:
                    raise self.gave_up(what, err, attempt) from None
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    def gave_up(self, what: str, err: Transient, attempts: int) -> RegistryConnectionError:
        return RegistryConnectionError(
            f"{what}: {err.reason} (gave up after {attempts} attempts)",
            hint=f"check the network and that {self.registry} is up; "
            "a slow registry may need a longer timeout",
            registry=self.registry,
        )
