"""ProfileError: what is wrong with a profile, said as compilers say it.

Each problem is one line, "FILE:LINE:COL: message" for TOML syntax (tomllib's own
position) and "FILE:LINE: key.path: message" for schema problems (the line found by
schema.find_line), so editors and terminals can jump to it, as gcc's and ruff's do.
A profile with any problem never starts a container.
"""

from __future__ import annotations

from collections.abc import Sequence

from sandbox.errors import SbxError


class ProfileError(SbxError):
    """One or more problems in profiles; `problems` holds each as a line."""

    def __init__(self, problems: str | Sequence[str], hint: str | None = None) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        if not self.problems:
            raise ValueError("ProfileError needs at least one problem")
        super().__init__("\n".join(self.problems), hint)


class ProfileNotFound(ProfileError):
    """No profile of that name anywhere discovery looks (or no such file)."""

    def __init__(self, name: str, looked: Sequence[str], hint: str | None = None) -> None:
        self.name = name
        self.looked = list(looked)
        where = ", ".join(self.looked)
        super().__init__(f"no profile named {name!r} (looked in {where})",
                         hint or "`sbx profile list` shows the profiles there are")
