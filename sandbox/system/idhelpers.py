"""newuidmap(1)/newgidmap(1): are they there, and may they write another process's map?

The one probe of the id-map helpers, used by `sbx system check` and by the runtime
before every container (`sandbox.runtime.idmap.plan`), so it stays light: stdlib
only, no pathlib, shutil or subprocess.
"""

from __future__ import annotations

import os
import stat
import struct
from collections.abc import Sequence
from typing import NamedTuple

# <linux/capability.h>
CAP_SETGID = 6
CAP_SETUID = 7


class HelperProbe(NamedTuple):
    ok: bool
    detail: str
    fix: str | None
    path: str | None = None


def caps_permitted(xattr: bytes) -> int:
    """The permitted capability set stored in a `security.capability` xattr.

    The value is a little-endian `struct vfs_cap_data` (<linux/capability.h>):
    magic_etc, then {permitted, inheritable} 32-bit words for caps 0-31 and, in
    revisions 2 and 3, for caps 32-63; revision 3 adds the root uid of the user
    namespace the capabilities apply in. Anything unreadable grants nothing.
    """
    if len(xattr) < 12:
        return 0
    (magic,) = struct.unpack_from("<I", xattr, 0)
    revision = magic & 0xFF000000
    low = struct.unpack_from("<I", xattr, 4)[0]
    if revision == 0x01000000:
        return low
    if revision in (0x02000000, 0x03000000) and len(xattr) >= 20:
        # Namespaced file caps (revision 3, Linux 4.14) only hold in a user namespace
        # whose root is rootid; the host sees them only when rootid is 0.
        if revision == 0x03000000 and (
            len(xattr) < 24 or struct.unpack_from("<I", xattr, 20)[0] != 0
        ):
            return 0
        high = struct.unpack_from("<I", xattr, 12)[0]
        return low | (high << 32)
    return 0


def helper_privilege(mode: int, owner: int, capability: bytes | None, cap: int) -> str | None:
    """How a newuidmap-like helper gets the right to write another process's map.

    newuidmap(1) must be setuid root, or carry `cap` (CAP_SETUID for newuidmap,
    CAP_SETGID for newgidmap) in its file capabilities, as Fedora installs it
    (capabilities(7)). Returns a description of the privilege, or None if it has none.
    """
    if mode & stat.S_ISUID and owner == 0:
        return "setuid root"
    if capability and (caps_permitted(capability) >> cap) & 1:
        name = {CAP_SETUID: "cap_setuid", CAP_SETGID: "cap_setgid"}.get(cap, f"cap {cap}")
        return f"file capability {name}"
    return None


def find_helper(
    name: str, path: str | None = None, fallback_dirs: Sequence[str] = ("/usr/bin",)
) -> str | None:
    """Find `name` on PATH, else in `fallback_dirs`.

    Debian's uidmap package installs to /usr/bin; look there too because sbx may run
    with a minimal PATH (cron, systemd units) while the runtime calls it by full path.
    """
    for directory in (path if path is not None else os.environ.get("PATH", "")).split(":"):
        candidate = os.path.join(directory or ".", name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    for directory in fallback_dirs:
        candidate = os.path.join(directory, name)
        if os.path.isfile(candidate):
            return candidate
    return None


def _read_capability(path: str) -> bytes | None:
    try:
        return os.getxattr(path, "security.capability")
    except OSError:
        # ENODATA (no file caps) or ENOTSUP (filesystem without xattrs).
        return None


def probe_idmap_helper(
    name: str,
    cap: int,
    ranges_configured: bool,
    path: str | None = None,
    fallback_dirs: Sequence[str] = ("/usr/bin",),
) -> HelperProbe:
    """Probe newuidmap or newgidmap.

    They are required once the user has /etc/subuid and /etc/subgid ranges: the
    runtime then maps those ranges through them, and a broken helper stops every
    container. Without ranges sbx maps only the user's own id by writing
    /proc/PID/uid_map itself (user_namespaces(7) allows that unprivileged), so the
    helpers are optional.
    """
    package_fix = "sudo apt-get install uidmap (Fedora: dnf install shadow-utils)"
    helper = find_helper(name, path, fallback_dirs)
    if helper is None:
        where = ", ".join(["PATH", *fallback_dirs])
        return HelperProbe(
            False,
            f"{name} not found in {where}; " + _fallback_note(name, ranges_configured),
            package_fix,
        )
    try:
        st = os.stat(helper)
    except OSError as exc:
        return HelperProbe(False, f"can't stat {helper}: {exc.strerror}", package_fix)
    if not os.access(helper, os.X_OK):
        return HelperProbe(
            False,
            f"{helper} is not executable by you; " + _fallback_note(name, ranges_configured),
            f"sudo chmod 4755 {helper}",
        )
    privilege = helper_privilege(st.st_mode, st.st_uid, _read_capability(helper), cap)
    if privilege is None:
        capname = "cap_setuid" if cap == CAP_SETUID else "cap_setgid"
        return HelperProbe(
            False,
            f"{helper} is neither setuid root nor has {capname} in its file capabilities, "
            f"so it cannot write another process's map (newuidmap(1)); "
            + _fallback_note(name, ranges_configured),
            f"sudo chown root:root {helper} && sudo chmod u+s {helper}"
            f" (or: sudo setcap {capname}+ep {helper})",
        )
    try:
        nosuid = bool(os.statvfs(helper).f_flag & os.ST_NOSUID)
    except OSError:
        nosuid = False
    if nosuid and privilege == "setuid root":
        # A nosuid mount makes execve ignore the setuid bit (mount(8)).
        return HelperProbe(
            False,
            f"{helper} is setuid root but lies on a nosuid mount, so the bit is ignored",
            f"remount the filesystem holding {helper} without nosuid",
        )
    return HelperProbe(True, f"{helper}: {privilege}", None, helper)


def _fallback_note(name: str, ranges_configured: bool) -> str:
    idkind = "uid" if "uid" in name else "gid"
    if ranges_configured:
        return f"containers can't map your /etc/sub{idkind} ranges"
    return f"sbx maps only your own {idkind} into containers"
