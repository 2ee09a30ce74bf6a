"""Storage drivers: an image's layers plus a container's writable layer -> a rootfs.

`overlay` (kernel overlayfs in the user namespace, `userxattr`) is the one for now;
the `fuse` driver (fs/) and `vfs` (a full copy) arrive with the union filesystem.
Drivers know layers as directories; they never import the registry.
"""
