"""Linux capability names and numbers, and the default set containers get.

Numbers are from <linux/capability.h>; the default set is podman's (containers/common
`DefaultCapabilities`): enough for package managers and daemons that drop privileges,
without CAP_SYS_ADMIN, CAP_NET_RAW, CAP_MKNOD or CAP_AUDIT_WRITE.
"""

from __future__ import annotations

from collections.abc import Iterable

from sandbox.errors import UsageError

CAPABILITIES: dict[str, int] = {
    "CAP_CHOWN": 0,
    "CAP_DAC_OVERRIDE": 1,
    "CAP_DAC_READ_SEARCH": 2,
    "CAP_FOWNER": 3,
    "CAP_FSETID": 4,
    "CAP_KILL": 5,
    "CAP_SETGID": 6,
    "CAP_SETUID": 7,
    "CAP_SETPCAP": 8,
    "CAP_LINUX_IMMUTABLE": 9,
    "CAP_NET_BIND_SERVICE": 10,
    "CAP_NET_BROADCAST": 11,
    "CAP_NET_ADMIN": 12,
    "CAP_NET_RAW": 13,
    "CAP_IPC_LOCK": 14,
    "CAP_IPC_OWNER": 15,
    "CAP_SYS_MODULE": 16,
    "CAP_SYS_RAWIO": 17,
    "CAP_SYS_CHROOT": 18,
    "CAP_SYS_PTRACE": 19,
    "CAP_SYS_PACCT": 20,
    "CAP_SYS_ADMIN": 21,
    "CAP_SYS_BOOT": 22,
    "CAP_SYS_NICE": 23,
    "CAP_SYS_RESOURCE": 24,
    "CAP_SYS_TIME": 25,
    "CAP_SYS_TTY_CONFIG": 26,
    "CAP_MKNOD": 27,
    "CAP_LEASE": 28,
    "CAP_AUDIT_WRITE": 29,
    "CAP_AUDIT_CONTROL": 30,
    "CAP_SETFCAP": 31,
    "CAP_MAC_OVERRIDE": 32,
    "CAP_MAC_ADMIN": 33,
    "CAP_SYSLOG": 34,
    "CAP_WAKE_ALARM": 35,
    "CAP_BLOCK_SUSPEND": 36,
    "CAP_AUDIT_READ": 37,
    "CAP_PERFMON": 38,
    "CAP_BPF": 39,
    "CAP_CHECKPOINT_RESTORE": 40,
}

DEFAULT_CAPABILITIES: tuple[str, ...] = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_NET_BIND_SERVICE",
    "CAP_SETFCAP",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_SETUID",
    "CAP_SYS_CHROOT",
)


def last_cap() -> int:
    """The highest capability the running kernel knows (capabilities(7))."""
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return max(CAPABILITIES.values())


def normalize(name: str) -> str:
    """'net_raw', 'NET_RAW' and 'CAP_NET_RAW' all name CAP_NET_RAW; 'ALL' stays."""
    upper = name.strip().upper()
    if upper == "ALL":
        return upper
    if not upper.startswith("CAP_"):
        upper = "CAP_" + upper
    if upper not in CAPABILITIES:
        raise UsageError(
            f"unknown capability {name!r}",
            hint="use a name from capabilities(7), such as NET_RAW or CAP_SYS_PTRACE",
        )
    return upper


def resolve(add: Iterable[str] = (), drop: Iterable[str] = (),
            base: Iterable[str] = DEFAULT_CAPABILITIES) -> list[str]:
    """The capability set after --cap-add and --cap-drop, as podman computes it.

    'ALL' in drop empties the set before adds apply; 'ALL' in add grants every
    capability (minus explicit drops).
    """
    adds = [normalize(n) for n in add]
    drops = [normalize(n) for n in drop]
    caps = set(base)
    if "ALL" in drops:
        caps = set()
    if "ALL" in adds:
        caps = set(CAPABILITIES)
    caps.update(c for c in adds if c != "ALL")
    caps.difference_update(c for c in drops if c != "ALL")
    return sorted(caps, key=CAPABILITIES.__getitem__)


def to_mask(names: Iterable[str]) -> int:
    mask = 0
    for name in names:
        mask |= 1 << CAPABILITIES[name]
    return mask
