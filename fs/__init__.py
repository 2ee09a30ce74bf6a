"""sbx's union filesystem on pyfuse3 (issue 4): a library and a command of its own.

It must import nothing from `sandbox`; the storage drivers import it, never the
other way round.

Modules, by concern (as fuse-overlayfs's Rust rewrite splits them): layer (a layer's
root and path resolution without following links), whiteout (deletions and opaque
directories), node (inode numbers and lookup counts), copyup (copy-up and upper-layer
metadata), mapping (id mapping and override_stat), overlay (the semantics), ops (the
pyfuse3 adapter), options and __main__ (the sbx-fs command), syscalls (renameat2,
FICLONE). docs/fs.md describes the whole.
"""
