"""Image reference parsing and digest validation (sandbox.registry.reference, .digest).

The table follows docker's behaviour (distribution/reference normalize_test.go and
reference_test.go); each row is what `docker pull TEXT` would resolve to."""

from __future__ import annotations

import pytest

from sandbox.registry.digest import compute_digest, hasher_for, split_digest, validate_digest
from sandbox.registry.errors import InvalidDigestError, InvalidReferenceError
from sandbox.registry.reference import Reference, api_host, parse_reference

D = "sha256:" + "0123456789abcdef" * 4
D512 = "sha512:" + "ab" * 64


@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest"),
    [
        ("busybox", "docker.io", "library/busybox", "latest", None),
        ("busybox:1.36", "docker.io", "library/busybox", "1.36", None),
        ("busybox:latest", "docker.io", "library/busybox", "latest", None),
        (f"busybox@{D}", "docker.io", "library/busybox", None, D),
        (f"busybox:1.36@{D}", "docker.io", "library/busybox", "1.36", D),
        ("library/busybox", "docker.io", "library/busybox", "latest", None),
        ("user/app", "docker.io", "user/app", "latest", None),
        ("user/app:v1", "docker.io", "user/app", "v1", None),
        ("user/team/app", "docker.io", "user/team/app", "latest", None),
        ("docker.io/busybox", "docker.io", "library/busybox", "latest", None),
        ("docker.io/library/busybox", "docker.io", "library/busybox", "latest", None),
        ("index.docker.io/busybox", "docker.io", "library/busybox", "latest", None),
        ("registry-1.docker.io/a/b", "docker.io", "a/b", "latest", None),
        ("quay.io/podman/stable", "quay.io", "podman/stable", "latest", None),
        ("quay.io/podman/stable:v4", "quay.io", "podman/stable", "v4", None),
        ("quay.io/a", "quay.io", "a", "latest", None),
        ("localhost/app", "localhost", "app", "latest", None),
        ("localhost/app:dev", "localhost", "app", "dev", None),
        ("localhost:5000/a/b:t", "localhost:5000", "a/b", "t", None),
        (f"localhost:5000/a/b@{D}", "localhost:5000", "a/b", None, D),
        ("127.0.0.1:5000/x", "127.0.0.1:5000", "x", "latest", None),
        ("registry:5000/x", "registry:5000", "x", "latest", None),
        ("my-registry.example.com/ns/app:1.0", "my-registry.example.com", "ns/app", "1.0", None),
        ("[::1]:5000/foo:bar", "[::1]:5000", "foo", "bar", None),
        ("[fe80::1]/foo", "[fe80::1]", "foo", "latest", None),
        ("Upper/app", "Upper", "app", "latest", None),  # uppercase first part = a host
        ("a.b/c_d/e__f/g-h/i--j/k.l", "a.b", "c_d/e__f/g-h/i--j/k.l", "latest", None),
        ("app:TAG_with.dots-1", "docker.io", "library/app", "TAG_with.dots-1", None),
        ("app:_tag", "docker.io", "library/app", "_tag", None),
        ("app:" + "t" * 128, "docker.io", "library/app", "t" * 128, None),
        (f"app@{D512}", "docker.io", "library/app", None, D512),
        # A lone "name:port" is a name and a tag, as in docker.
        ("localhost:5000", "docker.io", "library/localhost", "5000", None),
        ("0.1/app", "0.1", "app", "latest", None),
        ("a" * 63 + "g", "docker.io", "library/" + "a" * 63 + "g", "latest", None),
    ],
)
def test_parse(text: str, registry: str, repository: str, tag: str | None, digest: str | None):
    assert parse_reference(text) == Reference(registry, repository, tag, digest)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty reference"),
        ("Busybox", "must be lowercase"),
        ("user/App", "must be lowercase"),
        ("quay.io/Podman/stable", "must be lowercase"),
        ("a" * 64, "64-character hexadecimal"),
        ("busybox:", "empty tag"),
        ("busybox:.tag", "invalid tag"),
        ("busybox:-tag", "invalid tag"),
        ("busybox:" + "t" * 129, "invalid tag"),
        ("busybox:a/b", "invalid registry name"),  # a port must be digits
        ("busybox@", "empty digest"),
        ("busybox@sha256:abc", "64 lowercase hex"),
        ("busybox@sha256:../../../etc/passwd", "64 lowercase hex"),
        ("busybox@sha256:" + "A" * 64, "64 lowercase hex"),
        ("busybox@md5:" + "a" * 32, "unsupported algorithm"),
        ("busybox@" + "a" * 64, "ALGORITHM:HEX"),
        ("a//b", "invalid repository name"),
        ("/a", "invalid repository name"),
        ("a/", "invalid repository name"),
        ("-a", "invalid repository name"),
        ("a-", "invalid repository name"),
        ("a..b", "invalid repository name"),
        ("a___b", "invalid repository name"),
        ("quay.io/", "missing repository name"),
        ("-bad.io/a", "invalid registry name"),
        ("bad_host.io/a", "invalid registry name"),
        ("busy box", "whitespace"),
        (" busybox", "whitespace"),
        ("quay.io/" + "a" * 250, "longer than 255"),
        ("a@b@c", "ALGORITHM:HEX"),
    ],
)
def test_parse_errors(text: str, problem: str) -> None:
    with pytest.raises(InvalidReferenceError) as info:
        parse_reference(text)
    assert problem in str(info.value)
    assert repr(text) in str(info.value)  # the message names the reference


@pytest.mark.parametrize(
    ("text", "canonical", "familiar"),
    [
        ("busybox", "docker.io/library/busybox:latest", "busybox:latest"),
        ("user/app:v1", "docker.io/user/app:v1", "user/app:v1"),
        ("library/a/b", "docker.io/library/a/b:latest", "library/a/b:latest"),
        (f"busybox@{D}", f"docker.io/library/busybox@{D}", f"busybox@{D}"),
        (f"busybox:1@{D}", f"docker.io/library/busybox:1@{D}", f"busybox:1@{D}"),
        ("quay.io/a/b:c", "quay.io/a/b:c", "quay.io/a/b:c"),
        ("localhost:5000/x", "localhost:5000/x:latest", "localhost:5000/x:latest"),
    ],
)
def test_str_and_familiar(text: str, canonical: str, familiar: str) -> None:
    ref = parse_reference(text)
    assert str(ref) == canonical
    assert ref.familiar() == familiar
    # The canonical form parses back to the same reference.
    assert parse_reference(canonical) == ref


def test_api_host_and_manifest_reference() -> None:
    assert parse_reference("busybox").api_host == "registry-1.docker.io"
    assert api_host("docker.io") == "registry-1.docker.io"
    assert parse_reference("quay.io/a").api_host == "quay.io"
    assert parse_reference("localhost:5000/a").api_host == "localhost:5000"
    assert parse_reference("busybox:1").manifest_reference == "1"
    assert parse_reference(f"busybox:1@{D}").manifest_reference == D
    assert parse_reference("busybox").name == "docker.io/library/busybox"
    assert parse_reference("busybox").familiar_name() == "busybox"


def test_with_tag_and_digest() -> None:
    ref = parse_reference(f"busybox:1@{D}")
    assert ref.with_tag("2") == Reference("docker.io", "library/busybox", "2", None)
    assert parse_reference("busybox").with_digest(D).digest == D
    with pytest.raises(InvalidReferenceError):
        ref.with_tag("-x")
    with pytest.raises(InvalidDigestError):
        ref.with_digest("sha256:../x")


def test_reference_is_frozen() -> None:
    ref = parse_reference("busybox")
    with pytest.raises(AttributeError):
        ref.tag = "x"  # type: ignore[misc]


# --- digests -------------------------------------------------------------------------
@pytest.mark.parametrize("digest", [D, D512, "sha256:" + "0" * 64])
def test_validate_digest_ok(digest: str) -> None:
    assert validate_digest(digest) == digest


@pytest.mark.parametrize(
    "digest",
    [
        "",
        "sha256",
        "sha256:",
        "sha256:../../x",
        "sha256:" + "0" * 63 + "/",
        "sha256:" + "0" * 62 + "/..",
        "sha256:" + "0" * 65,
        "sha256:" + "0" * 63,
        "sha256:" + "G" * 64,
        "sha256:" + "A" * 64,
        "SHA256:" + "0" * 64,
        "sha512:" + "0" * 64,
        "sha384:" + "0" * 96,
        "md5:" + "0" * 32,
        ":" + "0" * 64,
        "../sha256:" + "0" * 64,
        "sha256:" + "0" * 64 + "\n",
        "sha256:" + "0" * 64 + "\x00",
    ],
)
def test_validate_digest_rejects(digest: str) -> None:
    with pytest.raises(InvalidDigestError) as info:
        validate_digest(digest)
    assert repr(digest) in str(info.value)


def test_validate_digest_rejects_non_strings() -> None:
    with pytest.raises(InvalidDigestError):
        validate_digest(None)  # type: ignore[arg-type]


def test_digest_helpers() -> None:
    assert compute_digest(b"") == (
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    assert compute_digest(b"x", "sha512").startswith("sha512:")
    assert split_digest(D) == ("sha256", D[7:])
    h = hasher_for(D512)
    assert h.name == "sha512"
    with pytest.raises(InvalidDigestError):
        compute_digest(b"", "md5")
