"""Container networking. For now: bring `lo` up in a new network namespace
(`--network none`), as every runtime does; rootless bridges come with slirp4netns/pasta.
"""

from __future__ import annotations

import fcntl
import socket
import struct

from sandbox.errors import SyscallError

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1


def loopback_up() -> None:
    """ioctl(SIOCSIFFLAGS, IFF_UP) on lo: netdevice(7)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifreq = struct.pack("16sH14x", b"lo", 0)
        try:
            flags = struct.unpack("16sH14x", fcntl.ioctl(s, SIOCGIFFLAGS, ifreq))[1]
            fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))
        except OSError as exc:
            raise SyscallError("bring up loopback interface", exc.errno or 0, "lo") from None
