"""`sbx run` namespaces, seen from inside: host name, pid 1, network, namespace ids.

Namespace ids are compared with those of this test process: pytest runs as root in the
host's initial namespaces, the same ones the unprivileged user's login shell is in.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from helpers import SbxRunner

NS_NAMES = ("uts", "ipc", "pid", "mnt", "user", "cgroup", "net")


def run_sh(sbx: SbxRunner, rootfs: Path, script: str, *opts: str) -> str:
    result = sbx.run("run", "--rootfs", rootfs, *opts, "--", "sh", "-c", script, timeout=30)
    assert result.returncode == 0, (
        f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    )
    return result.stdout


def sections(out: str) -> list[str]:
    """Split output printed with `echo --` between parts."""
    return [part.strip() for part in out.split("--\n")]


def interfaces(proc_net_dev: str) -> set[str]:
    """Interface names from /proc/net/dev (two header lines, then 'name: counters')."""
    return {line.split(":", 1)[0].strip() for line in proc_net_dev.splitlines()[2:]
            if ":" in line}


def inside_namespaces(sbx: SbxRunner, rootfs: Path, *opts: str) -> dict[str, str]:
    script = "; ".join(f"readlink /proc/self/ns/{n}" for n in NS_NAMES)
    links = run_sh(sbx, rootfs, script, *opts).split()
    assert len(links) == len(NS_NAMES), links
    return dict(zip(NS_NAMES, links, strict=True))


# -- UTS: host name ---------------------------------------------------------------------
def test_default_hostname_is_a_short_container_id(sbx: SbxRunner, busybox_rootfs: Path) -> None:
    script = "hostname; echo --; cat /etc/hostname; echo --; cat /etc/hosts; echo --; " \
             "echo $HOSTNAME"
    name, etc_hostname, hosts, env = sections(run_sh(sbx, busybox_rootfs, script))
    assert re.fullmatch(r"[0-9a-f]{12}", name), name
    assert etc_hostname == name
    assert env == name
    assert re.search(rf"^127\.0\.1\.1\s+{name}$", hosts, re.M), hosts
    assert re.search(r"^127\.0\.0\.1\s+localhost\b", hosts, re.M), hosts
    # A fresh id for each container.
    assert run_sh(sbx, busybox_rootfs, "hostname").strip() != name


def test_hostname_option(sbx: SbxRunner, busybox_rootfs: Path) -> None:
    script = "hostname; echo --; cat /etc/hostname; echo --; cat /etc/hosts; echo --; " \
             "echo $HOSTNAME"
    name, etc_hostname, hosts, env = sections(
        run_sh(sbx, busybox_rootfs, script, "--hostname", "dev-box"))
    assert (name, etc_hostname, env) == ("dev-box", "dev-box", "dev-box")
    assert re.search(r"^127\.0\.1\.1\s+dev-box$", hosts, re.M), hosts


def test_hostname_does_not_change_the_hosts(sbx: SbxRunner, busybox_rootfs: Path) -> None:
    before = os.uname().nodename
    # Without CAP_SYS_ADMIN root cannot rename its own UTS namespace (podman's default).
    denied = sbx.run("run", "--rootfs", busybox_rootfs, "hostname", "renamed", timeout=30)
    assert denied.returncode != 0
    assert "Operation not permitted" in denied.stderr
    # With it, the rename stays in the container's UTS namespace.
    out = run_sh(sbx, busybox_rootfs, "hostname renamed && hostname", "--cap-add", "SYS_ADMIN")
    assert out.strip() == "renamed"
    assert os.uname().nodename == before


# -- PID --------------------------------------------------------------------------------
def test_command_is_pid_1(sbx: SbxRunner, busybox_rootfs: Path) -> None:
    out = run_sh(sbx, busybox_rootfs, "echo $$; cat /proc/1/cmdline | tr '\\0' ' '")
    pid, cmdline = out.splitlines()
    assert pid == "1"
    assert cmdline.startswith("sh -c echo $$;")


def test_only_the_containers_processes_are_visible(sbx: SbxRunner, busybox_rootfs: Path) -> None:
    out = run_sh(sbx, busybox_rootfs, "ls /proc")
    pids = sorted(int(e) for e in out.split() if e.isdigit())
    # sh (pid 1) and ls; the host has far more.
    assert pids[0] == 1
    assert len(pids) <= 3, pids
    assert len([e for e in os.listdir("/proc") if e.isdigit()]) > 3


# -- namespace ids ----------------------------------------------------------------------
def test_namespaces_differ_from_the_hosts(sbx: SbxRunner, busybox_rootfs: Path) -> None:
    inside = inside_namespaces(sbx, busybox_rootfs)
    host = {n: os.readlink(f"/proc/self/ns/{n}") for n in NS_NAMES}
    for ns in ("uts", "ipc", "pid", "mnt", "user", "cgroup"):
        assert inside[ns] != host[ns], ns
    # --network host is the default: the host's network namespace.
    assert inside["net"] == host["net"]


def test_network_none_has_its_own_namespace(sbx: SbxRunner, busybox_rootfs: Path) -> None:
    inside = inside_namespaces(sbx, busybox_rootfs, "--network", "none")
    assert inside["net"] != os.readlink("/proc/self/ns/net")


# -- network ----------------------------------------------------------------------------
def test_network_none_has_only_loopback_and_it_is_up(sbx: SbxRunner, busybox_rootfs: Path) -> None:
    script = "cat /proc/net/dev; echo --; ls /sys/class/net; echo --; " \
             "cat /sys/class/net/lo/flags; echo --; cat /etc/resolv.conf"
    net_dev, sys_net, flags, resolv = sections(
        run_sh(sbx, busybox_rootfs, script, "--network", "none"))
    assert interfaces(net_dev) == {"lo"}
    assert sys_net.split() == ["lo"]
    assert int(flags, 16) & 0x1, f"lo is down: flags {flags}"  # IFF_UP
    assert resolv == ""


def test_network_none_loopback_carries_traffic(sbx: SbxRunner, busybox_rootfs: Path) -> None:
    """A TCP round trip on 127.0.0.1 needs lo up (busybox nc as server and client)."""
    script = ("nc -l -p 4242 > /tmp/got & srv=$!; "
              "for i in 1 2 3 4 5 6 7 8 9 10; do "
              "echo ping | nc 127.0.0.1 4242 2>/dev/null && ok=1 && break; sleep 0.1; done; "
              "[ -n \"$ok\" ] || kill $srv; wait; cat /tmp/got")
    probe = run_sh(sbx, busybox_rootfs, "command -v nc || true")
    if not probe.strip():
        pytest.fail("busybox in the rootfs has no nc applet")
    out = run_sh(sbx, busybox_rootfs, script, "--network", "none", "--tmpfs", "/tmp")
    assert out.strip().endswith("ping")


def test_network_host_sees_the_hosts_interfaces(sbx: SbxRunner, busybox_rootfs: Path) -> None:
    out = run_sh(sbx, busybox_rootfs, "cat /proc/net/dev")
    host = interfaces(Path("/proc/net/dev").read_text())
    assert interfaces(out) == host
    assert host - {"lo"}, "the host has only lo: this test cannot tell host from none"
