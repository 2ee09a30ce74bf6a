"""Resource limits (--memory, --cpus, --pids-limit) applied for real, in a VM.

This host's cgroups are hybrid (memory, cpu and pids on v1), where sbx can only
warn and run without limits. tests/vm_rig.py boots Debian's kernel in QEMU with this
machine's root filesystem read-only over 9p, a pure cgroup v2 hierarchy and a cgroup
delegated to the test user, as systemd's Delegate=yes would. This module is both the
pytest side and the guest program: the VM runs `python test_cgroups_vm.py --guest`
as the test user, which drives the installed sbx through every case once and
prints what it saw as one JSON line; the tests below assert on it, one boot for all.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
MARK = "SBX-VM-RESULT "
MEMORY = 64 * 1024 * 1024
LIMITS = ["--memory", "64m", "--pids-limit", "20", "--cpus", "0.5"]
GUEST_TIMEOUT = 240


# -- the guest program (python3 in the VM, as the test user; stdlib only) --------------

def _own_cgroup() -> str:
    with open("/proc/self/cgroup") as f:
        for line in f:
            if line.startswith("0::"):
                return "/sys/fs/cgroup" + line[3:].strip().rstrip("/")
    raise SystemExit("no cgroup v2 line in /proc/self/cgroup")


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError as exc:
        return f"<{exc.strerror}>"


def guest_main() -> None:
    sbx = os.environ["SBX"]
    delegated = _own_cgroup()  # before sbx moves this process into its leaf
    rootfs = "/tmp/rootfs"
    res: dict[str, Any] = {"delegated": delegated, "uptime_start": _read("/proc/uptime")}

    def run(*args: str, timeout: float = 90) -> dict[str, Any]:
        t = time.monotonic()
        try:
            p = subprocess.run([sbx, *args], capture_output=True, text=True, timeout=timeout)
            out = {"rc": p.returncode, "out": p.stdout, "err": p.stderr}
        except subprocess.TimeoutExpired as exc:
            out = {"rc": None, "out": str(exc.stdout), "err": f"timed out: {exc}"}
        out["s"] = round(time.monotonic() - t, 2)
        return out

    def tree() -> list[str]:
        """The cgroups under the delegated one, relative to it."""
        found = []
        for top, dirs, _files in os.walk(delegated):
            found += [os.path.relpath(os.path.join(top, d), delegated) for d in dirs]
        return sorted(found)

    def state(name: str) -> dict[str, Any]:
        p = run("inspect", name)
        try:
            return json.loads(p["out"])[0]["State"]
        except (ValueError, LookupError, TypeError):
            return {"inspect": p}

    # The busybox rootfs, made on the host (one fork per applet is slow in TCG).
    os.mkdir(rootfs)
    p = subprocess.run(["tar", "-C", rootfs, "-xf", "/run/job/rootfs.tar"],
                       capture_output=True, text=True)
    res["rootfs"] = {"rc": p.returncode, "err": p.stderr}

    # Limits in the foreground, --rm: the container's own view of its cgroup.
    res["fg"] = run("run", "--rm", *LIMITS, "--rootfs", rootfs, "--", "sh", "-c",
                    "cat /proc/self/cgroup; cat /sys/fs/cgroup/memory.max "
                    "/sys/fs/cgroup/pids.max /sys/fs/cgroup/cpu.max")
    res["after_fg"] = tree()

    # A busy loop, detached: read its cgroup from outside while it runs.
    res["bg"] = run("run", "-d", "--name", "lim", *LIMITS, "--rootfs", rootfs, "--",
                    "sh", "-c", "while :; do :; done")
    cid = res["bg"]["out"].strip()
    cg = f"{delegated}/sbx-{cid[:12]}"
    res["bg_cgroup"] = cg
    time.sleep(2)
    res["bg_files"] = {name: _read(f"{cg}/{name}") for name in (
        "memory.max", "memory.swap.max", "cpu.max", "pids.max", "cpu.stat", "cgroup.procs")}
    bg_state = state("lim")
    res["bg_state"] = bg_state
    pid = bg_state.get("Pid") or 0
    res["bg_pid_cgroup"] = pid_cgroup = _read(f"/proc/{pid}/cgroup") if pid else None
    # Where the container really is, to see it go even if that is not where it should be.
    actual = "/sys/fs/cgroup" + (pid_cgroup or "0::/?").partition("::")[2]
    res["bg_actual"] = actual if os.path.isdir(actual) else None
    res["bg_tree"] = tree()
    # `sbx exec` joins the container's cgroup: its namespace's root, as pid 1's is.
    res["bg_exec"] = run("exec", "lim", "cat", "/proc/self/cgroup")
    res["bg_rm"] = run("rm", "-f", "lim")
    res["bg_gone"] = not os.path.exists(cg) and not os.path.exists(actual)
    res["after_rm"] = tree()

    # Memory: 200 MiB in one buffer under a 64 MiB limit, then 16 MiB under the same.
    res["oom"] = run("run", "--name", "oom", "--memory", "64m", "--rootfs", rootfs, "--",
                     "dd", "if=/dev/zero", "of=/dev/null", "bs=200M", "count=1")
    res["oom_state"] = state("oom")
    res["fit"] = run("run", "--rm", "--memory", "64m", "--rootfs", rootfs, "--",
                     "dd", "if=/dev/zero", "of=/dev/null", "bs=16M", "count=1")

    # pids: an inner shell forks sleeps until fork fails (60 at most, so a missing
    # limit ends too); pid 1 survives, counts its processes without forking, and
    # kills them.
    script = ('sh -c \'i=0; while [ $i -lt 60 ]; do sleep 30 & i=$((i+1)); done\' '
              '2>/tmp/err; echo inner=$?; set -- /proc/[0-9]*; echo procs=$#; '
              'read e </tmp/err; echo "err=$e"; kill -9 -1; echo survived')
    res["pids"] = run("run", "--rm", "--pids-limit", "20", "--rootfs", rootfs, "--",
                      "sh", "-c", script)

    # A start that fails (no such command) after its cgroup was made.
    res["nocmd"] = run("run", "--rm", "--memory", "64m", "--rootfs", rootfs, "--",
                       "/nonexistent")
    res["final"] = tree()
    res["info"] = run("info", "--format", "json")
    res["uptime_end"] = _read("/proc/uptime")
    print(MARK + json.dumps(res), flush=True)


if __name__ == "__main__":  # the guest: pytest's import alone costs seconds in TCG
    if sys.argv[1:] == ["--guest"]:
        guest_main()
    sys.exit(0)

# -- the pytest side -------------------------------------------------------------------

import pytest  # noqa: E402


@pytest.fixture(scope="module")
def vm(test_user: Any, busybox_rootfs: Path, tmp_path_factory: pytest.TempPathFactory
       ) -> dict[str, Any]:
    import vm_rig

    reason = vm_rig.unavailable_reason()
    if reason:
        pytest.skip(reason)
    base = tmp_path_factory.mktemp("vm")
    with tarfile.open(base / "rootfs.tar", "w") as tar:
        tar.add(busybox_rootfs, arcname=".")
    python = Path(sys.executable)
    result = vm_rig.run_script(
        f"exec {python} /run/job/guest.py --guest\n", base / "job", user=test_user.name,
        files={"guest.py": HERE, "rootfs.tar": base / "rootfs.tar"},
        env={"SBX": str(python.parent / "sbx")}, timeout=GUEST_TIMEOUT)
    print(f"vm: boot {result.boot_s}s, wall {result.wall_s:.1f}s")
    lines = [ln for ln in result.output.splitlines() if ln.startswith(MARK)]
    assert result.rc == 0 and lines, result.describe()
    data: dict[str, Any] = json.loads(lines[-1][len(MARK):])
    data["_vm"] = {"boot_s": result.boot_s, "wall_s": result.wall_s,
                   "console": result.console}
    return data


def _no_limit_warning(p: dict[str, Any]) -> None:
    assert "warning" not in p["err"], p["err"]


def _containers(tree: list[str]) -> list[str]:
    """The containers' cgroups (sbx-<id12>) in a tree listing, at any depth."""
    return [p for p in tree if re.fullmatch(r"sbx-[0-9a-f]{12}", Path(p).name)]


def test_info_reports_the_delegated_cgroup(vm: dict[str, Any]) -> None:
    info = json.loads(vm["info"]["out"])
    assert info["host"]["cgroup_version"] == "v2", info["host"]
    # Still the delegated cgroup, after sbx moved its processes into D/sbx-leaf.
    assert info["host"]["cgroup"] == vm["delegated"], info["host"]
    assert sorted(info["host"]["cgroup_delegated"]) == ["cpu", "memory", "pids"], info["host"]
    assert info["checks"]["cgroups"] == "ok", info["checks"]


def test_run_with_limits_sees_its_own_cgroup(vm: dict[str, Any]) -> None:
    fg = vm["fg"]
    assert fg["rc"] == 0, fg
    _no_limit_warning(fg)
    assert fg["out"].splitlines()[0] == "0::/", fg  # its cgroup namespace's root
    # /sys/fs/cgroup is its own cgroup (cgroup2 mounted in its cgroup namespace), as
    # runc and crun give it: what the JVM and Go read to size themselves.
    assert fg["out"].splitlines()[1:] == ["67108864", "20", "50000 100000"], fg


def test_every_run_uses_the_delegated_cgroup_not_a_nested_leaf(vm: dict[str, Any]) -> None:
    # The first run moved the processes of D into D/sbx-leaf; the later ones, started
    # from there, must still make their cgroups in D, not in D/sbx-leaf/sbx-leaf/...
    assert vm["after_fg"] == ["sbx-leaf"], vm["after_fg"]
    assert str(Path(vm["bg_cgroup"]).parent) == vm["delegated"]
    assert sorted(vm["bg_tree"]) == sorted(["sbx-leaf", Path(vm["bg_cgroup"]).name]), (
        vm["bg_tree"])
    assert vm["final"] == ["sbx-leaf"], vm["final"]


def test_limits_are_written_to_the_container_cgroup(vm: dict[str, Any]) -> None:
    assert vm["bg"]["rc"] == 0, vm["bg"]
    _no_limit_warning(vm["bg"])
    files = vm["bg_files"]
    # The container's process is in D/sbx-<id12>.
    rel = vm["bg_cgroup"].removeprefix("/sys/fs/cgroup")
    assert vm["bg_pid_cgroup"] == f"0::{rel}", (vm["bg_pid_cgroup"], files)
    assert str(vm["bg_state"]["Pid"]) in files["cgroup.procs"].split(), files
    assert files["memory.max"] == str(MEMORY), files
    assert files["memory.swap.max"] == "0", files
    assert files["cpu.max"] == "50000 100000", files
    assert files["pids.max"] == "20", files


def test_exec_joins_the_container_cgroup(vm: dict[str, Any]) -> None:
    # Outside it, the cgroup namespace would show a path such as /../sbx-leaf.
    p = vm["bg_exec"]
    assert p["rc"] == 0, p
    assert p["out"].strip() == "0::/", p


def test_cpu_quota_throttles_a_busy_loop(vm: dict[str, Any]) -> None:
    text = vm["bg_files"]["cpu.stat"]
    assert not text.startswith("<"), f"{vm['bg_cgroup']}/cpu.stat: {text}"
    stat = dict(line.split() for line in text.splitlines())
    assert int(stat["nr_throttled"]) > 0, stat
    assert int(stat["throttled_usec"]) > 0, stat
    # 0.5 CPU: at most 50 ms of CPU time in each 100 ms period it ran in (one
    # period's worth of slack), where an unthrottled loop on 2 vCPUs could use 100.
    assert int(stat["usage_usec"]) <= (int(stat["nr_periods"]) + 1) * 50_000, stat


def test_container_cgroup_is_removed(vm: dict[str, Any]) -> None:
    assert vm["bg_rm"]["rc"] == 0, vm["bg_rm"]
    assert vm["bg_actual"], vm["bg_pid_cgroup"]  # the running container had a cgroup
    assert vm["bg_gone"], vm["bg_actual"]
    assert _containers(vm["after_rm"]) == [], vm["after_rm"]


def test_memory_limit_oom_kills_and_inspect_says_so(vm: dict[str, Any]) -> None:
    assert vm["oom"]["rc"] == 137, vm["oom"]
    _no_limit_warning(vm["oom"])
    assert vm["oom_state"]["OOMKilled"] is True, vm["oom_state"]
    assert vm["oom_state"]["ExitCode"] == 137, vm["oom_state"]
    # The same command within the limit: not killed.
    assert vm["fit"]["rc"] == 0, vm["fit"]


def test_pids_limit_fails_fork_and_the_container_survives(vm: dict[str, Any]) -> None:
    p = vm["pids"]
    _no_limit_warning(p)
    assert p["rc"] == 0, p
    lines = dict(ln.split("=", 1) for ln in p["out"].splitlines() if "=" in ln)
    assert "survived" in p["out"], p
    assert lines.get("inner") != "0", p  # the inner shell hit a fork failure
    assert "can't fork" in lines.get("err", ""), p
    assert 10 <= int(lines["procs"]) <= 20, p


def test_failed_start_leaves_no_cgroup(vm: dict[str, Any]) -> None:
    assert vm["nocmd"]["rc"] == 127, vm["nocmd"]
    assert _containers(vm["final"]) == [], vm["final"]
