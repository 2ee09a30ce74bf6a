"""Pushing an image from the store to a registry.

Owns the order of a push, which follows containers/image's `copy.Image` into a
docker:// destination:

1. every layer blob, at most MAX_WORKERS at a time: skipped if the destination
   repository has it (HEAD), else mounted from another repository of the same
   registry that the image came from (the distribution spec's cross-repository
   blob mount, which costs the registry a link instead of an upload), else uploaded
   from the store;
2. then the config blob, the same way;
3. then the manifest, under the tag (or digest), last: a registry accepts a
   manifest only when every blob it names is there.

The manifest pushed is the stored manifest's exact bytes, so the image keeps its
manifest digest: what `sbx pull` fetched, `sbx push` republishes unchanged, and a
peer (podman, skopeo) pulling it gets the same digests. Layers are the compressed
blobs kept from the pull; sbx never recompresses.

Blob reads happen inside `Store.protect()`, so a concurrent prune cannot delete a
blob being uploaded. The registry client comes in as an object (`PushTarget`); this
module does not import the network code.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import IO, Protocol

from sandbox.errors import SbxError
from sandbox.images.progress import Progress, Quiet
from sandbox.images.pull import split_name
from sandbox.images.store import ImageRecord, Store
from sandbox.registry import media
from sandbox.registry.reference import Reference

MAX_WORKERS = 3


class PushError(SbxError):
    """An image that cannot be pushed as it is stored."""


class PushTarget(Protocol):
    """What a push needs from a registry; `RegistryClient` is one."""

    registry: str

    def blob_exists(self, repository: str, digest: str) -> bool: ...

    def mount_blob(self, repository: str, digest: str, from_repository: str) -> bool: ...

    def push_blob(
        self,
        repository: str,
        digest: str,
        size: int,
        fileobj: IO[bytes],
        *,
        progress: Callable[[int, int | None], None] | None = None,
    ) -> None: ...

    def put_manifest(
        self, repository: str, reference: str, media_type: str, data: bytes
    ) -> str: ...


@dataclass
class PushResult:
    manifest_digest: str
    destination: Reference
    uploaded: list[str] = field(default_factory=list)
    mounted: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)


def mount_sources(image: ImageRecord, dest: Reference) -> list[str]:
    """Repositories on the destination's registry that the image is named in,
    other than the destination itself: candidates for a cross-repository mount."""
    out: list[str] = []
    for name in image.names:
        repo = split_name(name)[0]
        registry, _, repository = repo.partition("/")
        if registry == dest.registry and repository != dest.repository and repository not in out:
            out.append(repository)
    return out


class _Cancelled(Exception):
    pass


def _push_one(
    store: Store,
    target: PushTarget,
    dest: Reference,
    desc: media.Descriptor,
    sources: Sequence[str],
    progress: Progress,
    label: str,
    cancel: threading.Event,
    result: PushResult,
    lock: threading.Lock,
) -> None:
    key = desc.digest
    progress.start(key, label, desc.size)
    if target.blob_exists(dest.repository, desc.digest):
        with lock:
            result.existing.append(desc.digest)
        progress.finish(key, "skipped: already exists")
        return
    for source in sources:
        if target.mount_blob(dest.repository, desc.digest, source):
            with lock:
                result.mounted.append(desc.digest)
            progress.finish(key, f"skipped: mounted from {source}")
            return

    def report(done: int, total: int | None) -> None:
        if cancel.is_set():
            raise _Cancelled()
        progress.update(key, done, total)

    with store.open_blob(desc.digest) as f:
        target.push_blob(dest.repository, desc.digest, desc.size, f, progress=report)
    with lock:
        result.uploaded.append(desc.digest)
    progress.finish(key, "done")


def _push_blobs(
    store: Store,
    target: PushTarget,
    dest: Reference,
    blobs: Sequence[tuple[media.Descriptor, str]],
    sources: Sequence[str],
    progress: Progress,
    result: PushResult,
    max_workers: int,
) -> None:
    cancel = threading.Event()
    lock = threading.Lock()
    pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="sbx-push")
    futures: list[Future[None]] = []
    try:
        for desc, label in blobs:
            futures.append(
                pool.submit(_push_one, store, target, dest, desc, sources, progress, label,
                            cancel, result, lock)
            )
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        if any(f.exception() is not None for f in done):
            cancel.set()
    except BaseException:
        cancel.set()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    for f in futures:
        exc = None if f.cancelled() else f.exception()
        if exc is not None and not isinstance(exc, _Cancelled):
            raise exc


def push(
    store: Store,
    image: ImageRecord,
    dest: Reference,
    target: PushTarget,
    *,
    progress: Progress | None = None,
    max_workers: int = MAX_WORKERS,
    manifest_digest: str | None = None,
) -> PushResult:
    """Push `image` to `dest` (module docstring for the order), with its manifest
    `manifest_digest` (default: the image's current one; pull.manifest_for picks
    the one a name was pulled with). Returns the manifest digest the registry now
    serves `dest` under."""
    progress = progress or Quiet()
    manifest_digest = manifest_digest or image.manifest_digest
    with store.protect():
        data = store.read_blob(manifest_digest)
        media_type = media.detect_media_type(data)
        manifest = media.parse_manifest(data, media_type)
        if not isinstance(manifest, media.Manifest):
            raise PushError(f"image {image.short_id}: its stored manifest is an index")
        missing = [d.digest for d in (*manifest.layers, manifest.config)
                   if not store.has_blob(d.digest)]
        if missing:
            raise PushError(
                f"image {image.short_id} can't be pushed: blobs missing from the store: "
                + ", ".join(missing),
                hint="pull the image again (the store keeps the compressed layers of "
                "images it pulled or loaded)",
            )
        if dest.digest and dest.digest != manifest_digest:
            raise PushError(
                f"can't push image {image.short_id} as {dest}: its manifest is "
                f"{manifest_digest}",
                hint="push to a tag, or to the image's own digest",
            )
        result = PushResult(manifest_digest, dest)
        sources = mount_sources(image, dest)
        layers = [(d, f"Copying blob {d.digest}") for d in manifest.layers]
        _push_blobs(store, target, dest, layers, sources, progress, result, max_workers)
        config = [(manifest.config, f"Copying config {manifest.config.digest}")]
        _push_blobs(store, target, dest, config, sources, progress, result, 1)
        progress.note("Writing manifest to image destination")
        reference = dest.digest or dest.tag or "latest"
        digest = target.put_manifest(dest.repository, reference, media_type, data)
        result.manifest_digest = digest
    return result


__all__ = ["MAX_WORKERS", "PushError", "PushResult", "PushTarget", "mount_sources", "push"]
