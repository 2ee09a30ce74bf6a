"""Pulling an image from a registry into the store, and finding images already there.

Owns the order of a pull, the same order containers/image's `copy.Image` keeps:

1. resolve the reference to one image manifest: GET the tag or digest; an index (OCI
   index or Docker manifest list) is narrowed to one platform with
   `media.select_manifest` (the host's, or --platform), and that manifest is fetched
   by digest. Schema 1 and unknown media types are refused by the registry package.
2. store the manifest (and the index) as blobs, fetch the config blob, parse it, and
   check that its diff_ids match the manifest's layers;
3. download the layer blobs that are not in the store yet, in parallel (at most
   MAX_WORKERS threads, podman's `--max-parallel-downloads`-style bound), each one
   streamed into `Store.ingest` so it is hashed on the way and renamed into place only
   when its digest and size are right;
4. join every download thread, then unpack the missing layers in order, base first,
   each into the store by its chain id (image-spec config.md, "Layer ChainID");
5. `Store.add_image` makes the image visible under its name: until then nothing of
   the pull is reachable from the index, so a pull that fails or is killed leaves
   only unreferenced blobs and layers (reused by the next pull, or pruned).

Why the unpacking is injected (`Unpacker.runner`): to give files their real owners
the extractor must run as root of the user's namespace, and this package must not
touch namespaces (DESIGN.md). The CLI passes `lambda fn: userns.call(fn, maps)`.
`userns.call` forks, and forking a process that has other threads running is unsafe
(a lock held by another thread stays locked forever in the child), and
unshare(CLONE_NEWUSER) refuses a multithreaded caller (EINVAL, unshare(2)); so every
download thread is joined before the first layer is unpacked, and the download
threads use Stores whose `remove_tree` never forks (see `_thread_store`).

The whole pull runs inside `Store.protect()`, so a concurrent `sbx image prune` or
`sbx rmi` waits instead of deleting a blob this pull is about to reference.

This module and push.py are where the image package meets the registry client: they
take it as a `RegistrySource` object, and only `connect` (used when the caller gives
none) imports the network code, lazily.
"""

from __future__ import annotations

import contextlib
import functools
import re
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal, Protocol

from sandbox.errors import SbxError
from sandbox.images.config import ImageConfig, check_layers, parse_config
from sandbox.images.progress import Progress, Quiet
from sandbox.images.store import (
    AmbiguousImage,
    ImageNotFound,
    ImageRecord,
    LayerNotFound,
    Store,
    StoreError,
    chain_id_of,
)
from sandbox.registry import media
from sandbox.registry.errors import InvalidReferenceError, ManifestError
from sandbox.registry.reference import Reference, parse_reference

if TYPE_CHECKING:
    from sandbox.images.extract import ExtractStats, Owners
    from sandbox.images.whiteout import WhiteoutFormat
    from sandbox.registry.client import RegistryClient
    from sandbox.registry.credentials import Credentials

MAX_WORKERS = 3
# A download whose server cannot resume (no Range support) after a broken
# connection is started over this many times in a fresh temporary file.
RESTARTS = 2

Policy = Literal["missing", "always", "never"]
POLICIES: tuple[Policy, ...] = ("missing", "always", "never")

_FULL_ID = re.compile(r"(?:sha256:)?[0-9a-f]{64}")


class PullError(SbxError):
    """A pull that cannot go on: the image is not a container image, a layer is
    inconsistent with the config, and the like."""


class LayerUnpackError(PullError):
    """A layer that could not be unpacked (unsafe, corrupt, not what its DiffID says)."""


class RegistrySource(Protocol):
    """What a pull needs from a registry; `RegistryClient` is one, tests pass fakes."""

    registry: str

    def get_manifest(self, repository: str, reference: str) -> tuple[str, str, bytes]: ...

    def fetch_blob(
        self,
        repository: str,
        digest: str,
        out: IO[bytes],
        *,
        expected_size: int | None = None,
        progress: Callable[[int, int | None], None] | None = None,
    ) -> int: ...


# unpack_runner(fn): run fn() where the layer's owners can be real, return its result.
UnpackRunner = Callable[[Callable[[], Any]], Any]


def run_here(fn: Callable[[], Any]) -> Any:
    """An unpack runner that runs in this process (owners="xattr", or tests as root)."""
    return fn()


@dataclass(frozen=True)
class Unpacker:
    """How layers are unpacked: where (`runner`) and in which on-disk form.

    owners "real": chown to the tar's ids (runner must be root of a user namespace
    with the subordinate ranges mapped); "xattr": files stay the user's, owners go in
    user.containers.override_stat (no subordinate ids). whiteout_format "chardev":
    0/0 character devices and user.overlay.opaque, what kernel overlayfs mounted in
    a user namespace reads (the lead's storage driver). The options are recorded
    with each layer; the store refuses to reuse a layer unpacked another way."""

    runner: UnpackRunner = run_here
    owners: Owners = "real"
    whiteout_format: WhiteoutFormat = "chardev"

    def options(self) -> dict[str, str]:
        return {"owners": self.owners, "whiteouts": self.whiteout_format}


@dataclass(frozen=True)
class ResolvedImage:
    """One image manifest chosen for a reference, with the index it came from."""

    ref: Reference
    manifest_digest: str
    manifest_media_type: str
    manifest_bytes: bytes
    manifest: media.Manifest
    index_digest: str | None = None
    index_bytes: bytes | None = None
    platform: media.Platform | None = None  # the index entry's platform, if any


@dataclass
class PullResult:
    image: ImageRecord
    config: ImageConfig
    resolved: ResolvedImage
    downloaded: list[str] = field(default_factory=list)  # blob digests fetched
    unpacked: list[str] = field(default_factory=list)  # chain ids unpacked now
    warnings: list[str] = field(default_factory=list)


# --- naming -------------------------------------------------------------------------


def store_name(ref: Reference) -> str:
    """The name the store keeps for a reference: registry/repository:tag, or
    registry/repository@digest when a digest pins it (docker ignores a tag next to
    a digest, and so does the store: the digest is what was pulled)."""
    if ref.digest:
        return f"{ref.name}@{ref.digest}"
    return f"{ref.name}:{ref.tag or 'latest'}"


def _is_id(text: str) -> bool:
    return bool(_FULL_ID.fullmatch(text))


def _explicit_domain(text: str) -> bool:
    """Whether the user wrote a registry (docker's rule: the first component has a
    '.' or ':' or is localhost)."""
    first, slash, _ = text.partition("/")
    return bool(slash) and ("." in first or ":" in first or first == "localhost")


def find_local(store: Store, text: str) -> ImageRecord:
    """The stored image that `text` names (see find_local_name)."""
    return find_local_name(store, text)[0]


def find_local_name(store: Store, text: str) -> tuple[ImageRecord, str | None]:
    """The stored image that `text` names, and the stored name it matched (None
    when `text` matched the image's id), as podman's libimage looks images up:

    - a full id (64 hex, with or without sha256:) is an id;
    - else the name, normalized (busybox -> docker.io/library/busybox:latest); a
      repository@digest also matches an image with that manifest digest under that
      repository (podman's RepoDigests);
    - else, for a name without a registry, a stored name whose repository ends in
      "/" + the name as typed, with the same tag (libimage's findImageInRepotags:
      `sbx rmi sbx/busybox:1` finds 127.0.0.1:5000/sbx/busybox:1), if only one
      image has one;
    - else an id prefix of 3 or more hex digits.
    Raises ImageNotFound or AmbiguousImage."""
    if _is_id(text):
        return store.resolve(text if text.startswith("sha256:") else f"sha256:{text}"), None
    try:
        ref = parse_reference(text)
    except InvalidReferenceError:
        return store.resolve(text), None
    name = store_name(ref)
    with contextlib.suppress(ImageNotFound):
        return store.resolve(name), name
    images = store.list_images()
    if ref.digest:
        for record in images:
            if record.manifest_digest == ref.digest and any(
                split_name(n)[0] == ref.name for n in record.names
            ):
                return record, None
    typed = text.partition("@")[0]
    if ref.digest is None and not _explicit_domain(typed):
        last = typed.rpartition("/")[2]
        typed_repo = typed.rpartition(":")[0] if ":" in last else typed
        found: dict[str, tuple[ImageRecord, str]] = {}
        for record in images:
            for n in record.names:
                repo, tag, _ = split_name(n)
                if repo.endswith("/" + typed_repo) and tag == ref.tag:
                    found.setdefault(record.id, (record, n))
        if len(found) > 1:
            raise AmbiguousImage(text, sorted(found))
        if found:
            return next(iter(found.values()))
    try:
        return store.resolve(text), None
    except ImageNotFound:
        raise ImageNotFound(text) from None


def split_name(name: str) -> tuple[str, str | None, str | None]:
    """(repository, tag, digest) of a stored name."""
    if "@" in name:
        repo, _, digest = name.partition("@")
        return repo, None, digest
    repo, _, tag = name.rpartition(":")
    if "/" in tag:  # a registry port, no tag (the store never keeps such names)
        return name, None, None
    return repo, tag, None


def repo_digests(record: ImageRecord) -> list[str]:
    """podman's RepoDigests: the digest names the image was pulled under, and
    repository@current-manifest for a repository it has only a tag in."""
    out = [n for n in record.names if split_name(n)[2] is not None]
    with_digest = {split_name(n)[0] for n in out}
    for n in record.names:
        repo, tag, _ = split_name(n)
        if tag is not None and repo not in with_digest:
            name = f"{repo}@{record.manifest_digest}"
            if name not in out:
                out.append(name)
    return out


def repo_tags(record: ImageRecord) -> list[str]:
    return [n for n in record.names if split_name(n)[1] is not None]


def name_holders(store: Store, names: Sequence[str]) -> set[str]:
    """Ids of the images that have any of the tag `names` now (before a pull, tag
    or load moves them elsewhere)."""
    wanted = {n for n in names if split_name(n)[1] is not None}
    return {r.id for r in store.list_images() if wanted.intersection(r.names)}


def release_untagged(store: Store, image_ids: Sequence[str] | set[str]) -> None:
    """Images that lost their last tag to another image lose their digest names
    too, and so become dangling (no names), as in podman, where a re-pulled tag
    leaves the old image `<none>:<none>` for `image prune` to remove."""
    for image_id in image_ids:
        try:
            record = store.get_image(image_id)
        except ImageNotFound:
            continue
        if record.names and not repo_tags(record):
            for name in record.names:
                with contextlib.suppress(ImageNotFound):
                    store.untag(name)


def layer_dirs(store: Store, image: ImageRecord) -> list[Path]:
    """The image's unpacked layer directories (each chain's diff/), lowest first:
    the overlay lowerdir order reversed (overlayfs lists the top layer first)."""
    out = []
    for chain in image.layers:
        if not store.has_layer(chain):
            raise LayerNotFound(chain)
        out.append(store.layer_path(chain))
    return out


# --- the registry side --------------------------------------------------------------


def connect(
    registry: str,
    repository: str | None = None,
    *,
    tls_verify: bool = True,
    credentials: Credentials | None = None,
    timeout: float = 30,
) -> RegistryClient:
    """A RegistryClient for `registry`, with the credentials auth.json has for the
    repository (sandbox.registry.credentials.lookup) unless some are given."""
    from sandbox.registry import credentials as creds
    from sandbox.registry.client import RegistryClient
    from sandbox.registry.config import insecure

    found = credentials if credentials is not None else creds.lookup(registry, repository)
    # registries.conf can mark a registry insecure, as for podman.
    verify = tls_verify and not insecure(registry)
    return RegistryClient(registry, tls_verify=verify, credentials=found, timeout=timeout)


def resolve(
    ref: Reference, source: RegistrySource, platform: media.Platform | None = None
) -> ResolvedImage:
    """Fetch the manifest `ref` names, narrowing an index to one platform."""
    media_type, digest, data = source.get_manifest(ref.repository, ref.manifest_reference)
    parsed = media.parse_manifest(data, media_type)
    if isinstance(parsed, media.Manifest):
        return ResolvedImage(ref, digest, media_type, data, parsed)
    entry = media.select_manifest(parsed, platform, name=str(ref))
    if entry.media_type not in media.MANIFEST_TYPES and entry.media_type not in (
        media.INDEX_TYPES
    ):
        raise ManifestError(f"{ref}: the index entry for {entry.platform} is {entry.media_type}")
    m_type, m_digest, m_data = source.get_manifest(ref.repository, entry.digest)
    manifest = media.parse_manifest(m_data, m_type)
    if not isinstance(manifest, media.Manifest):
        raise ManifestError(
            f"{ref}: the index entry for {entry.platform} is itself an index",
            hint="nested indexes are not supported; pull the inner index by digest",
        )
    return ResolvedImage(
        ref, m_digest, m_type, m_data, manifest, digest, data, entry.platform
    )


def _check_manifest(resolved: ResolvedImage) -> None:
    manifest = resolved.manifest
    if manifest.config.media_type not in media.CONFIG_TYPES:
        raise PullError(
            f"{resolved.ref} is not a container image (its config is "
            f"{manifest.config.media_type})",
            hint="it may be an OCI artifact (a Helm chart, a signature); use oras or skopeo",
        )
    for layer in manifest.layers:
        media.layer_compression(layer.media_type)  # raises for what sbx can't unpack
        if layer.size > 0 and not layer.digest.startswith("sha256:"):
            # chain ids and the extractor's DiffID check are sha256 (config.md).
            raise PullError(f"{resolved.ref}: layer {layer.digest} is not sha256-addressed")


class _Restart(OSError):
    """The server cannot resume a broken download; start it over."""


class _Cancelled(Exception):
    """Another download failed, or the user interrupted: stop this one."""


class _Sink:
    """BlobWriter, as the seekable output `fetch_blob` wants: tell() lets it resume
    a broken transfer with a Range request; a rewind it cannot do (a server without
    Range support) raises _Restart, and the download starts over in a new file."""

    def __init__(self, writer: Any) -> None:
        self._w = writer

    def write(self, data: bytes) -> int:
        return int(self._w.write(data))

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return int(self._w.size)

    def seek(self, pos: int, whence: int = 0) -> int:
        if whence != 0 or pos != self._w.size:
            raise _Restart("cannot rewind a blob being ingested")
        return pos

    def truncate(self, size: int | None = None) -> int:
        return int(self._w.size)


def _cannot_fork_remove(path: Path) -> None:
    # clean_tmp inside a download thread must not reach userns.call (a fork in a
    # threaded process): leave the entry for a later, single-threaded clean_tmp.
    raise OSError(f"not removing {path} from a download thread")


def _thread_store(store: Store) -> Store:
    """A Store for one download thread (Store is not thread-safe)."""
    return Store(
        store.root,
        remove_tree=_cannot_fork_remove,
        tmp_grace_s=store.tmp_grace_s,
        sync_layers=store.sync_layers,
    )


def _fetch_into_store(
    store: Store,
    source: RegistrySource,
    repository: str,
    desc: media.Descriptor,
    progress: Progress,
    label: str,
    cancel: threading.Event,
) -> None:
    key = desc.digest
    progress.start(key, label, desc.size)

    def report(done: int, total: int | None) -> None:
        if cancel.is_set():
            raise _Cancelled()
        progress.update(key, done, total)

    for attempt in range(RESTARTS + 1):
        try:
            with store.ingest(desc.digest, desc.size) as writer:
                source.fetch_blob(
                    repository, desc.digest, _Sink(writer), expected_size=desc.size,
                    progress=report,
                )
            break
        except _Restart:
            if attempt == RESTARTS:
                raise
    progress.finish(key, "done")


def download_blobs(
    store: Store,
    source: RegistrySource,
    repository: str,
    blobs: Sequence[media.Descriptor],
    progress: Progress,
    *,
    max_workers: int = MAX_WORKERS,
) -> list[str]:
    """Download `blobs` into the store, at most `max_workers` at a time; returns
    when every thread has ended. The first failure (in `blobs` order) is raised
    after the others have stopped; the blobs that did arrive stay in the store."""
    if not blobs:
        return []
    cancel = threading.Event()
    pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="sbx-pull")
    futures: list[Future[None]] = []
    try:
        for desc in blobs:
            futures.append(
                pool.submit(
                    _fetch_into_store, _thread_store(store), source, repository, desc,
                    progress, f"Copying blob {desc.digest}", cancel,
                )
            )
        done, _pending = wait(futures, return_when=FIRST_EXCEPTION)
        if any(f.exception() is not None for f in done):
            cancel.set()
    except BaseException:
        cancel.set()  # Ctrl-C: stop the threads at their next chunk
        raise
    finally:
        # Join every thread before anything forks (module docstring).
        pool.shutdown(wait=True, cancel_futures=True)
    for f in futures:
        if f.cancelled():
            continue
        exc = f.exception()
        if exc is not None and not isinstance(exc, _Cancelled):
            raise exc
    return [d.digest for d in blobs]


# --- unpacking ----------------------------------------------------------------------


@dataclass(frozen=True)
class LayerSize:
    """What an unpack hands the store as the layer's size (Store.add_layer reads
    `.bytes`): the uncompressed tar's length, which is what podman reports as a
    layer's size, so `sbx images` SIZE matches `podman images`."""

    bytes: int
    stats: ExtractStats


def _extract_blob(blob: str, dest: str, owners: str, fmt: str, diff_id: str) -> LayerSize:
    """Runs where the Unpacker's runner puts it (a forked child in the user
    namespace): the arguments are plain strings so nothing needs pickling in."""
    from sandbox.images.extract import extract_layer

    try:
        with open(blob, "rb") as f:
            stats = extract_layer(
                f,
                Path(dest),
                owners=owners,  # type: ignore[arg-type]
                whiteout_format=fmt,  # type: ignore[arg-type]
                expected_diff_id=diff_id,
            )
    except SbxError as err:
        # The error crosses back from the namespace's child by pickle, which
        # rebuilds an exception as cls(*args): the extractor's errors take other
        # arguments than their message (DiffIDMismatch(expected, actual)), so they
        # travel as one that takes just the message (and its hint, in __dict__).
        raise LayerUnpackError(f"layer {diff_id}: {err.message}", hint=err.hint) from None
    return LayerSize(stats.tar_size, stats)


def unpack_layers(
    store: Store,
    layers: Sequence[tuple[str, str]],
    unpacker: Unpacker,
    progress: Progress | None = None,
) -> tuple[list[str], list[str]]:
    """Unpack (blob digest, diff id) pairs in order, base first, into the store.
    Returns (chain ids of all layers, chain ids unpacked now). Must be called with
    no other thread running: the runner may fork."""
    chains: list[str] = []
    fresh: list[str] = []
    parent: str | None = None
    for blob, diff_id in layers:
        chain = chain_id_of(parent, diff_id)
        if not store.has_layer(chain):
            if not store.has_blob(blob):
                raise PullError(
                    f"layer {diff_id} is not unpacked and its blob {blob} is not in the store",
                    hint="pull the image again",
                )
            fresh.append(chain)

        def unpack(dest: Path, blob: str = blob, diff_id: str = diff_id) -> object:
            fn = functools.partial(
                _extract_blob, str(store.blob_path(blob)), str(dest), unpacker.owners,
                unpacker.whiteout_format, diff_id,
            )
            return unpacker.runner(fn)

        store.add_layer(chain, diff_id, unpack, parent=parent, options=unpacker.options())
        chains.append(chain)
        parent = chain
    return chains, fresh


# --- the pull -----------------------------------------------------------------------


def pull_names(ref: Reference, resolved: ResolvedImage) -> list[str]:
    """The names a pull gives the image: the tag it was pulled by, and the digest of
    the manifest fetched (and of the index, when that was asked for by digest), so
    that RepoDigests and `sbx push` know which manifest each repository served: one
    image (one config) can come in several manifests (gzip, zstd, schema 2)."""
    names = []
    if ref.digest is None:
        names.append(store_name(ref))
    names.append(f"{ref.name}@{resolved.manifest_digest}")
    if ref.digest and ref.digest != resolved.manifest_digest:
        names.append(store_name(ref))
    return names


def _previous_manifest_blobs(store: Store, image_id: str, new_manifest: str) -> list[str]:
    """When the image is already stored under another manifest (the same config,
    pulled from another repository or in another compression), that manifest and
    its layer blobs stay referenced: the store's prune follows only an image's
    current manifest, and `sbx push` of the other name needs them."""
    try:
        old = store.get_image(image_id)
    except ImageNotFound:
        return []
    if old.manifest_digest == new_manifest:
        return []
    out = [old.manifest_digest]
    with contextlib.suppress(SbxError, ValueError):
        parsed = media.parse_manifest(store.read_blob(old.manifest_digest))
        if isinstance(parsed, media.Manifest):
            out += [d.digest for d in parsed.layers if store.has_blob(d.digest)]
    return out


def manifest_for(store: Store, record: ImageRecord, name: str | None) -> str:
    """The manifest to push for `record` as pulled under `name`'s repository: the
    one its digest name there records (repo@digest), if stored and not an index;
    else the image's current manifest."""
    if name is not None:
        repo = split_name(name)[0]
        for n in record.names:
            r, _tag, digest = split_name(n)
            if r != repo or digest is None or not store.has_blob(digest):
                continue
            with contextlib.suppress(SbxError, ValueError):
                if isinstance(media.parse_manifest(store.read_blob(digest)), media.Manifest):
                    return digest
    return record.manifest_digest


def _platform_warning(config: ImageConfig, want: media.Platform | None) -> str | None:
    target = (want or media.host_platform()).normalized()
    have = media.Platform(config.os, config.architecture, config.variant).normalized()
    if not config.os or not config.architecture:
        return None
    if have not in target.compatible():
        # podman: "image platform (linux/arm64) does not match the expected
        # platform (linux/amd64)", a warning, not an error.
        return f"image platform ({have}) does not match the expected platform ({target})"
    return None


def pull(
    ref: Reference,
    store: Store,
    source: RegistrySource,
    unpacker: Unpacker,
    *,
    platform: media.Platform | None = None,
    progress: Progress | None = None,
    max_workers: int = MAX_WORKERS,
) -> PullResult:
    """Pull `ref` from `source` into `store` (module docstring for the order)."""
    progress = progress or Quiet()
    warnings: list[str] = []
    with store.protect():
        # Stale temp entries go now, while this process has one thread: removing
        # an unpacked tree may fork into the user namespace.
        store.clean_tmp()
        resolved = resolve(ref, source, platform)
        _check_manifest(resolved)
        manifest = resolved.manifest
        if resolved.index_bytes is not None:
            store.put_blob_bytes(resolved.index_bytes, resolved.index_digest)
        store.put_blob_bytes(resolved.manifest_bytes, resolved.manifest_digest)

        cfg = manifest.config
        if store.has_blob(cfg.digest):
            progress.note(f"Copying config {cfg.digest} done")
        else:
            download_blobs(store, source, ref.repository, [cfg], Quiet(), max_workers=1)
            progress.note(f"Copying config {cfg.digest} done")
        config = parse_config(store.read_blob(cfg.digest))
        check_layers(config, len(manifest.layers), str(ref))
        if resolved.index_digest is None:
            warning = _platform_warning(config, platform)
            if warning:
                warnings.append(warning)

        missing: list[media.Descriptor] = []
        for layer in manifest.layers:
            if store.has_blob(layer.digest) or layer.digest in {d.digest for d in missing}:
                progress.note(f"Copying blob {layer.digest} skipped: already exists")
            else:
                missing.append(layer)
        downloaded = download_blobs(
            store, source, ref.repository, missing, progress, max_workers=max_workers
        )
        # Every download thread has ended here: unpacking may fork.
        chains, fresh = unpack_layers(
            store, [(d.digest, diff) for d, diff in zip(manifest.layers, config.diff_ids,
                                                         strict=True)],
            unpacker,
        )
        progress.note("Writing manifest to image destination")
        names = pull_names(ref, resolved)
        holders = name_holders(store, names) - {cfg.digest}
        extra = [resolved.index_digest] if resolved.index_digest else []
        extra += _previous_manifest_blobs(store, cfg.digest, resolved.manifest_digest)
        try:
            record = store.add_image(
                config_digest=cfg.digest,
                manifest_digest=resolved.manifest_digest,
                chain_ids=chains,
                names=names,
                extra_blobs=extra,
            )
        except StoreError as err:
            raise PullError(f"storing {ref}: {err.message}", hint=err.hint) from None
        release_untagged(store, holders)
    return PullResult(record, config, resolved, downloaded, fresh, warnings)


def ensure_image(
    ref_or_id: str,
    store: Store,
    policy: Policy = "missing",
    *,
    unpacker: Unpacker,
    connect_fn: Callable[[Reference], RegistrySource] | None = None,
    platform: media.Platform | None = None,
    tls_verify: bool = True,
    progress: Progress | None = None,
    warn: Callable[[str], None] | None = None,
) -> ImageRecord:
    """The image `sbx run IMAGE` should use, pulled first when `policy` says so:
    "missing" (podman's default --pull=missing) pulls only if no local image has
    the name; "always" pulls a name every time (an id can only be local); "never"
    only looks locally. Raises ImageNotFound, or the pull's error."""
    if policy not in POLICIES:
        raise SbxError(f"unknown pull policy {policy!r}", hint="use missing, always or never")
    local: ImageRecord | None = None
    try:
        local = find_local(store, ref_or_id)
    except ImageNotFound:
        local = None
    looks_like_id = _is_id(ref_or_id) or (
        local is not None and local.id.partition(":")[2].startswith(ref_or_id)
    )
    if local is not None and (policy != "always" or looks_like_id):
        return local
    if policy == "never" or _is_id(ref_or_id):
        raise ImageNotFound(ref_or_id)
    ref = parse_reference(ref_or_id)
    client: RegistrySource = (
        connect(ref.registry, ref.repository, tls_verify=tls_verify)
        if connect_fn is None
        else connect_fn(ref)
    )
    if progress is not None:
        progress.note(f"Trying to pull {ref}...")
    try:
        result = pull(ref, store, client, unpacker, platform=platform, progress=progress)
    finally:
        close = getattr(client, "close", None)
        if close is not None:
            close()
    for w in result.warnings:
        if warn is not None:
            warn(w)
    return result.image


__all__ = [
    "MAX_WORKERS",
    "POLICIES",
    "LayerUnpackError",
    "PullError",
    "PullResult",
    "RegistrySource",
    "ResolvedImage",
    "Unpacker",
    "connect",
    "download_blobs",
    "ensure_image",
    "find_local",
    "find_local_name",
    "layer_dirs",
    "manifest_for",
    "name_holders",
    "pull",
    "pull_names",
    "release_untagged",
    "repo_digests",
    "repo_tags",
    "resolve",
    "run_here",
    "split_name",
    "store_name",
    "unpack_layers",
]
