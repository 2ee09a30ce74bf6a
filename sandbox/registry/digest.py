"""Content digests: validation, and hashing with the digest's own algorithm.

A digest comes from the network (manifests, registry headers) and later names a file
in the content store, so `validate_digest` must run before a digest is used as a
path or in a URL: `sha256:../../x` must never get that far. Only the algorithms the
OCI image spec registers are accepted (image-spec descriptor.md, "Registered
algorithms"): sha256 with 64 and sha512 with 128 lowercase hex characters.
"""

from __future__ import annotations

import hashlib
import re

from sandbox.registry.errors import InvalidDigestError

# algorithm -> exact hex length (image-spec descriptor.md: "the encoded portion
# MUST match /[a-f0-9]{64}/" for sha256 and /[a-f0-9]{128}/ for sha512).
ALGORITHMS: dict[str, int] = {"sha256": 64, "sha512": 128}
_HEX = re.compile(r"[0-9a-f]+")


def validate_digest(digest: str) -> str:
    """Return `digest` unchanged if it is a well-formed supported digest; else raise
    `InvalidDigestError`. Uppercase hex is refused, as the OCI spec requires."""
    if not isinstance(digest, str):
        raise InvalidDigestError(repr(digest), "not a string")
    algorithm, sep, encoded = digest.partition(":")
    if not sep:
        raise InvalidDigestError(digest, "expected ALGORITHM:HEX, e.g. sha256:<64 hex digits>")
    length = ALGORITHMS.get(algorithm)
    if length is None:
        supported = ", ".join(ALGORITHMS)
        raise InvalidDigestError(digest, f"unsupported algorithm {algorithm!r} ({supported})")
    if len(encoded) != length or not _HEX.fullmatch(encoded):
        raise InvalidDigestError(digest, f"{algorithm} needs exactly {length} lowercase hex digits")
    return digest


def split_digest(digest: str) -> tuple[str, str]:
    """(algorithm, hex) of a validated digest."""
    algorithm, _, encoded = validate_digest(digest).partition(":")
    return algorithm, encoded


def hasher_for(digest: str) -> hashlib._Hash:
    """A fresh hash object of the digest's algorithm, to verify content against it."""
    algorithm, _ = split_digest(digest)
    return hashlib.new(algorithm)


def compute_digest(data: bytes, algorithm: str = "sha256") -> str:
    """The digest of `data`, as `ALGORITHM:HEX`."""
    if algorithm not in ALGORITHMS:
        raise InvalidDigestError(f"{algorithm}:", f"unsupported algorithm {algorithm!r}")
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"
