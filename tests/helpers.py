"""The test rig: the unprivileged users, running sbx as them, rootfs builders.

Integration tests start as root (scripts/test.sh) and drop to the users that
scripts/setup.sh made: `sbxtest`, with /etc/subuid and /etc/subgid ranges, and
`sbxnosub`, with none (the single-id fallback). sbx always runs as one of them,
from the venv that runs pytest, with a clean environment, as a user would after
logging in. Nothing here imports sbx: the tests drive the installed command.
"""

from __future__ import annotations

import fcntl
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import termios
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
MKROOTFS = REPO / "scripts" / "mkrootfs-busybox.sh"
TEST_USER = "sbxtest"
NOSUB_USER = "sbxnosub"
CLEAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

NOT_ROOT = "integration tests start as root and drop to the test user; run scripts/test.sh"


def skip_is_failure(ci_env: str | None, is_integration: bool) -> bool:
    """Whether a skipped test must count as a failure: an integration test in CI."""
    return is_integration and ci_env == "true"


def skip_reason(longrepr: object) -> str:
    """The reason pytest recorded for a skip; its report holds (path, line, reason)."""
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        reason = str(longrepr[2])
        return reason.removeprefix("Skipped: ")
    return str(longrepr)


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int
    home: Path

    def env(self, overrides: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment of a fresh login: no XDG_RUNTIME_DIR, nothing of root's."""
        env = {
            "PATH": CLEAN_PATH,
            "HOME": str(self.home),
            "USER": self.name,
            "LOGNAME": self.name,
            "LANG": "C.UTF-8",
        }
        env.update(overrides or {})
        return env

    def chown(self, path: Path) -> None:
        os.chown(path, self.uid, self.gid)


def lookup_user(name: str) -> User | None:
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        return None
    return User(pw.pw_name, pw.pw_uid, pw.pw_gid, Path(pw.pw_dir))


def missing_user_reason(name: str) -> str:
    return f"user {name} missing: run scripts/setup.sh"


def sbx_script() -> Path:
    """The sbx console script of the venv that runs pytest (/opt/sbx/venv)."""
    script = Path(sys.executable).parent / "sbx"
    if not os.access(script, os.X_OK):
        raise RuntimeError(
            f"{script} is missing: run pytest with the venv's python "
            "(/opt/sbx/venv/bin/python -m pytest), which scripts/setup.sh installs sbx into"
        )
    return script


class SbxRunner:
    """Runs the installed sbx as one unprivileged user, with a clean environment."""

    def __init__(self, user: User, script: Path | None = None,
                 base_env: Mapping[str, str] | None = None) -> None:
        self.user = user
        self.script = script or sbx_script()
        # Under every call's own env: the session's data directory, so containers
        # and images the suite leaves do not pile up in the user's home.
        self.base_env = dict(base_env or {})

    def argv(self, args: Sequence[str | os.PathLike[str]]) -> list[str]:
        return [str(self.script), *map(str, args)]

    def run(
        self,
        *args: str | os.PathLike[str],
        input: str | None = None,
        timeout: float = 60,
        cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        check: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        """Run `sbx ARGS...` to completion; output is captured as text."""
        return subprocess.run(
            self.argv(args),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
            # The checkout may be unreadable to the user (CI clones under /root).
            cwd=cwd or self.user.home,
            env=self.user.env({**self.base_env, **(env or {})}),
            user=self.user.uid,
            group=self.user.gid,
            extra_groups=[],
        )

    def popen(
        self,
        *args: str | os.PathLike[str],
        cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> subprocess.Popen[Any]:
        """Start `sbx ARGS...` for long-running cases; kwargs go to Popen
        (stdin, stdout, stderr, text, start_new_session, preexec_fn, pass_fds...).
        preexec_fn runs after the switch to the user."""
        return subprocess.Popen(
            self.argv(args),
            cwd=cwd or self.user.home,
            env=self.user.env({**self.base_env, **(env or {})}),
            user=self.user.uid,
            group=self.user.gid,
            extra_groups=[],
            **kwargs,
        )

    def spawn_pty(
        self,
        *args: str | os.PathLike[str],
        cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> tuple[int, int]:
        """Start `sbx ARGS...` as the user on a new pseudo-terminal, as its
        session leader with the terminal as its controlling tty (what pty.fork()
        does, plus dropping to the user). Returns (pid, master_fd); the caller
        reads and writes master_fd and reaps pid with os.waitpid."""
        argv = self.argv(args)
        environ = self.user.env({"TERM": "xterm", **self.base_env, **(env or {})})
        workdir = os.fspath(cwd or self.user.home)
        master, slave = os.openpty()
        pid = os.fork()
        if pid == 0:  # the child: never return into pytest
            try:
                os.close(master)
                os.setsid()
                fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
                for fd in (0, 1, 2):
                    os.dup2(slave, fd)
                if slave > 2:
                    os.close(slave)
                os.setgroups([])
                os.setgid(self.user.gid)
                os.setuid(self.user.uid)
                os.chdir(workdir)
                os.execve(argv[0], argv, environ)
            except BaseException as err:
                os.write(2, f"spawn_pty: {err!r}\n".encode())
            finally:
                os._exit(127)
        os.close(slave)
        return pid, master


def make_user_dir(parent: Path, name: str, user: User) -> Path:
    """parent/name, owned by the user, mode 0755."""
    path = parent / name
    path.mkdir(mode=0o755)
    path.chmod(0o755)  # mkdir's mode is cut by the umask
    user.chown(path)
    return path


def make_tmp_dir(prefix: str) -> Path:
    """A directory under /tmp that every test user can traverse (mode 0755)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    return path


def build_busybox_rootfs(user: User, dest: Path, timeout: float = 120) -> Path:
    """Build a busybox rootfs at dest as the user, so its files are theirs.

    The script is fed on stdin: the user may not be able to read the checkout."""
    subprocess.run(
        ["/bin/bash", "-s", "--", str(dest)],
        input=MKROOTFS.read_text(),
        text=True,
        capture_output=True,
        check=True,
        timeout=timeout,
        cwd="/",
        env=user.env(),
        user=user.uid,
        group=user.gid,
        extra_groups=[],
    )
    return dest


def _mounts_under(path: Path) -> list[str]:
    """Mount points at or below path, deepest first (from /proc/self/mountinfo)."""
    prefix = str(path).rstrip("/") + "/"
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].replace("\\040", " ")
            if point == str(path) or point.startswith(prefix):
                points.append(point)
    return sorted(points, key=len, reverse=True)


def remove_tree(path: Path) -> None:
    """Remove a test directory as root: its files may belong to subordinate ids,
    and a test that failed may have left a FUSE mount in it."""
    for point in _mounts_under(path):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)
    shutil.rmtree(path)


def processes_with(user: User, marker: str) -> list[str]:
    """Live processes of the user whose command line holds `marker`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}").st_uid != user.uid:
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{entry}/stat") as f:
                state = f.read().rpartition(")")[2].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            continue
        if marker in cmdline and state != "Z":
            found.append(f"{entry}: {cmdline}")
    return found
