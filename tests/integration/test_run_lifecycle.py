"""`sbx run` process lifecycle: exit codes, --init, signals and standard input.

Exit codes follow docker and podman: the command's own status, 125 when sbx failed,
126 when the command cannot be executed, 127 when it is not found, 128+N when it was
killed by signal N. Pid 1 of a pid namespace ignores signals it has no handler for
(pid_namespaces(7)), which is why --init exists.

Long-running cases use SbxRunner.popen and find the container's init on the host as
the child of sbx whose NSpid ends in 1; they wait for the signal handlers they need
(SigCgt in /proc/PID/status) instead of sleeping.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import SbxRunner, User


def run(sbx: SbxRunner, rootfs: Path, *args: str, input: str | None = None,
        timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return sbx.run("run", "--rootfs", rootfs, *args, input=input, timeout=timeout)


def wait_for(cond: Callable[[], object], timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


def status_field(pid: int, name: str) -> str | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key == name:
                    return value.strip()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def find_container_init(sbx_pid: int) -> int | None:
    """The host pid of the container's pid 1: a child of sbx (its subreaper)."""
    try:
        children = Path(f"/proc/{sbx_pid}/task/{sbx_pid}/children").read_text().split()
    except FileNotFoundError:
        return None
    for child in map(int, children):
        nspid = (status_field(child, "NSpid") or "").split()
        if len(nspid) == 2 and nspid[1] == "1":
            return child
    return None


def container_init(sbx_pid: int, timeout: float = 5.0) -> int:
    deadline = time.monotonic() + timeout
    while (pid := find_container_init(sbx_pid)) is None:
        if time.monotonic() > deadline:
            pytest.fail(f"no container pid 1 under sbx (pid {sbx_pid}) after {timeout}s")
        time.sleep(0.01)
    return pid


def catches(pid: int, signum: int) -> bool:
    caught = status_field(pid, "SigCgt")
    return caught is not None and bool(int(caught, 16) & (1 << (signum - 1)))


def takes(pid: int, signum: int) -> bool:
    """Whether pid handles signum: caught, or blocked for a signalfd."""
    bit = 1 << (signum - 1)
    masks = [status_field(pid, f) for f in ("SigCgt", "SigBlk")]
    return any(m is not None and int(m, 16) & bit for m in masks)


def is_stopped(pid: int) -> bool:
    state = status_field(pid, "State")
    return state is None or state.startswith(("T", "Z"))


def is_gone(pid: int) -> bool:
    state = status_field(pid, "State")
    return state is None or state.startswith("Z")


@contextlib.contextmanager
def started(sbx: SbxRunner, *args: str) -> Iterator[subprocess.Popen[str]]:
    proc = sbx.popen(*args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            # Kill the container rather than sbx, so that sbx still removes its state.
            pid1 = find_container_init(proc.pid)
            if pid1 is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid1, signal.SIGKILL)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
        proc.communicate(timeout=10)


# -- exit codes -------------------------------------------------------------------------
@pytest.mark.parametrize("code", [0, 1, 42, 255])
def test_exit_status_passes_through(sbx: SbxRunner, busybox_rootfs: Path, code: int) -> None:
    assert run(sbx, busybox_rootfs, "sh", "-c", f"exit {code}").returncode == code


@pytest.mark.parametrize("init", [[], ["--init"]], ids=["plain", "init"])
@pytest.mark.parametrize("command", ["no-such-command", "/no/such/path"])
def test_missing_command_is_127(
    sbx: SbxRunner, busybox_rootfs: Path, init: list[str], command: str
) -> None:
    result = run(sbx, busybox_rootfs, *init, command)
    assert result.returncode == 127
    assert f"sbx: can't execute '{command}': No such file or directory" in result.stderr
    assert "hint: " in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("init", [[], ["--init"]], ids=["plain", "init"])
@pytest.mark.parametrize("command", ["/etc/passwd", "/bin"])
def test_non_executable_is_126(
    sbx: SbxRunner, busybox_rootfs: Path, init: list[str], command: str
) -> None:
    result = run(sbx, busybox_rootfs, *init, command)
    assert result.returncode == 126
    assert f"sbx: can't execute '{command}': Permission denied" in result.stderr


# -- --init -----------------------------------------------------------------------------
def test_init_runs_the_command_as_a_child_of_pid_1(sbx: SbxRunner, busybox_rootfs: Path) -> None:
    result = run(sbx, busybox_rootfs, "--init", "sh", "-c",
                 "echo $$; echo $PPID; tr '\\0' '\\n' < /proc/1/cmdline | head -n 1")
    assert result.returncode == 0, result.stderr
    pid, ppid, init_argv0 = result.stdout.splitlines()
    assert pid != "1"
    assert ppid == "1"
    assert init_argv0 != "sh"


def test_init_passes_the_exit_status(sbx: SbxRunner, busybox_rootfs: Path) -> None:
    assert run(sbx, busybox_rootfs, "--init", "sh", "-c", "exit 9").returncode == 9


def test_signal_death_is_128_plus_n_with_init(sbx: SbxRunner, busybox_rootfs: Path) -> None:
    result = run(sbx, busybox_rootfs, "--init", "sh", "-c", "kill -KILL $$; echo survived")
    assert result.returncode == 128 + signal.SIGKILL
    assert "survived" not in result.stdout


def test_pid_1_without_init_ignores_its_own_kill(sbx: SbxRunner, busybox_rootfs: Path) -> None:
    """The contrast: without --init the command is pid 1, which the kernel shields."""
    result = run(sbx, busybox_rootfs, "sh", "-c", "kill -KILL $$; echo survived")
    assert result.returncode == 0
    assert result.stdout == "survived\n"


def test_init_reaps_orphans(sbx: SbxRunner, busybox_rootfs: Path) -> None:
    # The subshell exits at once, so its `sleep` is re-parented to pid 1, which must
    # reap it when it exits; ps then shows no zombie.
    result = run(sbx, busybox_rootfs, "--init", "sh", "-c",
                 "(sleep 0.1 &); sleep 0.6; ps -o pid,ppid,stat,comm")
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()[1:]]
    assert rows, result.stdout
    assert not [r for r in rows if r[2].startswith("Z")], result.stdout


# pid 1 must carry none of sbx's host environment or descriptors: processes in the
# container, being the same uid, could read both through /proc/1 (an --init that was a
# fork of sbx did). docker and podman exec their init (tini, catatonit).
@pytest.mark.parametrize("init", [pytest.param([], id="plain"),
                                  pytest.param(["--init"], id="init")])
def test_host_environment_is_not_visible_in_pid_1(
    sbx: SbxRunner, busybox_rootfs: Path, init: list[str]
) -> None:
    result = sbx.run("run", *init, "--rootfs", busybox_rootfs, "sh", "-c",
                     "echo token=$API_TOKEN; tr '\\0' '\\n' < /proc/1/environ",
                     env={"API_TOKEN": "host-secret-value"}, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("token=\n")  # not passed without -e API_TOKEN
    assert "host-secret-value" not in result.stdout


@pytest.mark.parametrize("init", [pytest.param([], id="plain"),
                                  pytest.param(["--init"], id="init")])
def test_inherited_descriptors_do_not_reach_the_container(
    sbx: SbxRunner, busybox_rootfs: Path, workdir: Path, init: list[str]
) -> None:
    """A directory descriptor leaked by sbx's caller would open the host's filesystem
    to the container (runc's CVE-2024-21626 was such a leak)."""
    (workdir / "host-only-file").write_text("")
    low = os.open(workdir, os.O_RDONLY | os.O_DIRECTORY)
    fd = fcntl.fcntl(low, fcntl.F_DUPFD, 100)  # a number sbx itself will not use
    os.close(low)
    try:
        proc = sbx.popen("run", *init, "--rootfs", str(busybox_rootfs), "sh", "-c",
                         f"ls /proc/1/fd /proc/self/fd; echo --; "
                         f"ls /proc/1/fd/{fd}/ 2>&1; exit 0",
                         pass_fds=(fd,), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
        out, err = proc.communicate(timeout=30)
    finally:
        os.close(fd)
    assert proc.returncode == 0, err
    listing, _, through_fd = out.partition("--\n")
    assert "host-only-file" not in through_fd
    assert str(fd) not in listing.split()


# -- signals ----------------------------------------------------------------------------
def test_sigterm_to_sbx_reaches_the_command_under_init(
    sbx: SbxRunner, busybox_rootfs: Path
) -> None:
    with started(sbx, "run", "--init", "--rootfs", str(busybox_rootfs), "sleep", "30") as proc:
        init = container_init(proc.pid)
        # An init either catches signals or blocks them to read a signalfd (catatonit,
        # tini); sbx's Python before the exec does neither for SIGTERM.
        wait_for(lambda: takes(init, signal.SIGTERM), what="the init to take SIGTERM")
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 128 + signal.SIGTERM
        assert time.monotonic() - sent < 5


def runs_python(pid: int) -> bool:
    """Whether pid is still sbx's Python (the container before its exec)."""
    try:
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return b"python" in os.path.basename(argv0)


def test_sigterm_at_start_is_not_lost_under_init(sbx: SbxRunner, busybox_rootfs: Path) -> None:
    """A user who stops `sbx run --init` right after starting it: the container is held
    (SIGSTOP) before its exec, sbx forwards SIGTERM, the container goes on; the command
    must still get the signal."""
    for _attempt in range(20):
        with started(sbx, "run", "--init", "--rootfs", str(busybox_rootfs),
                     "sleep", "30") as proc:
            pid1 = container_init(proc.pid)
            os.kill(pid1, signal.SIGSTOP)
            wait_for(lambda pid=pid1: is_stopped(pid), what="the container to stop")
            if not runs_python(pid1):
                continue  # it had already exec'd: try again
            wait_for(lambda: takes(proc.pid, signal.SIGTERM), what="sbx's forwarding")
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.2)  # sbx forwards from its handler at once
            os.kill(pid1, signal.SIGCONT)
            assert proc.wait(timeout=2) == 128 + signal.SIGTERM  # at once when forwarded
            return
    pytest.fail("the container exec'd before it could be stopped, 20 times")


@pytest.mark.parametrize(("sig", "code"), [
    (signal.SIGTERM, 7), (signal.SIGINT, 8), (signal.SIGHUP, 9), (signal.SIGUSR1, 10),
], ids=["TERM", "INT", "HUP", "USR1"])
def test_signals_to_sbx_are_forwarded_to_pid_1(
    sbx: SbxRunner, busybox_rootfs: Path, sig: signal.Signals, code: int
) -> None:
    name = sig.name.removeprefix("SIG")
    script = f"trap 'exit {code}' {name}; while :; do sleep 0.1; done"
    with started(sbx, "run", "--rootfs", str(busybox_rootfs), "sh", "-c", script) as proc:
        pid1 = container_init(proc.pid)
        # Before exec, pid 1 is still Python, whose own SIGINT handler would show in
        # SigCgt: wait for the shell itself and its trap.
        wait_for(lambda: status_field(pid1, "Name") == "sh" and catches(pid1, sig),
                 what=f"the shell's {name} trap")
        proc.send_signal(sig)
        assert proc.wait(timeout=5) == code


def test_container_killed_from_the_host_is_128_plus_n(
    sbx: SbxRunner, busybox_rootfs: Path
) -> None:
    with started(sbx, "run", "--rootfs", str(busybox_rootfs), "sleep", "30") as proc:
        pid1 = container_init(proc.pid)
        wait_for(lambda: status_field(pid1, "Name") == "sleep", what="the exec of sleep")
        os.kill(pid1, signal.SIGKILL)
        assert proc.wait(timeout=5) == 128 + signal.SIGKILL


def state_dirs_with_hostname(user: User, hostname: str) -> list[Path]:
    base = Path(f"/tmp/sbx-{user.uid}/containers")
    if not base.is_dir():
        return []
    return [d for d in base.iterdir()
            if (d / "hostname").is_file() and (d / "hostname").read_text().strip() == hostname]


def test_container_dies_with_sbx(sbx: SbxRunner, busybox_rootfs: Path, test_user: User) -> None:
    marker = f"sbx-dies-{secrets.token_hex(4)}"
    with started(sbx, "run", "--hostname", marker, "--rootfs", str(busybox_rootfs),
                 "sleep", "30") as proc:
        pid1 = container_init(proc.pid)
        # Once the command runs. (Killed between its "go" and PR_SET_PDEATHSIG, pid 1
        # outlives sbx: a race in process._container this test does not try to hit.)
        wait_for(lambda: status_field(pid1, "Name") == "sleep", what="the exec of sleep")
        try:
            proc.kill()  # SIGKILL: sbx can do nothing, the kernel must (PR_SET_PDEATHSIG)
            proc.wait(timeout=5)
            wait_for(lambda: is_gone(pid1), what="the container to die with sbx")
        finally:
            # A killed sbx cannot remove its state directory; do it for it.
            for leftover in state_dirs_with_hostname(test_user, marker):
                shutil.rmtree(leftover)


# -- standard input ---------------------------------------------------------------------
def test_without_i_stdin_is_empty(sbx: SbxRunner, busybox_rootfs: Path) -> None:
    start = time.monotonic()
    result = run(sbx, busybox_rootfs, "sh", "-c", "cat; readlink /proc/self/fd/0",
                 input="data that must not arrive\n", timeout=10)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "/dev/null\n"
    assert time.monotonic() - start < 5


def test_with_i_stdin_is_passed(sbx: SbxRunner, busybox_rootfs: Path) -> None:
    result = run(sbx, busybox_rootfs, "-i", "cat", input="line one\nline two\n", timeout=10)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "line one\nline two\n"
    result = run(sbx, busybox_rootfs, "-i", "sh", "-c", "read x; echo got=$x",
                 input="hello\n", timeout=10)
    assert result.stdout == "got=hello\n"


def test_with_i_large_input_arrives_whole(sbx: SbxRunner, busybox_rootfs: Path) -> None:
    data = "0123456789abcdef" * 16384 + "\n"  # 256 KiB and a newline
    result = run(sbx, busybox_rootfs, "-i", "wc", "-c", input=data, timeout=20)
    assert result.stdout.strip() == str(len(data))
