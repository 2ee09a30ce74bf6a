"""The OCI registry half of sbx: references, the HTTP client, auth, credentials.

Modules, each with one concern:

- `reference`   image references as docker and podman spell them (distribution/reference)
- `digest`      digest validation, done before a digest is ever used as a path or URL
- `media`       media types, manifest/index parsing, platform selection
- `auth`        WWW-Authenticate parsing; anonymous, Basic and Bearer-token auth
- `credentials` auth.json / ~/.docker/config.json lookup, `sbx login` storage
- `client`      `RegistryClient`: manifests and blobs over HTTP(S), verified
- `transport`   connections, TLS, the plain-HTTP policy, retries
- `errors`      the typed errors all of them raise

This package talks HTTP and reads credential files; it never touches namespaces,
the image store or the runtime (DESIGN.md). Importing the package itself is cheap:
import the module you need (`from sandbox.registry.reference import parse_reference`).
"""
