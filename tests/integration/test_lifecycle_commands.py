"""The container lifecycle as the unprivileged test user, on the busybox image pulled
from the registry rig: run (foreground, -d, --rm), create, start (-a), stop (the stop
signal, then SIGKILL after --time), kill, restart, rm, ps, wait, inspect, logs,
rename, container prune and the `sbx container` group, with their exit codes.

Every test gets its own XDG_DATA_HOME and XDG_RUNTIME_DIR (a `Life`), so `ps -a`
lists only its containers; the image store is shared by symlink, pulled once per
module. `Life` is also the rig of test_lifecycle_reliability.py.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from helpers import SbxRunner, User, make_tmp_dir, remove_tree
from image_rig import BUSYBOX_CONFIG, PushedImages

pytest_plugins = ["registry_rig", "image_rig"]

HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass
class Life:
    """sbx as the test user with containers of its own (and a shared image store)."""

    sbx: SbxRunner
    root: Path
    image: str
    spawned: list[subprocess.Popen[Any]] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        return {"XDG_DATA_HOME": str(self.root / "data"),
                "XDG_RUNTIME_DIR": str(self.root / "run")}

    @property
    def containers(self) -> Path:
        return self.root / "data" / "sbx" / "containers"

    @property
    def names(self) -> Path:
        return self.root / "data" / "sbx" / "container-names"

    @property
    def run_dirs(self) -> Path:
        return self.root / "run" / "sbx" / "containers"

    def run(self, *args: str, check: bool = True, timeout: float = 60,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        p = self.sbx.run(*args, env=self.env, timeout=timeout, input=input)
        if check:
            assert p.returncode == 0, f"sbx {' '.join(args)}: exit {p.returncode}\n{p.stderr}"
        return p

    def popen(self, *args: str, **kwargs: Any) -> subprocess.Popen[Any]:
        p = self.sbx.popen(*args, env=self.env, **kwargs)
        self.spawned.append(p)
        return p

    def ps(self, *args: str) -> list[dict[str, Any]]:
        return json.loads(self.run("ps", "-a", "--format", "json", *args).stdout)

    def inspect(self, name: str) -> dict[str, Any]:
        return json.loads(self.run("inspect", name).stdout)[0]

    def record_dirs(self) -> list[str]:
        return sorted(os.listdir(self.containers)) if self.containers.is_dir() else []

    def wait_for(self, cond: Callable[[], object], timeout: float = 10,
                 what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout}s waiting for {what}")
            time.sleep(0.02)

    def status(self, name: str) -> str:
        return str(self.inspect(name)["State"]["Status"])


@pytest.fixture(scope="module")
def life_store(test_user: User, pushed_images: PushedImages) -> Iterator[tuple[Path, str]]:
    """An image store with the busybox image, pulled once for the module."""
    root = make_tmp_dir("sbx-life-")
    try:
        test_user.chown(root)
        box = Life(SbxRunner(test_user), root / "store", pushed_images.busybox.ref)
        for d in (box.root, box.root / "run"):
            d.mkdir(mode=0o700)
            test_user.chown(d)
        box.run("pull", "-q", "--tls-verify=false", box.image)
        yield root / "store" / "data" / "sbx" / "storage", box.image
    finally:
        remove_tree(root)


def make_life(sbx: SbxRunner, user: User, store: Path, image: str) -> Life:
    root = make_tmp_dir("sbx-life-t-")
    user.chown(root)
    data = root / "data" / "sbx"
    data.mkdir(parents=True)
    (data / "storage").symlink_to(store)
    (root / "run").mkdir(mode=0o700)
    for d in (root / "data", data, root / "run"):
        user.chown(d)
    os.lchown(data / "storage", user.uid, user.gid)
    return Life(sbx, root, image)


def end_life(life: Life) -> None:
    """Kill what the test started and remove its containers and folder, even when
    sbx itself fails (the folder goes as root either way)."""
    try:
        for p in life.spawned:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
        life.sbx.run("rm", "-a", "-f", env=life.env, timeout=60)
    finally:
        remove_tree(life.root)


@pytest.fixture
def life(sbx: SbxRunner, test_user: User, life_store: tuple[Path, str]) -> Iterator[Life]:
    b = make_life(sbx, test_user, *life_store)
    try:
        yield b
    finally:
        end_life(b)


# -- run -----------------------------------------------------------------------------
def test_foreground_run_leaves_an_exited_container(life: Life) -> None:
    p = life.run("run", "--name", "fg", life.image, "sh", "-c",
                 "echo to-out; echo to-err >&2; exit 3", check=False)
    assert (p.returncode, p.stdout, p.stderr) == (3, "to-out\n", "to-err\n")
    [row] = life.ps()
    assert row["Names"] == ["fg"] and row["State"] == "exited" and row["ExitCode"] == 3
    assert row["Status"].startswith("Exited (3) ")
    assert row["Image"] == life.image and row["Command"] == ["sh", "-c", row["Command"][2]]
    logs = life.run("logs", "fg")
    assert (logs.stdout, logs.stderr) == ("to-out\n", "to-err\n")


def test_run_rm_leaves_nothing(life: Life) -> None:
    p = life.run("run", "--rm", "--name", "gone", life.image, "sh", "-c",
                 "echo bye; touch /made-here", check=False)
    assert (p.returncode, p.stdout) == (0, "bye\n")
    assert life.ps() == []
    assert life.record_dirs() == []
    assert not life.names.exists() or os.listdir(life.names) == []
    assert not life.run_dirs.exists() or os.listdir(life.run_dirs) == []
    # The name is free again.
    life.run("run", "--rm", "--name", "gone", life.image, "true")


def test_run_rm_exit_codes_and_failed_starts(life: Life) -> None:
    assert life.run("run", "--rm", life.image, "sh", "-c", "exit 42",
                    check=False).returncode == 42
    missing = life.run("run", "--rm", life.image, "no-such-command", check=False)
    assert missing.returncode == 127 and "no-such-command" in missing.stderr
    assert life.run("run", "--rm", life.image, "/etc/passwd", check=False).returncode == 126
    assert life.record_dirs() == []
    # Without --rm a container whose command is missing stays, as created, with the
    # error (podman and docker leave it so).
    assert life.run("run", "--name", "broken", life.image, "nope",
                    check=False).returncode == 127
    state = life.inspect("broken")["State"]
    assert (state["Status"], state["ExitCode"]) == ("created", 127)
    assert "nope" in state["Error"]


def test_generated_names_and_ids(life: Life) -> None:
    cid = life.run("create", life.image, "true").stdout.strip()
    assert HEX64.fullmatch(cid)
    [row] = life.ps()
    assert row["Id"] == cid
    assert re.fullmatch(r"[a-z]+_[a-z]+\d?", row["Names"][0])
    assert life.inspect(cid[:5])["Id"] == cid  # an id prefix


def test_name_in_use_is_a_clear_error(life: Life) -> None:
    life.run("create", "--name", "dup", life.image, "true")
    p = life.run("run", "--name", "dup", life.image, "true", check=False)
    assert p.returncode == 125
    assert 'the container name "dup" is already in use' in p.stderr and "hint:" in p.stderr
    assert len(life.ps()) == 1


def test_detached_run_ps_logs_and_wait(life: Life) -> None:
    t0 = time.monotonic()
    p = life.run("run", "-d", "--name", "bg", "--label", "team=a", life.image, "sh", "-c",
                 "echo started; read x < /dev/null; sleep 1; echo last-words; exit 5")
    assert HEX64.fullmatch(p.stdout.strip())
    assert time.monotonic() - t0 < 5  # it did not wait for the container
    running = life.run("ps", "--format", "{{.Names}} {{.Status}}").stdout
    assert running.startswith("bg Up ")
    assert life.run("ps", "-q").stdout.split() == [p.stdout.strip()[:12]]
    doc = life.inspect("bg")
    assert doc["State"]["Running"] and doc["State"]["Pid"] > 0
    assert doc["Config"]["Labels"]["team"] == "a"
    assert doc["Config"]["Labels"]["sbx.test"] == "busybox"  # the image's labels too
    host_pid = doc["State"]["Pid"]
    with open(f"/proc/{host_pid}/status") as f:
        assert "NSpid:" in f.read()
    # `logs -f` follows until the exit, and has the line written just before it.
    follow = life.run("logs", "-f", "bg", timeout=30)
    assert follow.stdout == "started\nlast-words\n"
    assert life.run("wait", "bg").stdout == "5\n"
    assert life.run("logs", "bg").stdout == "started\nlast-words\n"
    row = life.ps()[0]
    assert row["State"] == "exited" and row["ExitCode"] == 5
    assert life.run("ps").stdout.splitlines()[1:] == []  # not running: only -a shows it


def test_wait_for_a_detached_rm_container(life: Life) -> None:
    cid = life.run("run", "-d", "--rm", life.image, "sh", "-c", "sleep 0.5; exit 12"
                   ).stdout.strip()
    assert life.run("wait", cid).stdout == "12\n"
    life.wait_for(lambda: life.ps() == [], what="the --rm container to go")
    # After the removal its status is still there for a `wait` by full id.
    assert life.run("wait", cid).stdout == "12\n"
    assert life.run("wait", cid[:12], check=False).returncode == 125


def test_detached_failed_start_exit_codes(life: Life) -> None:
    p = life.run("run", "-d", "--name", "nf", life.image, "no-such-cmd", check=False)
    assert p.returncode == 127 and "no-such-cmd" in p.stderr
    assert life.status("nf") == "created"
    p = life.run("run", "-d", "--rm", life.image, "no-such-cmd", check=False)
    assert p.returncode == 127
    assert [r["Names"][0] for r in life.ps()] == ["nf"]


def test_create_start_and_start_attach(life: Life) -> None:
    cid = life.run("create", "--name", "c", life.image, "sh", "-c",
                   "echo run-$(cat /count 2>/dev/null || echo 0); "
                   "echo $(( $(cat /count 2>/dev/null || echo 0) + 1 )) > /count; exit 4").stdout
    assert life.status("c") == "created"
    assert life.ps("--filter", "status=created")[0]["Id"] == cid.strip()
    assert life.run("start", "c").stdout == "c\n"
    assert life.run("wait", "c").stdout == "4\n"
    attached = life.run("start", "-a", "c", check=False)
    assert (attached.returncode, attached.stdout) == (4, "run-1\n")
    assert life.run("logs", "c").stdout == "run-0\nrun-1\n"


def test_start_of_a_running_container_does_nothing(life: Life) -> None:
    life.run("run", "-d", "--name", "r", life.image, "sleep", "1000")
    pid = life.inspect("r")["State"]["Pid"]
    assert life.run("start", "r").stdout == "r\n"
    assert life.inspect("r")["State"]["Pid"] == pid


def test_stop_sends_the_stop_signal(life: Life) -> None:
    life.run("run", "-d", "--name", "t", life.image, "sh", "-c",
             "trap 'echo got-term; exit 7' TERM; echo ready; "
             "while true; do sleep 0.05; done")
    life.wait_for(lambda: "ready" in life.run("logs", "t").stdout, what="the trap")
    t0 = time.monotonic()
    assert life.run("stop", "t").stdout == "t\n"
    assert time.monotonic() - t0 < 5
    state = life.inspect("t")["State"]
    assert (state["Status"], state["ExitCode"]) == ("exited", 7)
    assert "got-term" in life.run("logs", "t").stdout
    assert life.run("stop", "t").returncode == 0  # not running: nothing to do


def test_stop_with_a_custom_stop_signal(life: Life) -> None:
    # The image says SIGTERM (BUSYBOX_CONFIG); --stop-signal wins, as podman's does.
    assert BUSYBOX_CONFIG["StopSignal"] == "SIGTERM"
    life.run("run", "-d", "--name", "u", "--stop-signal", "SIGUSR1", life.image, "sh", "-c",
             "trap 'echo got-usr1; exit 9' USR1; trap '' TERM; echo ready; "
             "while true; do sleep 0.05; done")
    assert life.inspect("u")["Config"]["StopSignal"] == signal.SIGUSR1
    life.wait_for(lambda: "ready" in life.run("logs", "u").stdout, what="the trap")
    life.run("stop", "-t", "20", "u")
    assert life.inspect("u")["State"]["ExitCode"] == 9
    assert "got-usr1" in life.run("logs", "u").stdout
    default = life.run("create", "--name", "v", life.image, "true")
    assert default.returncode == 0
    assert life.inspect("v")["Config"]["StopSignal"] == signal.SIGTERM


def test_a_process_ignoring_sigterm_is_killed_after_the_timeout(life: Life) -> None:
    # sleep as pid 1 has no SIGTERM handler, and the kernel drops what pid 1 of a pid
    # namespace does not handle (pid_namespaces(7)): only SIGKILL ends it.
    life.run("run", "-d", "--name", "s", life.image, "sleep", "1000")
    t0 = time.monotonic()
    p = life.run("stop", "--time", "1", "s")
    elapsed = time.monotonic() - t0
    assert 1.0 <= elapsed < 6, elapsed
    assert "resorting to SIGKILL" in p.stderr
    state = life.inspect("s")["State"]
    assert (state["Status"], state["ExitCode"]) == ("exited", 128 + signal.SIGKILL)
    assert life.ps()[0]["Status"].startswith("Exited (137) ")


def test_kill(life: Life) -> None:
    life.run("run", "-d", "--name", "k", life.image, "sh", "-c",
             "trap 'echo got-usr2' USR2; echo ready; while true; do sleep 0.05; done")
    life.wait_for(lambda: "ready" in life.run("logs", "k").stdout, what="the trap")
    assert life.run("kill", "-s", "USR2", "k").stdout == "k\n"
    life.wait_for(lambda: "got-usr2" in life.run("logs", "k").stdout, what="SIGUSR2")
    assert life.status("k") == "running"
    life.run("kill", "k")  # SIGKILL
    assert life.run("wait", "k").stdout == "137\n"
    p = life.run("kill", "k", check=False)
    assert p.returncode == 125 and "can only kill running containers" in p.stderr
    assert life.run("kill", "-s", "NOPE", "k", check=False).returncode == 125


def test_restart_keeps_the_writable_layer(life: Life) -> None:
    life.run("run", "-d", "--name", "rs", life.image, "sh", "-c",
             "n=$(( $(cat /n 2>/dev/null || echo 0) + 1 )); echo $n > /n; echo boot-$n; "
             "exec sleep 1000")
    life.wait_for(lambda: "boot-1" in life.run("logs", "rs").stdout, what="the first boot")
    first_pid = life.inspect("rs")["State"]["Pid"]
    assert life.run("restart", "-t", "0", "rs").stdout == "rs\n"
    life.wait_for(lambda: "boot-2" in life.run("logs", "rs").stdout, what="the second boot")
    doc = life.inspect("rs")
    assert doc["State"]["Running"] and doc["State"]["Pid"] != first_pid
    assert life.run("logs", "rs").stdout == "boot-1\nboot-2\n"


def test_rm_rules_and_exit_codes(life: Life) -> None:
    cid = life.run("run", "-d", "--name", "busy", life.image, "sleep", "1000").stdout.strip()
    p = life.run("rm", "busy", check=False)
    assert p.returncode == 2 and "running" in p.stderr and "hint:" in p.stderr
    missing = life.run("rm", "nothing-here", check=False)
    assert missing.returncode == 1
    assert life.run("rm", "-f", "busy").stdout == "busy\n"
    assert cid not in life.record_dirs()
    assert life.ps() == []
    assert life.run("rm", "-i", "nothing-here").returncode == 0


def test_rename(life: Life) -> None:
    life.run("create", "--name", "a", life.image, "true")
    life.run("create", "--name", "b", life.image, "true")
    assert life.run("rename", "a", "b", check=False).returncode == 125
    life.run("rename", "a", "c")
    assert sorted(r["Names"][0] for r in life.ps()) == ["b", "c"]
    life.run("create", "--name", "a", life.image, "true")  # the old name is free
    assert life.run("rename", "c", "bad/name", check=False).returncode == 125


def test_inspect_formats(life: Life) -> None:
    cid = life.run("run", "--name", "i", "--stop-timeout", "3", life.image,
                   "sh", "-c", "exit 6", check=False)
    assert cid.returncode == 6
    out = life.run("inspect", "--format",
                   "{{.State.ExitCode}} {{.Name}} {{.State.Status}} {{.Config.Cmd}}", "i")
    assert out.stdout == "6 i exited [sh -c exit 6]\n"
    doc = json.loads(life.run("inspect", "i").stdout)
    assert isinstance(doc, list) and len(doc) == 1
    d = doc[0]
    assert HEX64.fullmatch(d["Id"]) and d["Name"] == "i" and d["Path"] == "sh"
    assert d["Args"] == ["-c", "exit 6"] and d["Config"]["StopTimeout"] == 3
    assert d["ImageName"] == life.image and d["Driver"] == "overlay"
    assert life.run("inspect", "-f", "{{.Id}}", "i").stdout.strip() == d["Id"]
    assert life.run("inspect", "-f", "{{json .Config.Labels}}", "i").stdout.startswith("{")
    assert life.run("inspect", "no-such-thing", check=False).returncode == 125
    # `sbx inspect` falls back to images, `sbx container inspect` does not.
    assert life.run("inspect", "-f", "{{.Id}}", life.image).stdout.strip()
    assert life.run("container", "inspect", life.image, check=False).returncode == 125


def test_ps_filters_formats_and_table(life: Life) -> None:
    life.run("create", "--name", "one", "-l", "tier=web", life.image, "true")
    life.run("run", "--name", "two", "-l", "tier=db", life.image, "sh", "-c", "exit 1",
             check=False)
    life.run("run", "-d", "--name", "three", life.image, "sleep", "1000")

    def names(*filters: str) -> list[str]:
        args = [x for f in filters for x in ("--filter", f)]
        return sorted(r["Names"][0] for r in life.ps(*args))

    assert names() == ["one", "three", "two"]
    assert names("status=running") == ["three"]
    assert names("status=exited", "status=created") == ["one", "two"]
    assert names("label=tier") == ["one", "two"]
    assert names("label=tier=db") == ["two"]
    assert names("name=^t") == ["three", "two"]
    assert names("name=^t", "label=tier") == ["two"]
    three = life.inspect("three")["Id"]
    assert names(f"id={three[:6]}") == ["three"]
    assert life.run("ps", "--filter", "bogus=1", check=False).returncode == 125
    table = life.run("ps", "-a").stdout.splitlines()
    assert re.split(r"\s{2,}", table[0]) == ["CONTAINER ID", "IMAGE", "COMMAND", "CREATED",
                                             "STATUS", "PORTS", "NAMES"]
    by_name = {line.split()[-1]: line for line in table[1:]}
    assert " Up " in by_name["three"] and "Created" in by_name["one"]
    assert "Exited (1) " in by_name["two"]
    assert by_name["three"].startswith(three[:12] + " ")
    assert life.run("ps", "-a", "--noheading", "--format", "table {{.Names}}").stdout.split(
    ) == ["one", "two", "three"]  # oldest first, as podman sorts
    assert len(life.run("ps", "-aq", "--no-trunc").stdout.split()[0]) == 64


def test_logs_options(life: Life) -> None:
    life.run("run", "--name", "l", life.image, "sh", "-c",
             "echo b >&2; sleep 0.2; echo a; echo c; printf 'no newline'")
    assert life.run("logs", "l").stdout == "a\nc\nno newline"
    assert life.run("logs", "--tail", "1", "l").stdout == "no newline"
    tail2 = life.run("logs", "--tail", "2", "l")
    assert (tail2.stdout, tail2.stderr) == ("c\nno newline", "")
    stamped = life.run("logs", "-t", "l").stdout.splitlines()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z a", stamped[0])
    assert life.run("logs", "--since", "1h", "l").stdout == "a\nc\nno newline"
    assert life.run("logs", "--since", "2099-01-01T00:00:00Z", "l").stdout == ""
    assert life.run("logs", "--until", "2000-01-01", "l").stdout == ""
    assert life.run("logs", "--since", "yesterday-ish", "l", check=False).returncode == 125
    log = (life.containers / life.inspect("l")["Id"] / "ctr.log").read_text()
    assert re.search(r"^\S+\+00:00 stdout F a$", log, re.M)
    assert re.search(r"^\S+ stderr F b$", log, re.M)
    assert re.search(r"^\S+ stdout P no newline$", log, re.M)


def test_tty_output_is_logged(life: Life) -> None:
    life.run("run", "-d", "-t", "--name", "tt", life.image, "sh", "-c", "tty; exit 2")
    assert life.run("wait", "tt").stdout == "2\n"
    assert life.run("logs", "tt").stdout.strip() == "/dev/pts/0"


def test_rootfs_containers(life: Life, busybox_rootfs: Path) -> None:
    life.run("create", "--name", "rf", "--rootfs", str(busybox_rootfs), "sh", "-c",
             "echo from-rootfs")
    assert life.run("start", "-a", "rf").stdout == "from-rootfs\n"
    doc = life.inspect("rf")
    assert doc["Rootfs"] == str(busybox_rootfs) and doc["ImageName"] == ""
    life.run("rm", "rf")
    assert (busybox_rootfs / "bin" / "busybox").exists()  # the folder is not the layer


def test_container_group_and_prune(life: Life) -> None:
    life.run("container", "create", "--name", "p1", life.image, "true")
    life.run("container", "run", "--name", "p2", life.image, "true")
    life.run("run", "-d", "--name", "p3", life.image, "sleep", "1000")
    ls = life.run("container", "ls", "-a", "--format", "{{.Names}}").stdout.split()
    assert sorted(ls) == ["p1", "p2", "p3"]
    assert "Usage" in life.run("container", "--help").stdout
    pruned = life.run("container", "prune", "-f").stdout.split()
    assert len(pruned) == 2 and all(HEX64.fullmatch(i) for i in pruned)
    assert [r["Names"][0] for r in life.ps()] == ["p3"]
    life.run("container", "stop", "-t", "0", "p3")
    life.run("container", "rm", "p3")
    assert life.ps() == []


def test_rmi_refuses_an_image_a_container_uses(
    sbx: SbxRunner, test_user: User, pushed_images: PushedImages
) -> None:
    # A store of its own: this test removes the image.
    root = make_tmp_dir("sbx-life-rmi-")
    test_user.chown(root)
    (root / "run").mkdir(mode=0o700)
    test_user.chown(root / "run")
    life = Life(sbx, root, pushed_images.busybox.ref)
    try:
        life.run("pull", "-q", "--tls-verify=false", life.image)
        life.run("create", "--name", "user", life.image, "true")
        p = life.run("rmi", life.image, check=False)
        assert p.returncode == 125 and "in use" in p.stderr.lower()
        life.run("rm", "user")
        life.run("rmi", life.image)
    finally:
        end_life(life)
