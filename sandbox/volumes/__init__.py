"""Volumes: named directories that outlive containers, as podman's "local" driver.

`store` keeps them (DATA/volumes/<name>/_data, a volume.json beside it, and a
copy-up marker until the first mount), `attach` turns `-v` arguments and an image's
`Volumes` into the bind mounts of a container. The copy of the image's content into
a new volume happens in the runtime (sandbox/runtime/rootfs.py), which is the only
place that sees both the container's root and its user namespace.

Imports nothing from `sandbox.containers` or `sandbox.images`: callers hand in what
they know of containers (which volumes each uses).
"""
