"""Small pieces of sandbox/containers: spec JSON round trip, names, /proc checks,
signals, tree removal, and the ps filters and status texts of sandbox/cli/ps.py."""

from __future__ import annotations

import os
import signal
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest

from sandbox.cli import ps as pscmd
from sandbox.containers import names, procfs, rmtree, specjson
from sandbox.containers.lifecycle import parse_signal, signal_name
from sandbox.containers.store import ContainerError, format_time
from sandbox.runtime.spec import (
    Capabilities,
    IdMapping,
    Linux,
    Mount,
    Process,
    Root,
    Spec,
    User,
)


def _spec() -> Spec:
    return Spec(
        process=Process(["sh", "-c", "echo hi"], ["PATH=/bin", "A=b"], "/work",
                        User(1000, 1000, [10, 20], "tester"), True,
                        Capabilities(["CAP_CHOWN"], ["CAP_CHOWN"], ["CAP_CHOWN"], [],
                                     ["CAP_KILL"]), True),
        root=Root("/c/merged", True,
                  mount=Mount("/c/merged", "overlay", "overlay",
                              ["lowerdir=b:a", "upperdir=/c/u", "workdir=/c/w", "userxattr"]),
                  mount_cwd="/store/layers"),
        hostname="box",
        mounts=[Mount("/proc", "proc", "proc", []),
                Mount("/etc/hosts", "bind", "/run/x/hosts", ["bind"]),
                Mount("/data", "bind", "/home/u/data", ["bind", "ro"])],
        linux=Linux(["user", "mount", "pid"], [IdMapping(0, 1000, 1), IdMapping(1, 100000, 65536)],
                    [IdMapping(0, 1000, 1)], ["/proc/kcore"], ["/proc/sys"]),
        annotations={"a": "b"},
        init=True,
    )


def test_spec_round_trips_through_json() -> None:
    import json

    spec = _spec()
    doc = json.loads(json.dumps(specjson.to_json(spec)))
    assert doc["ociVersion"] and doc["sbx"]["rootMount"]["type"] == "overlay"
    assert specjson.from_json(doc) == spec


def test_names() -> None:
    assert names.is_valid("web-1.a_b") and not names.is_valid("-x")
    assert not names.is_valid("a" * 254)
    assert names.is_full_id("a" * 64) and not names.is_full_id("A" * 64)
    assert names.generate(retry=2)[-1].isdigit()


def test_procfs_knows_this_process_and_not_a_dead_one() -> None:
    me = os.getpid()
    start = procfs.start_time(me)
    assert start is not None and start > 0
    assert procfs.is_running(me, start, procfs.boot_id())
    assert not procfs.is_running(me, start + 1, procfs.boot_id())
    assert not procfs.is_running(me, start, "other-boot")
    assert procfs.start_time(2**22 + 11) is None
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    import time

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        fields = procfs.stat_fields(pid)
        if fields and fields[0] == "Z":
            break
        time.sleep(0.005)
    # A zombie exists but does not run.
    assert procfs.exists(pid, procfs.start_time(pid), procfs.boot_id())
    assert not procfs.is_running(pid, procfs.start_time(pid), procfs.boot_id())
    os.waitpid(pid, 0)
    assert procfs.stat_fields(pid) is None


def test_command_names_with_parentheses_and_spaces() -> None:
    # /proc/PID/stat's field 2 can hold ") (": the parse must start after the last ")".
    import ctypes

    libc = ctypes.CDLL(None)
    pid = os.fork()
    if pid == 0:
        libc.prctl(15, b"a) (b c", 0, 0, 0)  # PR_SET_NAME
        import time

        time.sleep(0.3)
        os._exit(0)
    try:
        import time

        time.sleep(0.05)
        assert procfs.start_time(pid) is not None
        assert procfs.stat_fields(pid)[0] in ("S", "R")
    finally:
        os.waitpid(pid, 0)


@pytest.mark.parametrize(("text", "number"), [
    ("SIGTERM", signal.SIGTERM), ("term", signal.SIGTERM), ("9", 9), ("KILL", 9),
    ("SIGRTMIN+1", signal.SIGRTMIN + 1), (None, signal.SIGTERM),
])
def test_parse_signal(text: str | None, number: int) -> None:
    assert parse_signal(text) == number


@pytest.mark.parametrize("bad", ["SIGNOPE", "0", "999", "-1"])
def test_bad_signals(bad: str) -> None:
    with pytest.raises(ContainerError):
        parse_signal(bad)


def test_signal_name() -> None:
    assert signal_name(15) == "SIGTERM"


def test_remove_tree_handles_unreadable_dirs_and_links(tmp_path: Path) -> None:
    top = tmp_path / "c"
    (top / "layer" / "work" / "work").mkdir(parents=True)
    (top / "layer" / "upper" / "etc").mkdir(parents=True)
    (top / "layer" / "upper" / "etc" / "f").write_text("x")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("keep")
    (top / "layer" / "upper" / "link").symlink_to(outside)
    os.chmod(top / "layer" / "work" / "work", 0)  # as overlayfs makes it
    os.chmod(top / "layer" / "upper" / "etc", stat.S_IRUSR | stat.S_IXUSR)
    rmtree.remove_tree(str(top))
    assert not top.exists()
    assert (outside / "keep").read_text() == "keep"
    rmtree.remove_tree(str(top))  # a missing tree is fine


def _c(status: str, **state: object) -> SimpleNamespace:
    cfg = {"created": format_time(1_700_000_000 * 10**9), "command": ["sleep", "100000000000000"],
           "entrypoint": [], "image": "127.0.0.1:5000/sbx/busybox:1",
           "image_id": "sha256:" + "ab" * 32, "labels": {"a": "1", "b": ""}}
    full = {"status": status, **state}
    return SimpleNamespace(config=cfg, state=full, id="f" * 64, short_id="f" * 12,
                           name="web", status=status, running=status == "running", pid=0)


def test_status_texts_are_dockers() -> None:
    now = 1_700_000_100 * 10**9
    assert pscmd.status_text(_c("created"), now) == "Created"
    up = _c("running", started_at=format_time(now - 3 * 10**9))
    assert pscmd.status_text(up, now) == "Up 3 seconds"
    done = _c("exited", exit_code=137, finished_at=format_time(now - 2 * 10**9))
    assert pscmd.status_text(done, now) == "Exited (137) 2 seconds ago"
    assert pscmd.status_text(_c("exited", exit_code=None), now) == "Exited (-1)"


def test_command_is_cut_as_podman_cuts_it() -> None:
    assert pscmd.command_text(_c("created")) == "sleep 10000000000..."
    assert pscmd.command_text(_c("created"), full=True) == "sleep 100000000000000"


def test_filters() -> None:
    c = _c("exited")
    f = pscmd.parse_filters
    assert pscmd.matches(c, f(["status=exited"]))
    assert pscmd.matches(c, f(["status=running", "status=exited"]))  # same key: OR
    assert not pscmd.matches(c, f(["status=exited", "name=^db$"]))  # keys: AND
    assert pscmd.matches(c, f(["name=^we"]))
    assert pscmd.matches(c, f(["id=fff"]))
    assert pscmd.matches(c, f(["label=a=1"])) and pscmd.matches(c, f(["label=b"]))
    assert not pscmd.matches(c, f(["label=a=2"]))
    assert pscmd.matches(c, f(["ancestor=sbx/busybox"]))
    assert pscmd.matches(c, f(["ancestor=abab"]))
    for bad in (["status=nope"], ["color=red"], ["nokey"], ["name=("]):
        with pytest.raises(ContainerError.__mro__[1]):  # SbxError
            f(bad)
