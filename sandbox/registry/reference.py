"""Image references, parsed and normalized as docker and podman do.

Owns the grammar of `[REGISTRY/]REPOSITORY[:TAG][@DIGEST]`. It follows
distribution/reference (reference/regexp.go and normalize.go in
github.com/distribution/reference):

    reference       := name [ ":" tag ] [ "@" digest ]
    name            := [domain "/"] path-component ["/" path-component]*
    domain          := host [":" port-number]
    host            := domain-name | "[" IPv6 "]"
    path-component  := alpha-numeric [separator alpha-numeric]*
    alpha-numeric   := /[a-z0-9]+/
    separator       := /[_.]|__|[-]+/
    tag             := /[\\w][\\w.-]{0,127}/

and docker's normalization (`ParseNormalizedNamed`): the first component is a
registry only if it contains "." or ":", is "localhost", or has an uppercase letter
(repository names never do); otherwise the name is on docker.io, and a one-component
name there lives under "library/". A reference with neither tag nor digest gets the
tag "latest". Pure functions; no I/O.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from sandbox.registry.digest import validate_digest
from sandbox.registry.errors import InvalidDigestError, InvalidReferenceError

DOCKER_HUB = "docker.io"
# The host the Docker Hub registry API is served from; "docker.io" itself only
# redirects (docker's registry.IndexServer / DefaultV2Registry).
DOCKER_HUB_API = "registry-1.docker.io"
# Names that docker and podman also accept for Docker Hub, normalized to docker.io.
_DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
DEFAULT_TAG = "latest"
# distribution/reference NameTotalLengthMax.
NAME_MAX = 255

_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_RE = re.compile(
    rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
)
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH_RE = re.compile(rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*")
_TAG_RE = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)
_HEX64_RE = re.compile(r"[a-f0-9]{64}")


@dataclass(frozen=True)
class Reference:
    """A normalized image reference.

    `registry` is the name users write (docker.io, quay.io, localhost:5000), not the
    API host; `tag` is None only when a digest was given without a tag."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """registry/repository, e.g. docker.io/library/busybox."""
        return f"{self.registry}/{self.repository}"

    @property
    def api_host(self) -> str:
        """The host:port to send registry API requests to."""
        return api_host(self.registry)

    @property
    def manifest_reference(self) -> str:
        """What goes after /manifests/ in the API: the digest if pinned, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    def familiar_name(self) -> str:
        """The short name docker prints: busybox, user/app, quay.io/a/b."""
        if self.registry == DOCKER_HUB:
            rest = self.repository
            if rest.startswith("library/") and rest.count("/") == 1:
                rest = rest.removeprefix("library/")
            return rest
        return self.name

    def familiar(self) -> str:
        """The short form with tag and digest: busybox:latest, user/app@sha256:..."""
        return self.familiar_name() + self._suffix()

    def with_tag(self, tag: str) -> Reference:
        if not _TAG_RE.fullmatch(tag):
            raise InvalidReferenceError(tag, "invalid tag")
        return dataclasses.replace(self, tag=tag, digest=None)

    def with_digest(self, digest: str) -> Reference:
        return dataclasses.replace(self, digest=validate_digest(digest))

    def _suffix(self) -> str:
        suffix = f":{self.tag}" if self.tag else ""
        if self.digest:
            suffix += f"@{self.digest}"
        return suffix

    def __str__(self) -> str:
        """Canonical form: docker.io/library/busybox:latest."""
        return self.name + self._suffix()


def api_host(registry: str) -> str:
    """The API host of a registry name: docker.io -> registry-1.docker.io."""
    return DOCKER_HUB_API if registry in _DOCKER_HUB_ALIASES else registry


def normalize_registry(registry: str) -> str:
    """docker.io for any of Docker Hub's names; any other registry unchanged."""
    return DOCKER_HUB if registry in _DOCKER_HUB_ALIASES else registry


def _is_domain(component: str) -> bool:
    # normalize.go splitDockerDomain: "." or ":" or "localhost", or uppercase
    # (repositories are lowercase, so "Foo/bar" must mean a host called Foo).
    return (
        "." in component
        or ":" in component
        or component == "localhost"
        or component.lower() != component
    )


def parse_reference(text: str) -> Reference:
    """Parse and normalize an image reference as `docker pull` would.

    Raises `InvalidReferenceError` naming the reference and what is wrong."""
    if not text:
        raise InvalidReferenceError(text, "empty reference")
    if text != text.strip() or any(c.isspace() for c in text):
        raise InvalidReferenceError(text, "contains whitespace")
    if _HEX64_RE.fullmatch(text):
        # normalize.go: an image ID is not a name (docker refuses it the same way).
        raise InvalidReferenceError(
            text,
            "cannot use a 64-character hexadecimal string as a repository name",
            hint="to pin an image by digest write NAME@sha256:<64 hex digits>",
        )

    name_tag, at, digest = text.partition("@")
    if at:
        if not digest:
            raise InvalidReferenceError(text, "empty digest after '@'")
        try:
            validate_digest(digest)
        except InvalidDigestError as err:
            raise InvalidReferenceError(text, err.problem) from None

    # A tag is a ":" after the last "/" (a ":" before it is a registry port).
    tag: str | None = None
    colon = name_tag.rfind(":")
    if colon > name_tag.rfind("/") and not name_tag.endswith("]"):
        name_tag, tag = name_tag[:colon], name_tag[colon + 1 :]
        if not _TAG_RE.fullmatch(tag):
            raise InvalidReferenceError(
                text,
                f"invalid tag {tag!r}" if tag else "empty tag after ':'",
                hint="a tag is up to 128 letters, digits, '_', '.' and '-', "
                "not starting with '.' or '-'",
            )

    first, slash, rest = name_tag.partition("/")
    if slash and _is_domain(first):
        registry, path = first, rest
        if not _DOMAIN_RE.fullmatch(registry):
            raise InvalidReferenceError(text, f"invalid registry name {registry!r}")
        registry = normalize_registry(registry)
    else:
        registry, path = DOCKER_HUB, name_tag

    if not path:
        raise InvalidReferenceError(text, "missing repository name")
    if path.lower() != path:
        raise InvalidReferenceError(text, "repository name must be lowercase")
    if not _PATH_RE.fullmatch(path):
        raise InvalidReferenceError(
            text,
            f"invalid repository name {path!r}",
            hint="path components are lowercase letters and digits, joined by "
            "'.', '_', '__' or dashes, separated by '/'",
        )
    if registry == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    if len(registry) + 1 + len(path) > NAME_MAX:
        raise InvalidReferenceError(text, f"name longer than {NAME_MAX} characters")

    if tag is None and not digest:
        tag = DEFAULT_TAG
    return Reference(registry=registry, repository=path, tag=tag, digest=digest or None)
