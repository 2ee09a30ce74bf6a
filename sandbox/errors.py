"""Typed errors for library code, and the exit codes the CLI maps them to.

Library code raises these; only `sandbox.cli` prints them and exits. Exit codes
follow docker/podman run: 125 when sbx itself failed, 126 when the command cannot be
executed, 127 when it was not found.
"""

from __future__ import annotations

import errno as _errno
import os

EXIT_SBX = 125
EXIT_CANNOT_EXEC = 126
EXIT_NOT_FOUND = 127


class SbxError(Exception):
    """An error with a message for the user and an optional hint on what to do."""

    exit_code = EXIT_SBX

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(SbxError):
    """Bad options or arguments (podman also exits 125 for these)."""


class SyscallError(SbxError):
    """A failed system call: names the operation, the path and the errno text.

    Modelled on crun's `crun_make_error (err, errno, "open_tree `%s`", src)`.
    """

    def __init__(
        self, op: str, err: int, path: str | None = None, hint: str | None = None
    ) -> None:
        self.op = op
        self.errno = err
        self.path = path
        where = f" {path}" if path else ""
        super().__init__(f"{op}{where}: {os.strerror(err)}", hint)

    @classmethod
    def from_oserror(cls, op: str, exc: OSError, hint: str | None = None) -> SyscallError:
        return cls(op, exc.errno or _errno.EIO, exc.filename, hint)


class ExecError(SbxError):
    """The container's command could not be executed (126) or found (127)."""

    def __init__(self, command: str, err: int) -> None:
        self.command = command
        self.errno = err
        self.exit_code = EXIT_NOT_FOUND if err == _errno.ENOENT else EXIT_CANNOT_EXEC
        hint = None
        if err == _errno.ENOENT:
            hint = "check the command name and the PATH inside the container"
        elif err == _errno.EACCES:
            hint = "the file must be executable (chmod +x) and on an exec-allowed mount"
        super().__init__(f"can't execute {command!r}: {os.strerror(err)}", hint)
