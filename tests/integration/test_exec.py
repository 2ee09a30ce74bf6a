"""`sbx exec` as the unprivileged test user, into containers of the busybox image (the
lifecycle rig of test_lifecycle_commands.py) and of the real Debian image: the
exec'd process is in the container's namespaces (it sees its processes and files,
and the container sees what it writes), gets -u/-e/--env-file/-w, the container's
capabilities and no_new_privs, exits as podman's exec does (0, N, 126, 127, 125),
has a pty with -it, runs on with -d, gets our signals, and dies with a SIGKILLed
sbx without harming the container.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from pathlib import Path

import pytest
import test_lifecycle_commands as rig
from helpers import User, processes_with
from image_rig import ImageLayout, push_layout
from registry_rig import RunningRegistry
from test_lifecycle_commands import Life
from test_run_tty import pty_sbx

pytest_plugins = ["registry_rig", "image_rig"]

life_store = rig.life_store
life = rig.life

NAMESPACES = ("user", "mnt", "pid", "uts", "ipc", "cgroup", "net")


def start(life: Life, name: str, *args: str, script: str = "sleep 1000") -> None:
    life.run("run", "-d", "--name", name, *args, life.image, "sh", "-c", script)


def sbx_exec(life: Life, *args: str, check: bool = True,
             input: str | None = None) -> subprocess.CompletedProcess[str]:
    return life.run("exec", *args, check=check, input=input)


# -- namespaces, processes, files ------------------------------------------------------
def test_exec_is_in_every_namespace_of_the_container(life: Life) -> None:
    start(life, "ns")
    script = "; ".join(f"echo {ns} $(readlink /proc/self/ns/{ns}) $(readlink /proc/1/ns/{ns})"
                       for ns in NAMESPACES)
    out = sbx_exec(life, "ns", "sh", "-c", script).stdout
    rows = [line.split() for line in out.splitlines()]
    assert [r[0] for r in rows] == list(NAMESPACES)
    for ns, mine, pid1 in rows:
        assert mine == pid1, f"exec is not in the container's {ns} namespace: {out}"
    # The container shares the host's network (the default); everything else is its own.
    host = {ns: os.readlink(f"/proc/self/ns/{ns}") for ns in NAMESPACES}
    assert {r[0] for r in rows if r[1] == host[r[0]]} == {"net"}
    hostname = sbx_exec(life, "ns", "hostname").stdout.strip()
    assert hostname == life.inspect("ns")["Id"][:12]


def test_exec_sees_the_containers_processes_and_files(life: Life) -> None:
    start(life, "procs", script="echo made-by-pid1 > /by-pid1; exec sleep 1000")
    life.wait_for(lambda: sbx_exec(life, "procs", "test", "-f", "/by-pid1",
                                   check=False).returncode == 0, what="/by-pid1")
    ps = sbx_exec(life, "procs", "ps").stdout.splitlines()
    assert ps[0].split() == ["PID", "USER", "COMMAND"]
    rows = [line.split(None, 2) for line in ps[1:]]
    assert ["1", "root", "sleep 1000"] in rows
    assert any(r[0] != "1" and r[2] == "ps" for r in rows)  # itself, a pid inside
    assert sbx_exec(life, "procs", "cat", "/by-pid1").stdout == "made-by-pid1\n"


def test_a_file_written_by_exec_is_the_containers(life: Life) -> None:
    start(life, "writer", script="while [ ! -f /from-exec ]; do sleep 0.05; done; "
          "cat /from-exec; exit 4")
    sbx_exec(life, "writer", "sh", "-c", "echo written-by-exec > /from-exec")
    assert life.run("wait", "writer").stdout.strip() == "4"
    assert life.run("logs", "writer").stdout == "written-by-exec\n"
    # It is in the container's writable layer, as `diff` shows.
    assert "A /from-exec" in life.run("diff", "writer").stdout.splitlines()


# -- user, environment, working directory --------------------------------------------
def test_exec_user_env_and_workdir(life: Life, tmp_path: Path) -> None:
    start(life, "who", "-e", "FROM_RUN=1", "-w", "/data")
    out = sbx_exec(life, "who", "sh", "-c", "id; echo $HOME; pwd; echo $FROM_RUN $FROM_IMAGE")
    assert out.stdout.splitlines() == ["uid=0(root) gid=0(root)", "/root",
                                       "/data", "1 busybox"]
    out = sbx_exec(life, "-u", "tester", "-w", "/tmp", "who", "sh", "-c",
                   "id; echo $HOME; pwd; touch /tmp/t; stat -c %U:%G /tmp/t")
    assert out.stdout.splitlines() == ["uid=1000(tester) gid=1000(tester)", "/home/tester",
                                       "/tmp", "tester:tester"]
    out = sbx_exec(life, "-u", "1000:65534", "who", "id")
    assert out.stdout.strip() == "uid=1000(tester) gid=65534(nogroup)"
    env_file = life.root / "exec.env"
    env_file.write_text("# a comment\nFROM_FILE=yes\nOVERRIDDEN=file\n")
    env_file.chmod(0o644)
    out = sbx_exec(life, "-u", "tester", "--env-file", str(env_file), "-e",
                   "OVERRIDDEN=flag", "-e", "HOME=/elsewhere", "who", "sh", "-c",
                   "echo $FROM_FILE $OVERRIDDEN $HOME $FROM_RUN")
    assert out.stdout.strip() == "yes flag /elsewhere 1"


def test_exec_unknown_user_and_bad_workdir(life: Life) -> None:
    start(life, "bad")
    p = sbx_exec(life, "-u", "nosuch", "bad", "true", check=False)
    assert p.returncode == 125
    assert "unable to find user nosuch" in p.stderr
    p = sbx_exec(life, "-w", "/no/such/dir", "bad", "true", check=False)
    assert p.returncode == 127 and "/no/such/dir" in p.stderr
    p = sbx_exec(life, "-w", "relative", "bad", "true", check=False)
    assert p.returncode == 125 and "absolute" in p.stderr


def test_exec_has_the_containers_capabilities_and_no_new_privs(life: Life) -> None:
    start(life, "caps", "--cap-add", "NET_RAW", "--cap-drop", "CHOWN")
    fields = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs")
    script = f"grep -E '^({'|'.join(fields)}):' /proc/$$/status; echo --; " \
             f"grep -E '^({'|'.join(fields)}):' /proc/1/status"
    mine, pid1 = sbx_exec(life, "caps", "sh", "-c", script).stdout.split("--\n")
    assert mine == pid1
    status = dict(line.split(":\t") for line in mine.splitlines())
    assert status["NoNewPrivs"] == "1"
    bnd = int(status["CapBnd"], 16)
    assert bnd & (1 << 13) and not bnd & (1 << 0)  # NET_RAW in, CHOWN out
    # A non-root user keeps the bounding set but no effective capabilities.
    other = sbx_exec(life, "-u", "tester", "caps", "grep", "-E", "^Cap(Eff|Bnd):",
                     "/proc/self/status").stdout
    assert other.split() == ["CapEff:", "0000000000000000", "CapBnd:", status["CapBnd"]]


# -- exit codes ------------------------------------------------------------------------
def test_exec_exit_codes(life: Life) -> None:
    start(life, "codes")
    assert sbx_exec(life, "codes", "true").returncode == 0
    assert sbx_exec(life, "codes", "sh", "-c", "exit 42", check=False).returncode == 42
    p = sbx_exec(life, "codes", "/etc/passwd", check=False)
    assert p.returncode == 126 and "/etc/passwd" in p.stderr
    p = sbx_exec(life, "codes", "no-such-command", check=False)
    assert p.returncode == 127 and "no-such-command" in p.stderr
    p = sbx_exec(life, "codes", "sh", "-c", "kill -9 $$", check=False)
    assert p.returncode == 137
    p = sbx_exec(life, "codes", check=False)
    assert p.returncode == 125


def test_exec_into_a_container_that_does_not_run(life: Life) -> None:
    life.run("create", "--name", "made", life.image, "sleep", "1000")
    p = sbx_exec(life, "made", "true", check=False)
    assert p.returncode == 125
    assert "can only create exec sessions on running containers" in p.stderr
    life.run("run", "--name", "ended", life.image, "true")
    p = sbx_exec(life, "ended", "true", check=False)
    assert p.returncode == 125 and "ended is exited" in p.stderr
    p = sbx_exec(life, "no-such-container", "true", check=False)
    assert p.returncode == 125 and "no container with name or ID" in p.stderr


# -- stdin, terminal, detach, signals -------------------------------------------------
def test_exec_interactive_stdin(life: Life) -> None:
    start(life, "stdin")
    p = sbx_exec(life, "-i", "stdin", "sh", "-c", "tr a-z A-Z", input="piped in\n")
    assert p.stdout == "PIPED IN\n"
    # Without -i the command's stdin is empty.
    p = sbx_exec(life, "stdin", "sh", "-c", "cat; echo end", input="ignored\n")
    assert p.stdout == "end\n"


def test_exec_it_has_a_terminal(life: Life) -> None:
    start(life, "tty")
    with pty_sbx(life.sbx, "exec", "-it", "tty", "sh", env=life.env, size=(33, 101)) as term:
        term.expect(b"# ")
        term.write(b"tty; stty size; echo $TERM; echo sum-$((40+2))\r")
        term.expect(b"sum-42")
        term.write(b"exit 6\r")
        assert term.finish() == 6
    lines = term.text.replace("\r", "").splitlines()
    assert lines[lines.index("sum-42") - 3:lines.index("sum-42")] == [
        lines[lines.index("sum-42") - 3], "33 101", "xterm"]
    assert lines[lines.index("sum-42") - 3].startswith("/dev/pts/")


def test_exec_detached(life: Life, test_user: User) -> None:
    start(life, "det")
    marker = str(secrets.randbelow(10**6) + 10**6)
    t0 = time.monotonic()
    p = sbx_exec(life, "-d", "det", "sh", "-c", f"echo out; echo err >&2; sleep {marker}")
    assert time.monotonic() - t0 < 10
    assert (p.returncode, p.stdout, p.stderr) == (0, "", "")
    life.wait_for(lambda: f"sleep {marker}" in sbx_exec(life, "det", "ps").stdout,
                  what="the detached command in the container's ps")
    # It belongs to the container: stopping it ends the process too.
    life.run("stop", "-t", "0", "det")
    life.wait_for(lambda: processes_with(test_user, marker) == [], timeout=10,
                  what="the detached exec to end with its container")


def test_exec_forwards_signals(life: Life) -> None:
    start(life, "sig")
    p = life.popen("exec", "sig", "sh", "-c",
                   "trap 'echo got-term; exit 3' TERM; echo ready; "
                   "sleep 1000 >/dev/null 2>&1 & wait",
                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout is not None
    assert p.stdout.readline() == "ready\n"
    # Again until it ends: a signal that comes before the shell's `wait` starts waits
    # for the sleep in busybox's ash.
    deadline = time.monotonic() + 20
    while p.poll() is None and time.monotonic() < deadline:
        p.send_signal(signal.SIGTERM)
        time.sleep(0.3)
    out, err = p.communicate(timeout=5)
    assert (p.returncode, out) == (3, "got-term\n"), err


def test_sigkilled_exec_leaves_the_container_usable(life: Life, test_user: User) -> None:
    ctr_marker, exec_marker = (str(secrets.randbelow(10**6) + 10**6) for _ in range(2))
    start(life, "victim", script=f"exec sleep {ctr_marker}")
    p = life.popen("exec", "victim", "sh", "-c", f"echo ready; exec sleep {exec_marker}",
                   stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline() == "ready\n"
    assert processes_with(test_user, exec_marker)
    p.kill()
    p.wait(timeout=10)
    # The exec'd process dies with its sbx (PR_SET_PDEATHSIG), the container does not.
    life.wait_for(lambda: processes_with(test_user, exec_marker) == [], timeout=10,
                  what="the exec'd process to die with sbx")
    assert life.status("victim") == "running"
    assert sbx_exec(life, "victim", "echo", "again").stdout == "again\n"
    life.run("rm", "-f", "victim")
    assert life.ps() == [] and life.record_dirs() == []
    assert not life.run_dirs.exists() or os.listdir(life.run_dirs) == []
    life.wait_for(lambda: processes_with(test_user, ctr_marker) == [], timeout=10,
                  what="the container's processes to be gone")


# -- the Debian image -------------------------------------------------------------------
@pytest.fixture(scope="module")
def debian_ref(registry: RunningRegistry, debian_layout: ImageLayout) -> str:
    push_layout(debian_layout, registry.host, "sbx/debian:exec")
    return f"{registry.host}/sbx/debian:exec"


def test_exec_in_debian(life: Life, debian_ref: str) -> None:
    life.run("run", "-d", "--tls-verify=false", "--name", "deb", debian_ref, "sleep", "1000",
             timeout=300)
    out = sbx_exec(life, "-u", "nobody", "deb", "python3", "-c",
                   "import os, pwd; print(pwd.getpwuid(os.getuid()).pw_name, os.getcwd(), "
                   "os.environ['HOME']); print(sorted(int(p) for p in os.listdir('/proc') "
                   "if p.isdigit())[0])").stdout.split()
    assert out == ["nobody", "/", "/nonexistent", "1"]
    out = sbx_exec(life, "deb", "sh", "-c",
                   "dpkg-query -W -f='${Status}\\n' python3; cat /proc/1/cmdline | tr '\\0' ' '")
    assert out.stdout.splitlines() == ["install ok installed", "sleep 1000 "]
    assert sbx_exec(life, "-u", "nobody", "deb", "touch", "/root/x",
                    check=False).returncode == 1
