"""`sbx top`, `sbx attach`, `sbx start -a` of a running container and `sbx run -d -i`,
as the unprivileged test user on the busybox image (the lifecycle rig of
test_lifecycle_commands.py) and the Debian image.

top: the container's processes only, pids as the container numbers them, users
named from its /etc/passwd, podman's columns. attach: output from then on, input to
a container made with -i (its stdin kept open by the monitor), the container's exit
status, ctrl-p ctrl-q leaving it running, and a clear error where there is nothing
to attach to.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time

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

TOP_HEADER = ["USER", "PID", "PPID", "%CPU", "ELAPSED", "TTY", "TIME", "COMMAND"]


def top_rows(life: Life, *args: str) -> list[list[str]]:
    out = life.run("top", *args).stdout.splitlines()
    return [line.split() for line in out]


# -- top -------------------------------------------------------------------------------
def test_top_lists_the_containers_processes(life: Life) -> None:
    marker = str(secrets.randbelow(10**6) + 10**6)
    life.run("run", "-d", "--name", "busy", life.image, "sh", "-c",
             f"sleep {marker} & exec sleep 1000")
    life.run("exec", "-d", "-u", "tester", "busy", "sleep", "999")
    life.wait_for(lambda: len(top_rows(life, "busy")) == 4, what="three processes in top")
    rows = top_rows(life, "busy")
    assert rows[0] == TOP_HEADER
    by_cmd = {" ".join(r[7:]): r for r in rows[1:]}
    assert set(by_cmd) == {"sleep 1000", f"sleep {marker}", "sleep 999"}
    # pid 1 is the container's first process; the background sleep is its child; the
    # exec'd one's parent is outside the container (podman shows 0 too).
    assert by_cmd["sleep 1000"][:3] == ["root", "1", "0"]
    assert by_cmd[f"sleep {marker}"][0] == "root" and by_cmd[f"sleep {marker}"][2] == "1"
    assert by_cmd["sleep 999"][0] == "tester" and by_cmd["sleep 999"][2] == "0"
    for row in rows[1:]:
        assert row[3] == "0.000" or float(row[3]) < 100
        assert row[4].endswith("s") and row[5] == "?"
    # Descriptors, as podman top takes them.
    rows = top_rows(life, "busy", "pid", "user", "huser", "args")
    assert rows[0] == ["PID", "USER", "HUSER", "COMMAND"]
    hosts = {" ".join(r[3:]): r[2] for r in rows[1:]}
    assert hosts["sleep 1000"] == str(life.sbx.user.uid)  # container root is the user
    assert int(hosts["sleep 999"]) != life.sbx.user.uid  # a subordinate id
    # Anything else is the container's own ps.
    ps = life.run("top", "busy", "-o", "pid,args").stdout
    assert "sleep 999" in ps


def test_top_of_a_container_that_does_not_run(life: Life) -> None:
    life.run("create", "--name", "idle", life.image, "true")
    p = life.run("top", "idle", check=False)
    assert p.returncode == 125 and "idle is created" in p.stderr
    p = life.run("top", "nope", check=False)
    assert p.returncode == 125 and "no container with name or ID" in p.stderr


# -- attach ----------------------------------------------------------------------------
def test_run_d_i_keeps_stdin_for_attach(life: Life) -> None:
    life.run("run", "-d", "-i", "--name", "echoer", life.image, "sh", "-c",
             "while read line; do echo got-$line; echo err-$line >&2; done; echo end; exit 3")
    time.sleep(0.5)  # nothing reads its stdin yet: it must wait, not see an end
    assert life.status("echoer") == "running"
    p = life.run("attach", "echoer", input="one\ntwo\n", check=False)
    # Our stdin's end closes the container's (podman's attach does the same).
    assert (p.returncode, p.stdout) == (3, "got-one\ngot-two\nend\n"), p.stderr
    assert p.stderr == "err-one\nerr-two\n"
    assert life.status("echoer") == "exited"
    assert life.run("logs", "echoer").stdout == "got-one\ngot-two\nend\n"


def test_attach_receives_output_from_then_on(life: Life) -> None:
    life.run("run", "-d", "--name", "ticker", life.image, "sh", "-c",
             "i=0; while [ $i -lt 40 ]; do echo tick-$i; i=$((i+1)); sleep 0.1; done; exit 5")
    p = life.run("attach", "--no-stdin", "ticker", check=False)
    lines = p.stdout.splitlines()
    assert p.returncode == 5 and lines and lines[-1] == "tick-39", p.stderr
    # Only what came after it attached, in order, with nothing lost on the way.
    first = int(lines[0].split("-")[1])
    assert lines == [f"tick-{i}" for i in range(first, 40)]


def test_start_a_of_a_running_container_attaches(life: Life) -> None:
    life.run("create", "-i", "--name", "later", life.image, "sh", "-c",
             "read line; echo read-$line; exit 7")
    life.run("start", "later")  # detached: its monitor keeps stdin open
    assert life.status("later") == "running"
    p = life.run("start", "-a", "-i", "later", input="x\n", check=False)
    assert (p.returncode, p.stdout) == (7, "read-x\n"), p.stderr


def test_detach_keys_leave_the_container_running(life: Life) -> None:
    life.run("run", "-d", "-it", "--name", "term", life.image, "sh")
    with pty_sbx(life.sbx, "attach", "term", env=life.env, size=(33, 101)) as term:
        time.sleep(0.5)
        term.write(b"echo sum-$((40+2)); stty size\r")
        term.expect(b"33 101")
        term.write(b"\x10\x11")  # ctrl-p ctrl-q
        assert term.finish() == 0
    assert "sum-42" in term.text
    assert life.status("term") == "running"
    # A custom sequence; and the shell is still the same one.
    with pty_sbx(life.sbx, "attach", "--detach-keys", "ctrl-x,e", "term", env=life.env,
                 size=(24, 80)) as term:
        time.sleep(0.5)
        term.write(b"echo again-$((1+1))\r")
        term.expect(b"again-2")
        term.write(b"\x18e")
        assert term.finish() == 0
    assert life.status("term") == "running"
    # Typing exit ends the container; attach reports its status.
    with pty_sbx(life.sbx, "attach", "term", env=life.env) as term:
        time.sleep(0.5)
        term.write(b"exit 4\r")
        assert term.finish() == 4
    assert life.status("term") == "exited"


def test_bad_detach_keys_and_nothing_to_attach_to(life: Life) -> None:
    life.run("run", "-d", "--name", "quiet", life.image, "sleep", "1000")
    p = life.run("attach", "--detach-keys", "ctrl-1", "quiet", check=False)
    assert p.returncode == 125 and "invalid detach keys" in p.stderr
    life.run("create", "--name", "never", life.image, "true")
    p = life.run("attach", "never", check=False)
    assert p.returncode == 125 and "only attach to running containers" in p.stderr
    fg = life.popen("run", "--name", "fg", life.image, "sleep", "1000",
                    stdout=subprocess.DEVNULL)
    life.wait_for(lambda: any(r["Names"] == ["fg"] and r["State"] == "running"
                              for r in life.ps()), what="fg to run")
    p = life.run("attach", "fg", check=False)
    assert p.returncode == 125 and "foreground of another sbx" in p.stderr
    fg.kill()
    fg.wait(timeout=10)


def test_killed_attach_leaves_the_container_and_rm_cleans(life: Life, test_user: User) -> None:
    marker = str(secrets.randbelow(10**6) + 10**6)
    life.run("run", "-d", "-i", "--name", "held", life.image, "sh", "-c",
             f"cat; exec sleep {marker}")
    p = life.popen("attach", "held", stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert p.stdin is not None and p.stdout is not None
    p.stdin.write(b"ping\n")
    p.stdin.flush()
    assert p.stdout.readline() == b"ping\n"
    p.kill()
    p.wait(timeout=10)
    time.sleep(0.3)
    assert life.status("held") == "running"
    # A second client still reaches the same stdin; its end is the container's.
    q = life.popen("attach", "held", stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert q.stdin is not None and q.stdout is not None
    q.stdin.write(b"pong\n")
    q.stdin.close()
    assert q.stdout.readline() == b"pong\n"
    life.wait_for(lambda: processes_with(test_user, marker) != [], what="cat to end")
    assert q.poll() is None  # still attached: the container runs on
    life.run("rm", "-f", "held")
    assert life.ps() == [] and life.record_dirs() == []
    assert not life.run_dirs.exists() or os.listdir(life.run_dirs) == []
    life.wait_for(lambda: processes_with(test_user, marker) == [], what="nothing left")


# -- Debian ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def debian_ref(registry: RunningRegistry, debian_layout: ImageLayout) -> str:
    push_layout(debian_layout, registry.host, "sbx/debian:attach")
    return f"{registry.host}/sbx/debian:attach"


def test_debian_top_and_attach(life: Life, debian_ref: str) -> None:
    life.run("run", "-d", "-i", "--tls-verify=false", "--name", "deb", "-u", "nobody",
             debian_ref, "python3", "-c",
             "import sys\nfor line in sys.stdin: print(line.strip()[::-1], flush=True)",
             timeout=300)
    rows = top_rows(life, "deb", "user", "pid", "comm")
    assert rows[0] == ["USER", "PID", "COMMAND"]
    assert ["nobody", "1", "python3"] in rows[1:]
    p = life.run("attach", "deb", input="olleh\nnaibed\n", check=False)
    assert (p.returncode, p.stdout) == (0, "hello\ndebian\n"), p.stderr
