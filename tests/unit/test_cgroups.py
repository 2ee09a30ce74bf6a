"""runtime/cgroups.py on a fake cgroup v2 tree (a folder with the interface files):
the leaf move and subtree_control write of a delegated scope, the limit files, OOM
detection, and the refusal where nothing is delegated. The real thing is checked on
a cgroup v2 machine (docs/runtime.md, "Resource limits"); this host is hybrid."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox.runtime import cgroups
from sandbox.system.checks import CgroupInfo


def fake_scope(tmp_path: Path, procs: str = "100\n200\n") -> Path:
    d = tmp_path / "user@1000.service" / "app.slice" / "sbx.scope"
    d.mkdir(parents=True)
    (d / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (d / "cgroup.subtree_control").write_text("")
    (d / "cgroup.procs").write_text(procs)
    return d


def test_limit_files() -> None:
    lim = cgroups.Limits(memory=512 << 20, cpus=1.5, pids=64)
    assert lim.files() == {"memory.max": str(512 << 20), "memory.swap.max": "0",
                           "cpu.max": "150000 100000", "pids.max": "64"}
    assert lim.controllers() == ["memory", "cpu", "pids"]
    assert not cgroups.Limits() and cgroups.Limits(pids=1)
    assert cgroups.Limits(cpus=0.001).files()["cpu.max"] == "1000 100000"  # kernel minimum


def test_create_moves_processes_to_a_leaf_then_enables_controllers(tmp_path: Path) -> None:
    d = fake_scope(tmp_path)
    lim = cgroups.Limits(memory=1 << 30, pids=10)
    path = Path(cgroups.create(str(d), "ab" * 32, lim))
    # A real cgroupfs moves the pids; the fake records the writes in order.
    assert (d / cgroups.LEAF / "cgroup.procs").read_text() == "200"
    assert (d / "cgroup.subtree_control").read_text() == "+memory +pids"
    assert path == d / "sbx-abababababab"
    assert (path / "memory.max").read_text() == str(1 << 30)
    assert (path / "pids.max").read_text() == "10"
    assert not (path / "cpu.max").exists()
    cgroups.add_process(str(path), 4242)
    assert (path / "cgroup.procs").read_text() == "4242"


def test_no_leaf_when_controllers_are_already_enabled(tmp_path: Path) -> None:
    d = fake_scope(tmp_path)
    (d / "cgroup.subtree_control").write_text("memory pids cpu\n")
    cgroups.create(str(d), "cd" * 32, cgroups.Limits(cpus=2))
    assert not (d / cgroups.LEAF).exists()
    assert (d / "sbx-cdcdcdcdcdcd" / "cpu.max").read_text() == "200000 100000"


def test_oom_killed(tmp_path: Path) -> None:
    (tmp_path / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 0\n")
    assert not cgroups.oom_killed(str(tmp_path))
    (tmp_path / "memory.events").write_text("low 0\nhigh 0\nmax 9\noom 2\noom_kill 1\n")
    assert cgroups.oom_killed(str(tmp_path))
    assert not cgroups.oom_killed(str(tmp_path / "gone"))


def test_plan_refuses_without_delegation_and_says_what_to_do() -> None:
    hybrid = CgroupInfo("hybrid", "/sys/fs/cgroup/unified", "/user.slice", "/x",
                        ("hugetlb",), (), True)
    with pytest.raises(cgroups.CgroupUnavailable) as err:
        cgroups.plan(cgroups.Limits(memory=1), probe=lambda: hybrid)
    assert "memory" in err.value.message and "cgroup v1" in err.value.message
    assert err.value.hint
    not_ours = CgroupInfo("v2", "/sys/fs/cgroup", "/user.slice/session-1.scope", "/y",
                          ("memory", "pids"), (), False)
    with pytest.raises(cgroups.CgroupUnavailable, match="not writable"):
        cgroups.plan(cgroups.Limits(pids=5), probe=lambda: not_ours)
    ours = CgroupInfo("v2", "/sys/fs/cgroup", "/s.scope", "/sys/fs/cgroup/s.scope",
                      ("memory", "pids", "cpu"), (), True)
    assert cgroups.plan(cgroups.Limits(pids=5, cpus=1), probe=lambda: ours) == \
        "/sys/fs/cgroup/s.scope"
