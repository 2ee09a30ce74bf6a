"""Typed errors of the registry package; all are `SbxError`s with a hint.

Library code raises these; only `sandbox.cli` prints them. Each error names what
it was about (registry, repository, digest, reference) so that the one line the
user sees is enough to act on.
"""

from __future__ import annotations

from sandbox.errors import SbxError


class InvalidReferenceError(SbxError):
    """An image reference that does not follow the distribution/reference grammar.

    Not called `ReferenceError`: that would shadow Python's builtin of that name in
    every module that imports it."""

    def __init__(self, reference: str, problem: str, hint: str | None = None) -> None:
        self.reference = reference
        self.problem = problem
        super().__init__(f"invalid image reference {reference!r}: {problem}", hint)


class InvalidDigestError(SbxError):
    """A digest that is not `ALGORITHM:HEX` of a supported algorithm and length."""

    def __init__(self, digest: str, problem: str) -> None:
        self.digest = digest
        self.problem = problem
        super().__init__(f"invalid digest {digest!r}: {problem}")


class ManifestError(SbxError):
    """A manifest or index sbx cannot use (malformed, schema 1, unknown type)."""


class PlatformError(SbxError):
    """No manifest in an index matches the wanted platform, or a bad --platform."""


class CredentialsError(SbxError):
    """A credentials file that cannot be read, parsed or written."""


class RegistryError(SbxError):
    """A registry answered with an error, or could not be reached."""

    def __init__(
        self,
        message: str,
        hint: str | None = None,
        *,
        registry: str | None = None,
        status: int | None = None,
        code: str | None = None,
    ) -> None:
        self.registry = registry
        self.status = status
        # The first error code from the registry's JSON body (distribution spec,
        # "Error Codes"), e.g. MANIFEST_UNKNOWN, DENIED, DIGEST_INVALID.
        self.code = code
        super().__init__(message, hint)


class UnauthorizedError(RegistryError):
    """401: no or wrong credentials, or a token the registry would not accept."""


class DeniedError(RegistryError):
    """403: the credentials are fine but do not give access to this resource."""


class NotFoundError(RegistryError):
    """404 for a manifest, tag, blob or repository."""


class DigestMismatchError(RegistryError):
    """Content that does not hash to the digest it was asked for, or has the wrong size."""


class RegistryTLSError(RegistryError):
    """The TLS handshake failed, most often an unknown certificate authority."""


class CertificateVerifyError(RegistryTLSError):
    """The server's certificate failed verification: never fall back to HTTP."""


class RegistryConnectionError(RegistryError):
    """The registry could not be reached, or it hung or dropped the connection
    on every attempt."""
