"""The container runtime: an OCI runtime-spec subset and a rootfs in, a process out.

`runtime` takes a spec and a rootfs path; it never imports `registry` or `images`
(see ../shared/DESIGN.md). Every system call goes through `runtime.syscalls`.
"""
