"""The image store: the one owner of every path under the storage directory.

As charliecloud's Storage says of itself: the source of truth for all paths within
the storage directory; do not compute any such paths elsewhere. Layout, version 1:

    ROOT/version                       storage version (STORE_VERSION), for upgrades
    ROOT/blobs/<algorithm>/<hex>       content-addressed blobs: manifests, configs,
                                       compressed layers; verified on the way in,
                                       immutable (mode 0444)
    ROOT/layers/<chain-id-hex>/diff/   a layer unpacked once per chain id, shared by
                                       every image that has it
    ROOT/layers/<chain-id-hex>/layer.json   {chain_id, diff_id, parent, size, options}
    ROOT/images.json                   the index: image id (config digest) -> names,
                                       manifest digest, layers (chain ids), created, size
    ROOT/tmp/                          ingests and unpacks in progress
    ROOT/locks/                        index.lock, gc.lock, layer-<hex>.lock

Crash safety: nothing becomes visible half-written. A blob is written to tmp/,
hashed as it arrives, fsynced and renamed into blobs/ only if digest and size match;
a layer is unpacked into tmp/, gets its layer.json, and the directory is renamed into
layers/ when complete; images.json is replaced by rename (temp file, fsync, rename,
fsync of the directory). A process killed with SIGKILL leaves only tmp/ entries, and
every tmp/ entry is flock(2)ed by its writer for its whole life, so the next store
operation removes the ones whose lock is free (the writer is gone). Age alone is never
enough: a slow pull of a large layer may be older than any limit; a short grace
period only covers the instant between creating an entry and locking it.

Concurrency (locks.py): `index.lock` serialises read-modify-write of images.json
(short critical sections); `layer-<hex>.lock` makes concurrent unpacks of one layer
happen once (the second caller waits, then reuses it); `gc.lock` is held shared by
anything that creates blobs or layers no image references yet (`protect()`, taken by
ingest and add_layer themselves; a pull wraps its whole run in it) and exclusively by
prune, so prune never deletes what a running pull is about to reference.

Every digest is validated (algorithm and lowercase hex of the right length) before it
becomes part of a path. The store must not import the registry's network code or the
runtime, and never touches namespaces; a layer whose files belong to subordinate ids
can only be removed from inside the user namespace, so the owner of the Store may
pass a `remove_tree` that runs there.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import stat
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from sandbox.errors import SbxError
from sandbox.images import locks
from sandbox.images.locks import FileLock
from sandbox.images.whiteout import remove_at
from sandbox.registry.digest import split_digest
from sandbox.registry.errors import InvalidDigestError

STORE_VERSION = 1
SMALL_BLOB_LIMIT = 4 << 20  # manifests and configs; read_blob refuses more
TMP_GRACE_S = 60.0

_HEX = {"sha256": re.compile(r"[0-9a-f]{64}"), "sha512": re.compile(r"[0-9a-f]{128}")}
_ID_PREFIX = re.compile(r"(?:(sha256|sha512):)?([0-9a-f]{3,128})")
_NAME = re.compile(r"[^\s\x00-\x1f\x7f]+")


class StoreError(SbxError):
    """The image store refused an operation or found itself inconsistent."""


# One rule for digests everywhere (sha256: + 64 or sha512: + 128 lowercase hex),
# checked before a digest ever becomes a path: sandbox/registry/digest.py owns it.
InvalidDigest = InvalidDigestError


class StoreVersionError(StoreError):
    pass


class DigestMismatch(StoreError):
    """Content that is not what its digest or size says: nothing is stored."""

    def __init__(self, expected: str, actual: str | None, expected_size: int | None = None,
                 actual_size: int | None = None) -> None:
        self.expected = expected
        self.actual = actual
        self.expected_size = expected_size
        self.actual_size = actual_size
        if actual is None and expected_size is not None:
            what = f"got more than the {expected_size} promised bytes"
        elif (expected_size is not None and actual_size is not None
              and actual_size != expected_size):
            what = f"got {actual_size} bytes, not {expected_size}"
        else:
            what = f"content has digest {actual}"
        super().__init__(
            f"blob {expected}: {what}",
            hint="the data is not what the image's manifest names; pull the image again",
        )


class BlobNotFound(StoreError):
    def __init__(self, digest: str) -> None:
        self.digest = digest
        super().__init__(f"blob {digest} is not in the store",
                         hint="pull the image that uses it again")


class LayerNotFound(StoreError):
    def __init__(self, chain_id: str) -> None:
        self.chain_id = chain_id
        super().__init__(f"layer {chain_id} is not in the store",
                         hint="pull the image that uses it again")


class ImageNotFound(StoreError):
    def __init__(self, ref: str) -> None:
        self.ref = ref
        super().__init__(f"image not known: {ref}",
                         hint="`sbx images` lists the images here; `sbx pull` fetches one")


class AmbiguousImage(StoreError):
    def __init__(self, ref: str, candidates: list[str]) -> None:
        self.ref = ref
        self.candidates = candidates
        shown = ", ".join(short_id(c) for c in candidates)
        super().__init__(f"{ref!r} matches several images: {shown}",
                         hint="give more digits of the image id, or its name")


class ImageInUse(StoreError):
    def __init__(self, image_id: str) -> None:
        self.image_id = image_id
        super().__init__(f"image {short_id(image_id)} is in use by a container",
                         hint="remove the container first, or use --force")


def validate_digest(digest: str) -> tuple[str, str]:
    """(algorithm, hex) of a digest, or InvalidDigest."""
    return split_digest(digest)


def _validate_chain_id(chain_id: str) -> str:
    algorithm, hexpart = validate_digest(chain_id)
    if algorithm != "sha256":
        raise InvalidDigest(chain_id, "a ChainID is a sha256 digest (image-spec config.md)")
    return hexpart


def short_id(digest: str) -> str:
    """The 12 hex digits docker and podman show for an id."""
    return digest.partition(":")[2][:12]


def chain_id(diff_ids: Sequence[str]) -> str:
    """The ChainID of a layer stack (OCI image-spec config.md, "Layer ChainID"):
    ChainID(L0) = DiffID(L0); ChainID(Ln) = SHA256(ChainID(Ln-1) + " " + DiffID(Ln))."""
    if not diff_ids:
        raise ValueError("a chain id needs at least one diff id")
    current: str | None = None
    for diff_id in diff_ids:
        current = chain_id_of(current, diff_id)
    assert current is not None
    return current


def chain_id_of(parent: str | None, diff_id: str) -> str:
    """The ChainID of the layer with `diff_id` on top of the chain `parent`."""
    validate_digest(diff_id)
    if parent is None:
        return diff_id
    validate_digest(parent)
    return "sha256:" + hashlib.sha256(f"{parent} {diff_id}".encode()).hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _default_remove_tree(path: Path) -> None:
    parent = os.open(path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        remove_at(parent, path.name)
    finally:
        os.close(parent)


def _tree_size(root: Path) -> int:
    """Bytes of the regular files and symlinks under root, each inode once.
    Directories we can't read (a subordinate id's 0700 dir) are skipped: the size is
    informational."""
    total = 0
    seen: set[tuple[int, int]] = set()
    todo = [root]
    while todo:
        with contextlib.suppress(OSError), os.scandir(todo.pop()) as it:
            for entry in it:
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    todo.append(Path(entry.path))
                    continue
                if st.st_nlink > 1:
                    if (st.st_dev, st.st_ino) in seen:
                        continue
                    seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


@dataclass(frozen=True)
class ImageRecord:
    """One image in the index. Its id is its config digest."""

    id: str
    names: tuple[str, ...]
    manifest_digest: str
    layers: tuple[str, ...]  # chain ids, base layer first
    created: str  # when it entered this store, RFC 3339 UTC
    size: int  # unpacked bytes of its layers
    extra_blobs: tuple[str, ...] = ()  # kept by prune too: an index, a signature

    @property
    def short_id(self) -> str:
        return short_id(self.id)

    def to_json(self) -> dict[str, Any]:
        return {
            "names": list(self.names),
            "manifest": self.manifest_digest,
            "layers": list(self.layers),
            "created": self.created,
            "size": self.size,
            "blobs": list(self.extra_blobs),
        }

    @classmethod
    def from_json(cls, image_id: str, data: Mapping[str, Any]) -> ImageRecord:
        return cls(
            id=image_id,
            names=tuple(data.get("names", ())),
            manifest_digest=str(data["manifest"]),
            layers=tuple(data.get("layers", ())),
            created=str(data.get("created", "")),
            size=int(data.get("size", 0)),
            extra_blobs=tuple(data.get("blobs", ())),
        )


@dataclass(frozen=True)
class LayerInfo:
    chain_id: str
    diff_id: str
    parent: str | None
    size: int
    created: str
    options: Mapping[str, str]
    path: Path  # the diff/ directory: the layer's files


@dataclass
class PruneResult:
    blobs: list[str] = field(default_factory=list)
    layers: list[str] = field(default_factory=list)
    tmp_entries: int = 0
    bytes_freed: int = 0


class BlobWriter:
    """A writable file for Store.ingest: hashes and counts as it writes."""

    def __init__(self, f: BinaryIO, digest: str, expected_size: int | None) -> None:
        self._f = f
        self.expected = digest
        self.expected_size = expected_size
        self._hash = hashlib.new(digest.partition(":")[0])
        self.size = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        n = len(data)
        if self.expected_size is not None and self.size + n > self.expected_size:
            # Stop a server that sends more than the manifest promised right away.
            raise DigestMismatch(self.expected, None, self.expected_size, self.size + n)
        self._f.write(data)
        self._hash.update(data)
        self.size += n
        return n

    def writable(self) -> bool:
        return True

    @property
    def digest(self) -> str:
        return f"{self.expected.partition(':')[0]}:{self._hash.hexdigest()}"


class Store:
    """The image store under `root`. Not thread-safe: one per thread or process.

    in_use(image_id) tells remove_image whether containers still use an image.
    remove_tree(path) removes a layer tree (default: in this process, fd-based).
    tmp_grace_s: how young a tmp/ entry must be to be left alone even if unlocked.
    sync_layers: os.sync() before a layer is renamed into place, so a power cut can't
    leave a complete-looking layer with empty files (the rename alone is enough
    against SIGKILL).
    """

    def __init__(
        self,
        root: Path,
        *,
        in_use: Callable[[str], bool] | None = None,
        remove_tree: Callable[[Path], None] | None = None,
        tmp_grace_s: float = TMP_GRACE_S,
        sync_layers: bool = True,
    ) -> None:
        self.root = Path(root)
        self.in_use = in_use
        self._remove_tree = remove_tree or _default_remove_tree
        self.tmp_grace_s = tmp_grace_s
        self.sync_layers = sync_layers
        self._blobs = self.root / "blobs"
        self._layers = self.root / "layers"
        self._tmp = self.root / "tmp"
        self._locks = self.root / "locks"
        self._index = self.root / "images.json"
        self._protect_depth = 0
        self._gc_lock: FileLock | None = None
        self._open()

    # -- layout and version ----------------------------------------------------

    def _open(self) -> None:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        for d in (self._blobs, self._layers, self._tmp, self._locks):
            d.mkdir(mode=0o700, exist_ok=True)
        for algorithm in _HEX:
            (self._blobs / algorithm).mkdir(mode=0o700, exist_ok=True)
        version_file = self.root / "version"
        try:
            text = version_file.read_text()
        except FileNotFoundError:
            self._atomic_write(version_file, f"{STORE_VERSION}\n".encode())
            return
        try:
            version = int(text.strip())
        except ValueError:
            raise StoreVersionError(f"unreadable storage version in {version_file}") from None
        if version > STORE_VERSION:
            raise StoreVersionError(
                f"{self.root} holds storage version {version}; this sbx knows {STORE_VERSION}",
                hint="upgrade sbx, or point it at another storage directory",
            )
        # Older versions would be migrated here, under index.lock.

    # -- temp entries ------------------------------------------------------------

    def _new_tmp_file(self, prefix: str) -> tuple[int, Path]:
        fd, name = tempfile.mkstemp(prefix=prefix, dir=self._tmp)
        locks.lock_fd(fd)
        return fd, Path(name)

    def _tmp_name(self, prefix: str) -> Path:
        """A fresh name in tmp/ to rename something to (rename(2) would replace an
        existing empty directory, so the name must be unused: 64 random bits)."""
        return self._tmp / f"{prefix}{secrets.token_hex(8)}"

    def _atomic_write(self, path: Path, data: bytes) -> None:
        """Replace `path` (a file directly under root) by rename, durably."""
        fd, tmp = self._new_tmp_file(f"{path.name}-")
        try:
            with os.fdopen(os.dup(fd), "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            os.rename(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        finally:
            os.close(fd)
        _fsync_dir(path.parent)

    def clean_tmp(self) -> int:
        """Remove tmp/ entries left by dead writers (their flock is free), older than
        the grace period. Entries that can't be removed yet stay for a later try."""
        removed = 0
        now = time.time()
        try:
            entries = list(os.scandir(self._tmp))
        except FileNotFoundError:
            return 0
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if now - st.st_mtime < self.tmp_grace_s:
                continue
            if self._remove_if_unlocked(Path(entry.path), st):
                removed += 1
        return removed

    def _remove_if_unlocked(self, path: Path, st: os.stat_result) -> bool:
        if stat.S_ISDIR(st.st_mode):
            flags = os.O_RDONLY | os.O_DIRECTORY
        elif stat.S_ISREG(st.st_mode):
            flags = os.O_RDONLY
        else:
            with contextlib.suppress(OSError):
                os.unlink(path)  # nothing of ours; no one can hold it
            return True
        try:
            fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            if not locks.try_lock_fd(fd):
                return False  # its writer is alive
            held = os.fstat(fd)
            try:
                there = os.lstat(path)
            except FileNotFoundError:
                return False  # its writer finished (renamed it into place) meanwhile
            if (held.st_dev, held.st_ino) != (there.st_dev, there.st_ino):
                return False  # the name now belongs to another entry
            try:
                if stat.S_ISDIR(st.st_mode):
                    self._remove_tree(path)
                else:
                    os.unlink(path)
            except OSError:
                return False
            return True
        finally:
            os.close(fd)

    # -- gc protection -----------------------------------------------------------

    @contextlib.contextmanager
    def protect(self) -> Iterator[None]:
        """While inside, prune (in any process) waits: hold it from the first blob of
        a pull to add_image. Reentrant within this Store."""
        if self._protect_depth == 0:
            lock = FileLock(self._locks / "gc.lock", shared=True)
            lock.acquire()
            self._gc_lock = lock
        self._protect_depth += 1
        try:
            yield
        finally:
            self._protect_depth -= 1
            if self._protect_depth == 0 and self._gc_lock is not None:
                self._gc_lock.release()
                self._gc_lock = None

    # -- blobs -------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        algorithm, hexpart = validate_digest(digest)
        return self._blobs / algorithm / hexpart

    def has_blob(self, digest: str) -> bool:
        try:
            st = self.blob_path(digest).lstat()
        except FileNotFoundError:
            return False
        return stat.S_ISREG(st.st_mode)

    def blob_size(self, digest: str) -> int:
        try:
            return self.blob_path(digest).lstat().st_size
        except FileNotFoundError:
            raise BlobNotFound(digest) from None

    @contextlib.contextmanager
    def ingest(
        self, expected_digest: str, expected_size: int | None = None
    ) -> Iterator[BlobWriter]:
        """A writable file whose content becomes blob `expected_digest` on a clean
        exit: hashed while written, then checked (digest and size), fsynced and
        renamed into blobs/. On a mismatch DigestMismatch is raised and nothing is
        stored; on any exception the temp file goes."""
        final = self.blob_path(expected_digest)
        if expected_size is not None and expected_size < 0:
            raise StoreError(f"blob {expected_digest}: negative size {expected_size}")
        with self.protect():
            self.clean_tmp()
            fd, tmp = self._new_tmp_file("blob-")
            try:
                with os.fdopen(os.dup(fd), "wb") as f:
                    writer = BlobWriter(f, expected_digest, expected_size)
                    yield writer
                    f.flush()
                    if writer.digest != expected_digest or (
                        expected_size is not None and writer.size != expected_size
                    ):
                        raise DigestMismatch(
                            expected_digest, writer.digest, expected_size, writer.size
                        )
                    os.fsync(f.fileno())
                os.chmod(tmp, 0o444)
                # Another process may have stored the same blob meanwhile: same
                # bytes, so replacing it is harmless.
                os.rename(tmp, final)
                _fsync_dir(final.parent)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
            finally:
                os.close(fd)

    @contextlib.contextmanager
    def staged_file(self, prefix: str) -> Iterator[tuple[int, Path]]:
        """A new file in tmp/ (locked, so clean_tmp leaves it alone) for a writer
        that is not this process (a child in the user namespace writes a committed
        layer to the fd); `adopt` it before leaving, or it goes."""
        with self.protect():
            self.clean_tmp()
            fd, tmp = self._new_tmp_file(prefix)
            try:
                yield fd, tmp
            finally:
                os.close(fd)
                with contextlib.suppress(OSError):
                    os.unlink(tmp)

    def adopt(self, tmp: Path, expected_digest: str | None = None) -> str:
        """Move a staged file into blobs/ under its digest, hashed here: a digest is
        checked by the store before it becomes a path, whoever computed it first
        (`expected_digest`, when given, must match). Returns the digest."""
        algorithm = validate_digest(expected_digest)[0] if expected_digest else "sha256"
        h = hashlib.new(algorithm)
        with open(tmp, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
            os.fsync(f.fileno())
        actual = f"{algorithm}:{h.hexdigest()}"
        if expected_digest is not None and actual != expected_digest:
            raise DigestMismatch(expected_digest, actual)
        expected_digest = actual
        final = self.blob_path(expected_digest)
        os.chmod(tmp, 0o444)
        os.rename(tmp, final)
        _fsync_dir(final.parent)
        return expected_digest

    def put_blob_bytes(self, data: bytes, expected_digest: str | None = None) -> str:
        """Store `data` and return its digest (sha256 unless `expected_digest` says)."""
        if expected_digest is None:
            expected_digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if self.has_blob(expected_digest):
            return expected_digest  # verified when it was stored
        with self.ingest(expected_digest, len(data)) as w:
            w.write(data)
        return expected_digest

    def open_blob(self, digest: str) -> BinaryIO:
        path = self.blob_path(digest)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            raise BlobNotFound(digest) from None
        return os.fdopen(fd, "rb")

    def read_blob(self, digest: str, *, max_size: int = SMALL_BLOB_LIMIT) -> bytes:
        """A small blob's bytes (a manifest, a config), checked against its digest
        again: a store corrupted on disk must not hand out wrong JSON."""
        with self.open_blob(digest) as f:
            data = f.read(max_size + 1)
        if len(data) > max_size:
            raise StoreError(f"blob {digest} is larger than {max_size} bytes")
        algorithm = digest.partition(":")[0]
        actual = f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"
        if actual != digest:
            err = DigestMismatch(digest, actual)
            err.hint = "the store is corrupted: remove the image and pull it again"
            raise err
        return data

    # -- layers ------------------------------------------------------------------

    chain_id = staticmethod(chain_id)
    chain_id_of = staticmethod(chain_id_of)

    def _layer_dir(self, chain: str) -> Path:
        return self._layers / _validate_chain_id(chain)

    def layer_path(self, chain: str) -> Path:
        """The directory holding the layer's files (its diff/)."""
        return self._layer_dir(chain) / "diff"

    def has_layer(self, chain: str) -> bool:
        # layer.json is written before the rename, so its presence means complete.
        return (self._layer_dir(chain) / "layer.json").is_file()

    def layer_info(self, chain: str) -> LayerInfo:
        d = self._layer_dir(chain)
        try:
            data = json.loads((d / "layer.json").read_text())
        except FileNotFoundError:
            raise LayerNotFound(chain) from None
        except (ValueError, OSError) as exc:
            raise StoreError(f"layer {chain}: unreadable layer.json: {exc}") from None
        return LayerInfo(
            chain_id=chain,
            diff_id=str(data["diff_id"]),
            parent=data.get("parent"),
            size=int(data.get("size", 0)),
            created=str(data.get("created", "")),
            options=dict(data.get("options", {})),
            path=d / "diff",
        )

    def list_layers(self) -> list[str]:
        out = []
        for entry in os.scandir(self._layers):
            if _HEX["sha256"].fullmatch(entry.name):
                out.append("sha256:" + entry.name)
        return sorted(out)

    def _check_options(self, info: LayerInfo, options: Mapping[str, str]) -> LayerInfo:
        if dict(info.options) != dict(options):
            raise StoreError(
                f"layer {short_id(info.chain_id)} was unpacked with {dict(info.options)}, "
                f"not {dict(options)}",
                hint="remove the images that use it (sbx rmi), prune, and pull again",
            )
        return info

    def add_layer(
        self,
        chain: str,
        diff_id: str,
        unpack: Callable[[Path], object],
        *,
        parent: str | None = None,
        options: Mapping[str, str] | None = None,
    ) -> LayerInfo:
        """Unpack a layer once: `unpack(dir)` fills the empty directory `dir`, in
        tmp/; when it returns, the layer is renamed into layers/. If the layer is
        already there, or another process is unpacking it (it holds the layer's
        lock), this waits and reuses it. If unpack returns an object with an int
        `bytes` (extract_layer's stats), that is the layer's size; else the tree is
        measured. `options` (e.g. owners and whiteout format) are recorded; reusing
        a layer unpacked with other options is an error."""
        hexpart = _validate_chain_id(chain)
        if chain_id_of(parent, diff_id) != chain:
            raise StoreError(
                f"chain id {chain} does not follow from parent {parent} and diff id {diff_id}"
            )
        opts = {str(k): str(v) for k, v in (options or {}).items()}
        with self.protect():
            if parent is not None and not self.has_layer(parent):
                raise LayerNotFound(parent)
            if self.has_layer(chain):
                return self._check_options(self.layer_info(chain), opts)
            with FileLock(self._locks / f"layer-{hexpart}.lock"):
                if self.has_layer(chain):
                    return self._check_options(self.layer_info(chain), opts)
                self.clean_tmp()
                return self._unpack_layer(chain, hexpart, diff_id, parent, opts, unpack)

    def _unpack_layer(
        self,
        chain: str,
        hexpart: str,
        diff_id: str,
        parent: str | None,
        options: dict[str, str],
        unpack: Callable[[Path], object],
    ) -> LayerInfo:
        work = Path(tempfile.mkdtemp(prefix=f"layer-{hexpart[:12]}-", dir=self._tmp))
        dfd = os.open(work, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            locks.lock_fd(dfd)
            diff = work / "diff"
            diff.mkdir()
            diff.chmod(0o755)
            result = unpack(diff)
            size = getattr(result, "bytes", None)
            if not isinstance(size, int):
                size = _tree_size(diff)
            created = _now()
            meta = {
                "chain_id": chain,
                "diff_id": diff_id,
                "parent": parent,
                "size": size,
                "created": created,
                "options": options,
            }
            with open(work / "layer.json", "w") as f:
                json.dump(meta, f, indent=1, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            if self.sync_layers:
                os.sync()
            final = self._layers / hexpart
            if final.exists() or final.is_symlink():
                # A directory without layer.json: not ours to trust; set it aside
                # for clean_tmp.
                os.rename(final, self._tmp_name("broken-"))
            os.rename(work, final)
            _fsync_dir(self._layers)
        except BaseException:
            with contextlib.suppress(OSError):
                self._remove_tree(work)  # else clean_tmp retries once our lock is gone
            raise
        finally:
            os.close(dfd)
        return LayerInfo(chain, diff_id, parent, size, created, options, final / "diff")

    # -- the index ---------------------------------------------------------------

    def _read_index(self) -> dict[str, Any]:
        try:
            data = json.loads(self._index.read_text())
        except FileNotFoundError:
            return {"version": STORE_VERSION, "images": {}}
        except ValueError as exc:
            raise StoreError(f"{self._index} is corrupt: {exc}") from None
        data.setdefault("images", {})
        return data  # type: ignore[no-any-return]

    @contextlib.contextmanager
    def _index_txn(self) -> Iterator[dict[str, Any]]:
        """Read-modify-write of images.json under index.lock; written only if the
        body returns normally."""
        with FileLock(self._locks / "index.lock"):
            data = self._read_index()
            yield data
            payload = json.dumps(data, indent=1, sort_keys=True).encode() + b"\n"
            self._atomic_write(self._index, payload)

    def list_images(self) -> list[ImageRecord]:
        images = self._read_index()["images"]
        records = [ImageRecord.from_json(i, d) for i, d in images.items()]
        return sorted(records, key=lambda r: (r.created, r.id), reverse=True)

    def get_image(self, image_id: str) -> ImageRecord:
        validate_digest(image_id)
        data = self._read_index()["images"].get(image_id)
        if data is None:
            raise ImageNotFound(image_id)
        return ImageRecord.from_json(image_id, data)

    def resolve(self, ref: str) -> ImageRecord:
        """The image a full name (docker.io/library/busybox:latest), a full id, or an
        id prefix of 3+ hex digits (with or without "sha256:") refers to. Names are
        matched exactly: normalising short names is the caller's business."""
        images = self._read_index()["images"]
        for image_id, data in images.items():
            if ref in data.get("names", ()):
                return ImageRecord.from_json(image_id, data)
        if ref in images:
            return ImageRecord.from_json(ref, images[ref])
        m = _ID_PREFIX.fullmatch(ref)
        if m is None:
            raise ImageNotFound(ref)
        algorithm, prefix = m.groups()
        found = [
            i
            for i in images
            if i.partition(":")[2].startswith(prefix)
            and (algorithm is None or i.startswith(algorithm + ":"))
        ]
        if not found:
            raise ImageNotFound(ref)
        if len(found) > 1:
            raise AmbiguousImage(ref, sorted(found))
        return ImageRecord.from_json(found[0], images[found[0]])

    @staticmethod
    def _check_name(name: str) -> None:
        if not _NAME.fullmatch(name) or not (":" in name or "@" in name):
            raise StoreError(
                f"invalid image name {name!r}",
                hint="the store keeps full names: registry/repository:tag or @digest",
            )
        if _ID_PREFIX.fullmatch(name) or name.startswith(("sha256:", "sha512:")):
            raise StoreError(f"image name {name!r} looks like an image id")

    def add_image(
        self,
        *,
        config_digest: str,
        manifest_digest: str,
        chain_ids: Sequence[str],
        names: Sequence[str] = (),
        extra_blobs: Sequence[str] = (),
    ) -> ImageRecord:
        """Record an image (id = its config digest) whose blobs and layers are in
        the store already; its names move here from any other image. Adding an
        image again updates its manifest and adds names."""
        for d in (config_digest, manifest_digest, *extra_blobs):
            validate_digest(d)
        for c in chain_ids:
            _validate_chain_id(c)
        for n in names:
            self._check_name(n)
        with self.protect():
            wanted = (config_digest, manifest_digest, *extra_blobs)
            missing = [d for d in wanted if not self.has_blob(d)]
            missing += [c for c in chain_ids if not self.has_layer(c)]
            if missing:
                raise StoreError(
                    f"image {short_id(config_digest)}: not in the store: {', '.join(missing)}"
                )
            size = sum(self.layer_info(c).size for c in chain_ids)
            with self._index_txn() as idx:
                images = idx["images"]
                old = images.get(config_digest)
                if old is not None and list(old.get("layers", [])) != list(chain_ids):
                    raise StoreError(
                        f"image {short_id(config_digest)} is already stored with other layers"
                    )
                record = {
                    "names": list(old.get("names", [])) if old else [],
                    "manifest": manifest_digest,
                    "layers": list(chain_ids),
                    "created": old.get("created", _now()) if old else _now(),
                    "size": size,
                    "blobs": sorted(set(old.get("blobs", []) if old else []) | set(extra_blobs)),
                }
                images[config_digest] = record
                for n in names:
                    self._move_name(images, n, config_digest)
                return ImageRecord.from_json(config_digest, images[config_digest])

    @staticmethod
    def _move_name(images: dict[str, Any], name: str, image_id: str) -> None:
        for other_id, data in images.items():
            if other_id != image_id and name in data.get("names", []):
                data["names"].remove(name)
        names = images[image_id].setdefault("names", [])
        if name not in names:
            names.append(name)

    def tag(self, image_id: str, name: str) -> None:
        """Give the image `name`; as in docker, the name leaves any other image."""
        validate_digest(image_id)
        self._check_name(name)
        with self._index_txn() as idx:
            if image_id not in idx["images"]:
                raise ImageNotFound(image_id)
            self._move_name(idx["images"], name, image_id)

    def untag(self, name: str) -> str:
        """Remove a name; returns the id of the image that had it."""
        with self._index_txn() as idx:
            for image_id, data in idx["images"].items():
                if name in data.get("names", []):
                    data["names"].remove(name)
                    return image_id
        raise ImageNotFound(name)

    def remove_image(self, image_id: str, *, force: bool = False) -> ImageRecord:
        """Drop an image from the index (its blobs and layers go at the next
        prune). Refused while `in_use` says a container uses it, unless forced."""
        validate_digest(image_id)
        if image_id not in self._read_index()["images"]:
            raise ImageNotFound(image_id)
        if not force and self.in_use is not None and self.in_use(image_id):
            raise ImageInUse(image_id)
        with self._index_txn() as idx:
            data = idx["images"].pop(image_id, None)
            if data is None:
                raise ImageNotFound(image_id)
            return ImageRecord.from_json(image_id, data)

    # -- garbage collection ----------------------------------------------------

    def _referenced(self) -> tuple[set[str], set[str]]:
        """(blobs, chain ids) that the index's images need."""
        blobs: set[str] = set()
        layers: set[str] = set()
        for record in self.list_images():
            blobs.update((record.id, record.manifest_digest, *record.extra_blobs))
            layers.update(record.layers)
            with contextlib.suppress(StoreError, ValueError, TypeError, AttributeError):
                manifest = json.loads(self.read_blob(record.manifest_digest))
                blobs.add(manifest["config"]["digest"])
                blobs.update(layer["digest"] for layer in manifest.get("layers", []))
        # A layer's parents are needed beneath it even if no image lists them.
        todo = list(layers)
        while todo:
            with contextlib.suppress(StoreError):
                parent = self.layer_info(todo.pop()).parent
                if parent and parent not in layers:
                    layers.add(parent)
                    todo.append(parent)
        return blobs, layers

    def prune(self) -> PruneResult:
        """Delete blobs and layers no image references, and stale tmp/ entries.
        Waits for every protect() holder (running pulls) to finish first."""
        if self._protect_depth:
            raise StoreError("prune() inside protect() would wait for itself")
        result = PruneResult()
        with FileLock(self._locks / "gc.lock"):
            result.tmp_entries = self.clean_tmp()
            blobs, layers = self._referenced()
            for chain in self.list_layers():
                if chain in layers:
                    continue
                freed = self._remove_layer(chain)
                if freed is not None:
                    result.layers.append(chain)
                    result.bytes_freed += freed
            for algorithm in _HEX:
                for entry in os.scandir(self._blobs / algorithm):
                    digest = f"{algorithm}:{entry.name}"
                    if not _HEX[algorithm].fullmatch(entry.name) or digest in blobs:
                        continue
                    with contextlib.suppress(FileNotFoundError):
                        size = entry.stat(follow_symlinks=False).st_size
                        os.unlink(entry.path)
                        result.blobs.append(digest)
                        result.bytes_freed += size
        return result

    def _remove_layer(self, chain: str) -> int | None:
        hexpart = _validate_chain_id(chain)
        with FileLock(self._locks / f"layer-{hexpart}.lock"):
            src = self._layers / hexpart
            size = 0
            with contextlib.suppress(StoreError):
                size = self.layer_info(chain).size
            try:
                fd = os.open(src, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except FileNotFoundError:
                return None
            try:
                # Lock it before it moves into tmp/, so clean_tmp leaves it to us.
                locks.lock_fd(fd)
                # The moved directory is itself the tmp/ entry, locked: clean_tmp
                # leaves it alone until we are done (or dead).
                doomed = self._tmp_name(f"rm-{hexpart[:12]}-")
                os.rename(src, doomed)
                _fsync_dir(self._layers)
                with contextlib.suppress(OSError):
                    self._remove_tree(doomed)
            finally:
                os.close(fd)
        return size

    def check(self) -> list[str]:
        """Problems found: images whose blobs or layers are missing, layers without
        their files. An empty list means consistent (tmp/ leftovers aren't problems)."""
        problems: list[str] = []
        for record in self.list_images():
            for d in (record.id, record.manifest_digest, *record.extra_blobs):
                if not self.has_blob(d):
                    problems.append(f"image {record.short_id}: blob {d} missing")
            for c in record.layers:
                if not self.has_layer(c):
                    problems.append(f"image {record.short_id}: layer {c} missing")
        for chain in self.list_layers():
            d = self._layer_dir(chain)
            if not (d / "layer.json").is_file():
                problems.append(f"layer {chain}: no layer.json")
            elif not (d / "diff").is_dir():
                problems.append(f"layer {chain}: no diff/")
            else:
                with contextlib.suppress(StoreError):
                    info = self.layer_info(chain)
                    if chain_id_of(info.parent, info.diff_id) != chain:
                        problems.append(f"layer {chain}: chain id does not match its metadata")
        return problems

    def tmp_entries(self) -> list[str]:
        return sorted(os.listdir(self._tmp))
