"""The pure parts of `sbx exec`: which namespaces are joined in which order (user
first), the exec'd process's spec (environment, working directory, terminal), and
what -u changes (ids, HOME, capabilities)."""

from __future__ import annotations

import os

import pytest

from sandbox.containers.exec import ExecOptions, exec_spec, sets_home
from sandbox.errors import UsageError
from sandbox.runtime import nsenter
from sandbox.runtime import syscalls as sc
from sandbox.runtime.spec import Capabilities, Linux, Process, Root, Spec, User
from sandbox.runtime.users import ExecUser

ALL = ["user", "mount", "pid", "uts", "ipc", "cgroup"]


def container_spec(**proc: object) -> Spec:
    defaults: dict[str, object] = {
        "args": ["sleep", "1000"],
        "env": ["PATH=/bin", "HOME=/root", "FROM_IMAGE=busybox"],
        "cwd": "/data",
        "user": User(0, 0, [], "root"),
        "capabilities": Capabilities(bounding=["CAP_CHOWN", "CAP_KILL"],
                                     effective=["CAP_CHOWN", "CAP_KILL"],
                                     permitted=["CAP_CHOWN", "CAP_KILL"]),
    }
    defaults.update(proc)
    return Spec(Process(**defaults), Root("/r"), hostname="h", linux=Linux(namespaces=ALL))  # type: ignore[arg-type]


def test_join_plan_puts_the_user_namespace_first_and_mount_last() -> None:
    plan = nsenter.join_plan(["mount", "pid", "uts", "ipc", "cgroup", "user", "network"])
    assert [entry for entry, _flag in plan] == ["user", "cgroup", "ipc", "uts", "net",
                                                 "pid", "mnt"]
    assert plan[0][1] == sc.CLONE_NEWUSER and plan[-1][1] == sc.CLONE_NEWNS
    # Only the namespaces the container has: with the host's network, no net.
    assert "net" not in [e for e, _f in nsenter.join_plan(ALL)]


def test_join_makes_setns_calls_in_plan_order_and_closes_each_fd() -> None:
    fake = sc.RecordingSyscalls()
    fds = []
    for _entry, flag in nsenter.join_plan(ALL):
        r, w = os.pipe()
        os.close(w)
        fds.append((r, flag))
    nsenter._join(fds, fake)
    assert [args for _name, args in fake.calls] == fds
    for fd, _flag in fds:
        with pytest.raises(OSError):
            os.fstat(fd)


def test_a_failed_setns_names_the_namespace() -> None:
    fake = sc.RecordingSyscalls(fail={"setns": 1})
    r, w = os.pipe()
    os.close(w)
    try:
        with pytest.raises(Exception, match="can't join the container's user namespace"):
            nsenter._join([(r, sc.CLONE_NEWUSER)], fake)
    finally:
        os.close(r)


def test_exec_spec_takes_the_containers_process_and_this_execs_options() -> None:
    spec = exec_spec(container_spec(), ExecOptions(["ps"], env=["FOO=bar", "FROM_IMAGE=x"]),
                     {})
    proc = spec.process
    assert proc.args == ["ps"] and proc.cwd == "/data" and not proc.terminal
    assert proc.env == ["PATH=/bin", "HOME=/root", "FROM_IMAGE=x", "FOO=bar"]
    assert proc.user == User(0, 0, [], "root") and proc.no_new_privileges
    assert spec.linux.namespaces == ALL and not spec.init


def test_exec_spec_env_file_host_values_tty_and_workdir() -> None:
    opts = ExecOptions(["sh"], tty=True, workdir="/tmp", env=["FROM_HOST", "UNSET_ON_HOST"],
                       env_files=[("f.env", "# c\nA=1\nB=file\n")])
    proc = exec_spec(container_spec(), opts, {"FROM_HOST": "h", "TERM": "vt100"}).process
    assert proc.cwd == "/tmp" and proc.terminal
    assert proc.env[3:] == ["TERM=vt100", "A=1", "B=file", "FROM_HOST=h"]
    # A container started with -t has TERM already: it stays.
    withterm = container_spec(env=["TERM=xterm"])
    assert exec_spec(withterm, ExecOptions(["sh"], tty=True), {"TERM": "vt100"}
                     ).process.env == ["TERM=xterm"]


def test_exec_spec_refuses_bad_input() -> None:
    with pytest.raises(UsageError, match="no command"):
        exec_spec(container_spec(), ExecOptions([]), {})
    with pytest.raises(UsageError, match="absolute"):
        exec_spec(container_spec(), ExecOptions(["ls"], workdir="tmp"), {})
    with pytest.raises(UsageError, match="invalid environment variable"):
        exec_spec(container_spec(), ExecOptions(["ls"], env=["=x"]), {})
    with pytest.raises(UsageError, match=r"f\.env:2"):
        exec_spec(container_spec(), ExecOptions(["ls"], env_files=[("f.env", "A=1\nB C\n")]),
                  {})


def test_user_decides_home_unless_it_is_set_explicitly() -> None:
    assert not sets_home(ExecOptions(["ls"]))
    assert sets_home(ExecOptions(["ls"], user="tester"))
    assert not sets_home(ExecOptions(["ls"], user="tester", env=["HOME=/x"]))
    assert not sets_home(ExecOptions(["ls"], user="tester", env=["HOME"]))
    assert not sets_home(ExecOptions(["ls"], user="tester", env_files=[("f", "HOME=/y\n")]))


def test_apply_user_root_and_non_root() -> None:
    spec = container_spec()
    nsenter.apply_user(spec, ExecUser(1000, 1000, [20], "tester", "/home/tester"), True)
    proc = spec.process
    assert proc.user == User(1000, 1000, [20], "tester")
    assert proc.env[-1] == "HOME=/home/tester" and "HOME=/root" not in proc.env
    assert proc.capabilities == Capabilities(bounding=["CAP_CHOWN", "CAP_KILL"])
    # A container whose non-root user got --cap-add keeps those for another non-root.
    spec = container_spec(user=User(1000, 1000), capabilities=Capabilities(
        bounding=["CAP_CHOWN", "CAP_NET_RAW"], effective=["CAP_NET_RAW"],
        permitted=["CAP_NET_RAW"], inheritable=["CAP_NET_RAW"], ambient=["CAP_NET_RAW"]))
    nsenter.apply_user(spec, ExecUser(0, 0, [], "root", "/root"), False)
    assert spec.process.capabilities.effective == ["CAP_CHOWN", "CAP_NET_RAW"]
    assert "HOME=/root" in spec.process.env  # unchanged without set_home
