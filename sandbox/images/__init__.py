"""Images: the content-addressed store and safe layer extraction.

- store.py: the one owner of every path under the storage directory (blobs, unpacked
  layers, the image index, temp entries), with its locks (locks.py);
- extract.py: a layer tar (plain, gzip, zstd) into a directory, never writing
  outside it, with owners either real (in a user namespace) or recorded in an xattr;
- whiteout.py: the on-disk forms of whiteouts and opaque directories;
- pull.py, push.py, archive.py: pull and push through the registry client, save and
  load archives; config.py: image configs; progress.py: progress output.

This package never touches namespaces and must not import `sandbox.runtime`: whoever
needs real owners runs the extractor inside a user namespace it made itself (pull
takes that runner as its `Unpacker`). The store and the extractor stay pure: they
import nothing from the registry but its digest rule; pull.py opens the client only
inside `connect()`.
"""

from sandbox.images.extract import (
    CorruptLayer,
    DiffIDMismatch,
    ExtractStats,
    HeaderTooLarge,
    LayerError,
    MemberError,
    UnsafeMember,
    UnsupportedLayer,
    extract_layer,
)
from sandbox.images.store import (
    AmbiguousImage,
    BlobNotFound,
    DigestMismatch,
    ImageInUse,
    ImageNotFound,
    ImageRecord,
    InvalidDigest,
    LayerInfo,
    LayerNotFound,
    PruneResult,
    Store,
    StoreError,
    chain_id,
    validate_digest,
)

__all__ = [
    "AmbiguousImage",
    "BlobNotFound",
    "CorruptLayer",
    "DiffIDMismatch",
    "DigestMismatch",
    "ExtractStats",
    "HeaderTooLarge",
    "ImageInUse",
    "ImageNotFound",
    "ImageRecord",
    "InvalidDigest",
    "LayerError",
    "LayerInfo",
    "LayerNotFound",
    "MemberError",
    "PruneResult",
    "Store",
    "StoreError",
    "UnsafeMember",
    "UnsupportedLayer",
    "chain_id",
    "extract_layer",
    "validate_digest",
]
