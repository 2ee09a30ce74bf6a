"""WWW-Authenticate parsing and the token/basic flows of sandbox.registry.auth,
against a scripted token service (the real one is in tests/integration)."""

from __future__ import annotations

import base64
import json
import urllib.parse
from collections.abc import Mapping

import pytest

from sandbox.registry.auth import (
    Authenticator,
    Challenge,
    merge_scopes,
    parse_www_authenticate,
    repository_scope,
)
from sandbox.registry.credentials import Credentials
from sandbox.registry.errors import RegistryError, UnauthorizedError

BEARER = 'Bearer realm="https://auth.example/token",service="reg.example",scope="{}"'


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (
            'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
            'scope="repository:library/busybox:pull"',
            [
                Challenge(
                    "bearer",
                    {
                        "realm": "https://auth.docker.io/token",
                        "service": "registry.docker.io",
                        "scope": "repository:library/busybox:pull",
                    },
                )
            ],
        ),
        ('Basic realm="Registry Realm"', [Challenge("basic", {"realm": "Registry Realm"})]),
        ("basic realm=simple", [Challenge("basic", {"realm": "simple"})]),
        ('BASIC Realm = "spaced"', [Challenge("basic", {"realm": "spaced"})]),
        (
            'Bearer realm="a\\"b\\\\c",error="insufficient_scope"',
            [Challenge("bearer", {"realm": 'a"b\\c', "error": "insufficient_scope"})],
        ),
        (
            'Basic realm="x, y", Bearer realm="r", service="s"',
            [
                Challenge("basic", {"realm": "x, y"}),
                Challenge("bearer", {"realm": "r", "service": "s"}),
            ],
        ),
        (
            "Negotiate abc==, Basic realm=foo",
            [Challenge("negotiate", {}, "abc=="), Challenge("basic", {"realm": "foo"})],
        ),
        ("Bearer", [Challenge("bearer", {})]),
        ("", []),
        (
            'Bearer realm="r",scope="repository:a:pull repository:b:pull,push"',
            [
                Challenge(
                    "bearer", {"realm": "r", "scope": "repository:a:pull repository:b:pull,push"}
                )
            ],
        ),
    ],
)
def test_parse_www_authenticate(header: str, expected: list[Challenge]) -> None:
    assert parse_www_authenticate(header) == expected


def test_challenge_scopes_split_on_spaces() -> None:
    (c,) = parse_www_authenticate('Bearer realm="r",scope="repository:a:pull repository:b:push"')
    assert c.scopes == ["repository:a:pull", "repository:b:push"]


@pytest.mark.parametrize(
    "header", ['Bearer realm="unterminated', '"quoted" realm=x', "Basic realm=x ="]
)
def test_parse_www_authenticate_errors(header: str) -> None:
    with pytest.raises(ValueError):
        parse_www_authenticate(header)


def test_merge_scopes() -> None:
    assert merge_scopes(["repository:a:push", "repository:a:pull", "repository:b:pull"]) == (
        "repository:a:pull,push",
        "repository:b:pull",
    )
    assert merge_scopes(["registry:catalog:*"]) == ("registry:catalog:*",)
    assert merge_scopes([]) == ()
    assert repository_scope("a/b", "pull", "push") == "repository:a/b:pull,push"


class FakeTokenService:
    """Answers token GETs; records them. Tokens are numbered."""

    def __init__(self, *, password: str = "pw", expires_in: int | None = 300) -> None:
        self.calls: list[tuple[str, dict[str, list[str]], Mapping[str, str]]] = []
        self.password = password
        self.expires_in = expires_in
        self.key = "token"

    def __call__(
        self, url: str, headers: Mapping[str, str]
    ) -> tuple[int, Mapping[str, str], bytes]:
        parts = urllib.parse.urlsplit(url)
        query = urllib.parse.parse_qs(parts.query)
        self.calls.append((f"{parts.scheme}://{parts.netloc}{parts.path}", query, dict(headers)))
        auth = headers.get("Authorization")
        if auth:
            _, _, password = base64.b64decode(auth.split()[1]).decode().partition(":")
            if password != self.password:
                return 401, {}, b'{"details":"bad"}'
        body: dict[str, object] = {self.key: f"T{len(self.calls)}"}
        if self.expires_in is not None:
            body["expires_in"] = self.expires_in
        return 200, {}, json.dumps(body).encode()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(
    creds: Credentials | None = None, **kw: object
) -> tuple[Authenticator, FakeTokenService, Clock]:
    service = FakeTokenService(**kw)  # type: ignore[arg-type]
    clock = Clock()
    return Authenticator("reg.example", creds, service, clock=clock), service, clock


PULL_A = repository_scope("a", "pull")
PUSH_A = repository_scope("a", "pull", "push")


def test_anonymous_until_challenged() -> None:
    auth, service, _ = make()
    assert auth.authorization([PULL_A]) is None
    assert auth.scheme is None
    assert service.calls == []


def test_bearer_token_flow_and_reuse() -> None:
    creds = Credentials("user", "pw")
    auth, service, _ = make(creds)
    header = auth.on_unauthorized(BEARER.format(PULL_A), [PULL_A], "reg.example/a")
    assert header == "Bearer T1"
    url, query, headers = service.calls[0]
    assert url == "https://auth.example/token"
    assert query == {"service": ["reg.example"], "scope": [PULL_A], "account": ["user"]}
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"user:pw").decode()
    # Reused for the same scope and for no scope, without asking again.
    assert auth.authorization([PULL_A]) == "Bearer T1"
    assert auth.authorization([]) == "Bearer T1"
    assert len(service.calls) == 1


def test_token_for_union_of_scopes() -> None:
    auth, service, _ = make(Credentials("user", "pw"))
    auth.learn(BEARER.format(PULL_A))
    assert auth.authorization([PULL_A]) == "Bearer T1"
    # Push needs pull,push: a new token; then pull is covered by it too.
    assert auth.authorization([PUSH_A]) == "Bearer T2"
    assert service.calls[1][1]["scope"] == ["repository:a:pull,push"]
    # A mount needs push on the target and pull on the source: both in one token.
    header = auth.on_unauthorized(
        BEARER.format(repository_scope("b", "pull")), [repository_scope("c", "pull", "push")], "x"
    )
    assert header == "Bearer T3"
    assert service.calls[2][1]["scope"] == ["repository:b:pull", "repository:c:pull,push"]
    assert auth.authorization([repository_scope("b", "pull")]) == "Bearer T3"
    assert len(service.calls) == 3


def test_token_expiry() -> None:
    auth, _service, clock = make(expires_in=60)
    auth.learn(BEARER.format(PULL_A))
    assert auth.authorization([PULL_A]) == "Bearer T1"
    clock.now += 45
    assert auth.authorization([PULL_A]) == "Bearer T1"
    clock.now += 10  # within the safety margin before expiry
    assert auth.authorization([PULL_A]) == "Bearer T2"


def test_token_default_lifetime_and_access_token() -> None:
    auth, service, clock = make(expires_in=None)
    service.key = "access_token"
    auth.learn(BEARER.format(PULL_A))
    assert auth.authorization([PULL_A]) == "Bearer T1"
    clock.now += 61
    assert auth.authorization([PULL_A]) == "Bearer T2"


def test_refused_token_is_refetched_on_401() -> None:
    auth, _service, _ = make()
    auth.learn(BEARER.format(PULL_A))
    assert auth.authorization([PULL_A]) == "Bearer T1"
    assert auth.on_unauthorized(BEARER.format(PULL_A), [PULL_A], "x") == "Bearer T2"
    assert auth.authorization([PULL_A]) == "Bearer T2"


def test_anonymous_token_request_has_no_credentials() -> None:
    auth, service, _ = make()
    auth.on_unauthorized(BEARER.format(PULL_A), [PULL_A], "x")
    _, query, headers = service.calls[0]
    assert "Authorization" not in headers
    assert "account" not in query


def test_wrong_password_message() -> None:
    auth, _, _ = make(Credentials("user", "wrong"))
    with pytest.raises(UnauthorizedError) as info:
        auth.on_unauthorized(BEARER.format(PULL_A), [PULL_A], "x")
    assert "check your username/password for reg.example" in info.value.message
    assert "sbx login reg.example" in info.value.message
    assert "wrong" not in info.value.message + (info.value.hint or "")


def test_basic_flow() -> None:
    auth, service, _ = make(Credentials("user", "pw"))
    header = auth.on_unauthorized('Basic realm="r"', [PULL_A], "x")
    assert header == "Basic " + base64.b64encode(b"user:pw").decode()
    assert auth.authorization([PUSH_A]) == header
    assert service.calls == []


def test_basic_without_credentials() -> None:
    auth, _, _ = make()
    with pytest.raises(UnauthorizedError) as info:
        auth.on_unauthorized('Basic realm="r"', [PULL_A], "reg.example/a")
    assert "authentication required for reg.example/a" in info.value.message
    assert info.value.hint and info.value.hint.endswith("log in first: sbx login reg.example")


def test_prefers_bearer_over_basic() -> None:
    auth, _, _ = make(Credentials("user", "pw"))
    auth.learn('Basic realm="b", ' + BEARER.format(PULL_A))
    assert auth.scheme == "bearer"


@pytest.mark.parametrize(
    "header", [None, "", "Negotiate abc", "Bearer service=x", 'Basic realm="x']
)
def test_unusable_challenges(header: str | None) -> None:
    auth, _, _ = make()
    with pytest.raises(RegistryError):
        auth.on_unauthorized(header, [PULL_A], "x")


def test_token_service_errors() -> None:
    def broken(url: str, headers: Mapping[str, str]) -> tuple[int, Mapping[str, str], bytes]:
        return 200, {}, b'{"nothing": 1}'

    auth = Authenticator("reg", None, broken)
    with pytest.raises(RegistryError, match="sent no token"):
        auth.on_unauthorized(BEARER.format(PULL_A), [PULL_A], "x")

    def down(url: str, headers: Mapping[str, str]) -> tuple[int, Mapping[str, str], bytes]:
        return 404, {}, b""

    auth = Authenticator("reg", None, down)
    with pytest.raises(RegistryError, match="answered 404"):
        auth.on_unauthorized(BEARER.format(PULL_A), [PULL_A], "x")


def test_check_credentials_asks_for_a_token_without_scope() -> None:
    auth, service, _ = make(Credentials("user", "pw"))
    auth.learn(BEARER.format(PULL_A))
    auth.check_credentials()
    assert "scope" not in service.calls[0][1]


def test_credentials_repr_hides_password() -> None:
    assert "pw" not in repr(Credentials("user", "pw"))
