"""sbx: rootless, daemonless containers for developers.

The package is split by concern (see ../shared/DESIGN.md): `cli` is the only code
that prints or exits; `runtime` turns an OCI runtime-spec subset and a rootfs into a
running container; `system` probes the host.
"""

__version__ = "0.1.0"
