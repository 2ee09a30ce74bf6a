"""Registry authentication: anonymous, Basic, and Bearer tokens.

Owns the auth conversation with a registry, not the transport: the client hands
an `Authenticator` the WWW-Authenticate header of each 401 and a function that
performs a GET, and gets back the Authorization header to (re)send.

- WWW-Authenticate is parsed per RFC 7235 section 4.1 (challenge = auth-scheme
  [ token68 / #auth-param ], auth-param values are tokens or quoted-strings), which
  also allows several challenges in one header.
- Basic (RFC 7617) sends the stored username and password with each request.
- Bearer follows the Docker registry token authentication spec
  (distribution docs/spec/auth/token.md): GET the challenge's realm with its
  `service` and one `scope` parameter per scope, with Basic credentials if there
  are any; the answer has `token` or `access_token`, `expires_in` (default 60 s).
  Tokens are cached per set of scopes and reused until shortly before they
  expire. A 401 whose challenge names another scope (a push needs pull,push;
  a cross-repository mount needs pull on the source) gets a token for the union of
  what the request needs and what the challenge asks for
  (docs/spec/auth/scope.md).

Secrets (passwords, tokens) never appear in messages.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from sandbox.registry.credentials import Credentials
from sandbox.registry.errors import RegistryError, UnauthorizedError

# (status, headers, body) of a GET; the client supplies it with its TLS policy.
HttpGet = Callable[[str, Mapping[str, str]], tuple[int, Mapping[str, str], bytes]]

# The token spec: "if omitted, a default of 60 seconds should be assumed".
DEFAULT_TOKEN_LIFETIME = 60.0
TOKEN_MAX_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Challenge:
    """One challenge of a WWW-Authenticate header; scheme and keys are lowercased."""

    scheme: str
    params: Mapping[str, str] = field(default_factory=dict)
    token68: str | None = None

    @property
    def scopes(self) -> list[str]:
        # The token spec allows several space-separated scopes in one parameter.
        return self.params.get("scope", "").split()


_TCHAR = set("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_TOKEN68 = _TCHAR - set("!#$%&'*^`|") | set("/=")


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def skip_ws(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in " \t":
            self.pos += 1

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def token(self, chars: set[str] = _TCHAR) -> str:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] in chars:
            self.pos += 1
        return self.text[start : self.pos]

    def quoted(self) -> str:
        # quoted-string = DQUOTE *( qdtext / quoted-pair ) DQUOTE (RFC 7230 3.2.6)
        assert self.peek() == '"'
        self.pos += 1
        out = []
        while self.pos < len(self.text):
            c = self.text[self.pos]
            self.pos += 1
            if c == "\\" and self.pos < len(self.text):
                out.append(self.text[self.pos])
                self.pos += 1
            elif c == '"':
                return "".join(out)
            else:
                out.append(c)
        raise ValueError("unterminated quoted-string")

    def lookahead_param(self) -> bool:
        """Whether the text at pos is `token BWS "="` (an auth-param), not a new
        challenge's scheme or a token68."""
        save = self.pos
        name = self.token()
        self.skip_ws()
        is_param = bool(name) and self.peek() == "="
        if is_param:
            # token68 may end in "=" padding: "abc==" is not name "abc" + "=".
            after = self.text[self.pos + 1 : self.pos + 2]
            is_param = after != "=" and after not in ("", ",")
        self.pos = save
        return is_param


def parse_www_authenticate(header: str) -> list[Challenge]:
    """Parse a WWW-Authenticate header value into its challenges.

    Raises ValueError on text that is not a challenge list."""
    s = _Scanner(header)
    challenges: list[Challenge] = []
    while True:
        s.skip_ws()
        while s.peek() == ",":
            s.pos += 1
            s.skip_ws()
        if not s.peek():
            break
        scheme = s.token()
        if not scheme:
            raise ValueError(f"expected an auth scheme at {s.text[s.pos :]!r}")
        params: dict[str, str] = {}
        token68: str | None = None
        s.skip_ws()
        if s.peek() and s.peek() != "," and not s.lookahead_param():
            token68 = s.token(_TOKEN68)
            if not token68:
                raise ValueError(f"unexpected {s.peek()!r} after scheme {scheme!r}")
            s.skip_ws()
        else:
            while s.peek():
                s.skip_ws()
                if not s.lookahead_param():
                    break
                name = s.token().lower()
                s.skip_ws()
                s.pos += 1  # "="
                s.skip_ws()
                value = s.quoted() if s.peek() == '"' else s.token()
                params[name] = value
                s.skip_ws()
                if s.peek() != ",":
                    break
                s.pos += 1
                s.skip_ws()
        challenges.append(Challenge(scheme.lower(), params, token68))
        s.skip_ws()
        if s.peek() and s.peek() != "," and not s.peek().isalnum():
            raise ValueError(f"unexpected {s.peek()!r} in challenge")
    return challenges


def repository_scope(repository: str, *actions: str) -> str:
    """repository:NAME:ACTIONS (docs/spec/auth/scope.md)."""
    return f"repository:{repository}:{','.join(actions)}"


def merge_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    """Merge scopes on the same resource and sort them, so that equal needs give
    equal cache keys: [repo:a:pull, repo:a:push] -> (repo:a:pull,push,)."""
    merged: dict[tuple[str, str], set[str]] = {}
    for scope in scopes:
        kind, _, rest = scope.partition(":")
        name, _, actions = rest.rpartition(":")
        if not kind or not name:
            # Not type:name:actions; keep it as it is (registries define others).
            merged.setdefault((scope, ""), set())
            continue
        merged.setdefault((kind, name), set()).update(a for a in actions.split(",") if a)
    out = []
    for (kind, name), actions in sorted(merged.items()):
        out.append(f"{kind}:{name}:{','.join(sorted(actions))}" if name else kind)
    return tuple(out)


def _covers(granted: tuple[str, ...], needed: tuple[str, ...]) -> bool:
    """Whether a token granted for `granted` scopes serves a request needing `needed`."""
    have: dict[str, set[str]] = {}
    for scope in granted:
        resource, _, actions = scope.rpartition(":")
        have.setdefault(resource, set()).update(actions.split(","))
    for scope in needed:
        resource, _, actions = scope.rpartition(":")
        got = have.get(resource)
        if got is None:
            return False
        if "*" not in got and not {a for a in actions.split(",") if a} <= got:
            return False
    return True


@dataclass
class _Token:
    value: str
    scopes: tuple[str, ...]
    valid_until: float


class Authenticator:
    """The auth state for one registry; safe to share between threads."""

    def __init__(
        self,
        registry: str,
        credentials: Credentials | None,
        http_get: HttpGet,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry
        self.credentials = credentials
        self._get = http_get
        self._clock = clock
        self._lock = threading.Lock()
        self._challenge: Challenge | None = None
        self._tokens: list[_Token] = []
        self.token_requests = 0  # for diagnostics and tests

    # -- what the client calls -------------------------------------------------
    @property
    def scheme(self) -> str | None:
        """'basic', 'bearer', or None while the registry has asked for nothing."""
        return self._challenge.scheme if self._challenge else None

    def learn(self, www_authenticate: str | None) -> Challenge | None:
        """Remember how the registry wants to be authenticated (from a 401 to
        GET /v2/), so later requests can authenticate up front."""
        challenge = self._pick(www_authenticate)
        with self._lock:
            self._challenge = challenge
        return challenge

    def authorization(self, scopes: Iterable[str]) -> str | None:
        """The Authorization header for a request needing `scopes`, fetching a
        token if none is cached; None when the registry needs no auth (yet)."""
        challenge = self._challenge
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            return self._basic() if self.credentials else None
        if challenge.scheme == "bearer":
            needed = merge_scopes(scopes)
            with self._lock:
                token = self._cached(needed)
                if token is None:
                    token = self._fetch(challenge, needed)
            return f"Bearer {token.value}"
        return None

    def on_unauthorized(
        self, www_authenticate: str | None, scopes: Iterable[str], what: str
    ) -> str:
        """After a 401: the Authorization header to retry with. Raises
        UnauthorizedError when nothing we have can satisfy the registry."""
        challenge = self._pick(www_authenticate)
        with self._lock:
            self._challenge = challenge
        if challenge.scheme == "basic":
            if self.credentials is None:
                raise self.unauthorized(what)
            return self._basic()
        needed = merge_scopes([*scopes, *challenge.scopes])
        with self._lock:
            # A fresh token: the cached one for these scopes was just refused.
            self._tokens = [t for t in self._tokens if t.scopes != needed]
            token = self._fetch(challenge, needed)
        return f"Bearer {token.value}"

    def check_credentials(self) -> None:
        """What `sbx login` needs: make the registry judge our credentials now
        (a token for no scope, as podman's login does)."""
        challenge = self._challenge
        if challenge is None or challenge.scheme != "bearer":
            return
        with self._lock:
            self._fetch(challenge, ())

    def unauthorized(self, what: str, detail: str = "") -> UnauthorizedError:
        """The error for a refused request, worded by whether we had credentials."""
        extra = f" ({detail})" if detail else ""
        if self.credentials is None:
            # Registries answer 401, not 404, to anonymous requests for
            # repositories that do not exist (Docker Hub does), so say both.
            return UnauthorizedError(
                f"authentication required for {what}{extra}",
                hint=f"check the name; if the image is private, log in first: "
                f"sbx login {self.registry}",
                registry=self.registry,
                status=401,
            )
        return UnauthorizedError(
            f"unauthorized: check your username/password for {self.registry} "
            f"(sbx login {self.registry}){extra}",
            hint=f"credentials for {self.credentials.username!r} were read from "
            f"{self.credentials.source or 'the caller'}; they may also lack access to {what}",
            registry=self.registry,
            status=401,
        )

    # -- internals ---------------------------------------------------------------
    def _pick(self, header: str | None) -> Challenge:
        if not header:
            raise RegistryError(
                f"{self.registry} answered 401 without a WWW-Authenticate challenge",
                registry=self.registry,
                status=401,
            )
        try:
            challenges = parse_www_authenticate(header)
        except ValueError as err:
            raise RegistryError(
                f"{self.registry} sent a malformed WWW-Authenticate header: {err}",
                registry=self.registry,
            ) from None
        # Prefer Bearer: it scopes access, where Basic sends the password each time.
        for scheme in ("bearer", "basic"):
            for challenge in challenges:
                if challenge.scheme == scheme:
                    if scheme == "bearer" and not challenge.params.get("realm"):
                        continue
                    return challenge
        schemes = ", ".join(c.scheme for c in challenges) or "none"
        raise RegistryError(
            f"{self.registry} asks for an unsupported authentication scheme ({schemes})",
            hint="sbx supports Basic and Bearer token authentication",
            registry=self.registry,
        )

    def _basic(self) -> str:
        assert self.credentials is not None
        pair = f"{self.credentials.username}:{self.credentials.password}"
        return "Basic " + base64.b64encode(pair.encode()).decode()

    def _cached(self, needed: tuple[str, ...]) -> _Token | None:
        now = self._clock()
        self._tokens = [t for t in self._tokens if t.valid_until > now]
        for token in self._tokens:
            if _covers(token.scopes, needed):
                return token
        return None

    def _fetch(self, challenge: Challenge, scopes: tuple[str, ...]) -> _Token:
        realm = challenge.params["realm"]
        query: list[tuple[str, str]] = []
        if challenge.params.get("service"):
            query.append(("service", challenge.params["service"]))
        query.extend(("scope", s) for s in scopes)
        headers: dict[str, str] = {}
        if self.credentials is not None:
            query.append(("account", self.credentials.username))
            headers["Authorization"] = self._basic()
        sep = "&" if urllib.parse.urlsplit(realm).query else "?"
        url = realm + (sep + urllib.parse.urlencode(query) if query else "")
        self.token_requests += 1
        status, _, body = self._get(url, headers)
        what = f"{self.registry} ({', '.join(scopes) or 'login'})"
        if status == 401:
            raise self.unauthorized(what)
        if status == 403:
            raise self.unauthorized(what, "the token service refused access")
        if status != 200:
            raise RegistryError(
                f"the token service of {self.registry} answered {status}",
                hint=f"token realm: {realm}",
                registry=self.registry,
                status=status,
            )
        try:
            doc = json.loads(body[:TOKEN_MAX_BYTES])
            value = doc.get("token") or doc.get("access_token")
        except (ValueError, AttributeError):
            value = None
            doc = {}
        if not isinstance(value, str) or not value:
            raise RegistryError(
                f"the token service of {self.registry} sent no token",
                hint=f"token realm: {realm}",
                registry=self.registry,
            )
        lifetime = doc.get("expires_in")
        if not isinstance(lifetime, (int, float)) or lifetime <= 0:
            lifetime = DEFAULT_TOKEN_LIFETIME
        # Stop using a token a little before it expires: clocks and queues drift.
        margin = min(10.0, lifetime / 4)
        token = _Token(value, scopes, self._clock() + lifetime - margin)
        self._tokens.append(token)
        return token
