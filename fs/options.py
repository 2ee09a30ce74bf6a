"""The command line: fuse-overlayfs's, so that anything that runs fuse-overlayfs as a
mount program (podman, buildah, containers/storage) can run sbx-fs instead.

Owns: parsing `[-f] [-d] [-o OPTS]... MOUNTPOINT` into MountOptions. Pure: no I/O but
os.getcwd for relative paths. Imports nothing from `sandbox`.

    sbx-fs -o lowerdir=L1:L2,upperdir=U,workdir=W[,uidmapping=C:H:N[:C:H:N...]] MNT

Options are fuse-overlayfs's (its ovl_opts and fuse_opt_proc, main.c) and what
containers/storage's overlay driver passes to a mount program (drivers/overlay
overlay.go: the mount options of storage.conf, `uidmapping=`/`gidmapping=` or
`squash_to_uid=`/`squash_to_gid=` from optsAppendMappings, `xattr_permissions=2` for
force_mask, `volatile`, `context="..."` with SELinux; "ro" for a read-only layer,
which also comes as lowerdir without upperdir). Options of the kernel's overlayfs
that mean nothing here (userxattr, index=, metacopy=, xino=) are accepted and ignored,
so one option string serves both. An unknown option is ignored with a warning, as
fuse-overlayfs does. `lowerdir` may escape ":" and "," as "\\:" and "\\,", as the
kernel's overlayfs allows; a `//plugin/...` layer (fuse-overlayfs plugins) is refused.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from fs.mapping import IdRange, MappingError, parse_mapping
from fs.spin import DEFAULT_SPIN_US

USAGE = """\
usage: sbx-fs [-f] [-d] -o lowerdir=DIR[:DIR...][,upperdir=DIR,workdir=DIR][,OPTION...] MOUNTPOINT

A union filesystem on FUSE with fuse-overlayfs's command line.

  -f                 stay in the foreground (otherwise: return once mounted)
  -d, --debug        log every request to stderr (implies -f)
  -o OPTIONS         comma-separated options:
     lowerdir=A:B    read-only layers, top first
     upperdir=U      the writable layer (without it the mount is read-only)
     workdir=W       scratch directory on U's filesystem
     uidmapping=C:H:N[:C:H:N...], gidmapping=...
                     present ids C..C+N-1 stored in the layers as H..H+N-1
     squash_to_uid=N, squash_to_gid=N, squash_to_root
                     present every owner as one id
     timeout=SECONDS kernel cache time of entries and attributes (default: as
                     long as the mount lives, fuse-overlayfs's default)
     writeback=0|1   kernel writeback cache (default 1)
     fsync=0, volatile
                     ignore fsync
     static_nlink    directories have st_nlink 1
     spin=MICROSECONDS
                     poll for the next request this long before sleeping, while
                     requests come densely (default 50; 0: never)
     noxattrs=1      no extended attributes
     xattr_permissions=1|2
                     keep owners and modes of the upper layer in an xattr
     ro, allow_other, default_permissions, suid, dev, exec, noatime, fsname=, subtype=
                     passed to the FUSE mount
  -h, --help         this text
  -V, --version      the version
"""

# Mount options libfuse 3 (lib/mount.c fuse_mount_opts, and the kernel flags it
# knows) takes from us and passes on to mount(2).
_FUSE_FLAGS = frozenset({
    "ro", "rw", "suid", "nosuid", "dev", "nodev", "exec", "noexec", "async", "sync",
    "dirsync", "noatime", "nodiratime", "atime", "diratime", "allow_other",
    "default_permissions", "auto_unmount",
})
_FUSE_KEYS = frozenset({"fsname", "subtype", "max_read"})
# Accepted and without effect: fuse-overlayfs options that do not apply, the kernel
# overlayfs's, and libfuse's that sbx-fs sets itself.
_IGNORED_FLAGS = frozenset({
    "noacl", "userxattr", "relatime", "strictatime", "lazytime", "nolazytime",
    "kernel_cache", "splice_read", "splice_write", "splice_move", "allow_root",
    "big_writes", "nfs_export", "debug",
})
_IGNORED_KEYS = frozenset({
    "threaded", "fast_ino", "context", "fscontext", "defcontext", "rootcontext",
    "index", "xino", "metacopy", "uuid", "nfs_export", "redirect_dir", "max_write",
    "max_readahead", "verity",
})


class UsageError(ValueError):
    """A command line that cannot be used; the message says why."""


@dataclass
class MountOptions:
    mountpoint: str = ""
    lowerdirs: list[str] = field(default_factory=list)
    upperdir: str | None = None
    workdir: str | None = None
    uidmapping: list[IdRange] = field(default_factory=list)
    gidmapping: list[IdRange] = field(default_factory=list)
    squash_to_uid: int | None = None
    squash_to_gid: int | None = None
    squash_to_root: bool = False
    # fuse-overlayfs's default (main.c: .timeout = 1000000000.0): every change to
    # the tree goes through this process and is in its replies, so the kernel's
    # caches stay right however long they keep entries (ops.py).
    timeout: float = 1e9
    writeback: bool = True
    fsync: bool = True
    static_nlink: bool = False
    spin_us: int = DEFAULT_SPIN_US  # spin.py
    xattrs: bool = True
    xattr_permissions: int = 0
    read_only: bool = False
    foreground: bool = False
    debug: bool = False
    show_help: bool = False
    show_version: bool = False
    fuse_options: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def split_options(text: str) -> list[str]:
    """Split an -o value at commas, keeping quoted parts (`context="a,b"`) and
    backslash-escaped commas whole."""
    out: list[str] = []
    cur: list[str] = []
    quote = False
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            cur.append(text[i:i + 2])
            i += 2
            continue
        if c == '"':
            quote = not quote
        if c == "," and not quote:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    out.append("".join(cur))
    return [o for o in out if o]


def split_dirs(text: str) -> list[str]:
    """A lowerdir list: split at unescaped ":", unescape "\\:", "\\," and "\\\\"."""
    dirs: list[str] = []
    cur: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            cur.append(text[i + 1])
            i += 2
            continue
        if c == ":":
            dirs.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    dirs.append("".join(cur))
    return [d for d in dirs if d]


def _unescape(text: str) -> str:
    """Drop the backslash of "\\:", "\\," and "\\\\" in a single path."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text):
            i += 1
        out.append(text[i])
        i += 1
    return "".join(out)


def _int(key: str, value: str) -> int:
    try:
        return int(value, 10)
    except ValueError:
        raise UsageError(f"invalid value for {key}: {value!r}") from None


def _bool(key: str, value: str) -> bool:
    return _int(key, value) != 0


def _abs(path: str, cwd: str) -> str:
    return os.path.normpath(os.path.join(cwd, path))


def apply_option(opts: MountOptions, option: str, cwd: str) -> None:
    key, eq, value = option.partition("=")
    if not eq:
        if key == "squash_to_root":
            opts.squash_to_root = True
        elif key == "static_nlink":
            opts.static_nlink = True
        elif key == "volatile":
            opts.fsync = False
        elif key == "ro":
            opts.read_only = True
            opts.fuse_options.append(key)
        elif key in _FUSE_FLAGS:
            opts.fuse_options.append(key)
        elif key in _IGNORED_FLAGS:
            if key == "debug":
                opts.debug = True
        else:
            opts.warnings.append(option)
        return
    if key == "lowerdir":
        if any(d.startswith("//") for d in split_dirs(value)):
            raise UsageError("fuse-overlayfs plugins (lowerdir=//plugin/...) are not supported")
        opts.lowerdirs = [_abs(d, cwd) for d in split_dirs(value)]
    elif key == "upperdir":
        opts.upperdir = _abs(_unescape(value), cwd)
    elif key == "workdir":
        opts.workdir = _abs(_unescape(value), cwd)
    elif key in ("uidmapping", "gidmapping"):
        try:
            ranges = parse_mapping(value)
        except MappingError as exc:
            raise UsageError(str(exc)) from None
        if key == "uidmapping":
            opts.uidmapping = ranges
        else:
            opts.gidmapping = ranges
    elif key == "squash_to_uid":
        opts.squash_to_uid = _int(key, value)
    elif key == "squash_to_gid":
        opts.squash_to_gid = _int(key, value)
    elif key == "timeout":
        try:
            opts.timeout = float(value)
        except ValueError:
            raise UsageError(f"invalid value for timeout: {value!r}") from None
        if opts.timeout < 0:
            raise UsageError(f"invalid value for timeout: {value!r}")
    elif key == "writeback":
        opts.writeback = _bool(key, value)
    elif key == "spin":
        opts.spin_us = _int(key, value)
        if not 0 <= opts.spin_us <= 10_000:
            raise UsageError(f"invalid value for spin: {value!r} (microseconds, 0 to 10000)")
    elif key == "fsync":
        opts.fsync = _bool(key, value)
    elif key == "noxattrs":
        opts.xattrs = not _bool(key, value)
    elif key == "xattr_permissions":
        level = _int(key, value)
        if level not in (0, 1, 2):
            raise UsageError(f"invalid value for xattr_permissions: {value!r}")
        opts.xattr_permissions = level
    elif key == "plugins":
        if value:
            opts.warnings.append(option)  # fuse-overlayfs plugins: none loaded
    elif key == "redirect_dir":
        if value not in ("off", "nofollow", "follow"):
            raise UsageError("sbx-fs only supports redirect_dir=off")
    elif key in _FUSE_KEYS:
        opts.fuse_options.append(option)
    elif key in _IGNORED_KEYS:
        pass
    else:
        opts.warnings.append(option)


def parse_args(argv: list[str], cwd: str | None = None) -> MountOptions:
    """Parse the arguments after the program name."""
    cwd = cwd or os.getcwd()
    opts = MountOptions()
    args = iter(argv)
    for arg in args:
        if arg in ("-h", "--help"):
            opts.show_help = True
        elif arg in ("-V", "--version"):
            opts.show_version = True
        elif arg == "-f":
            opts.foreground = True
        elif arg in ("-d", "--debug"):
            opts.debug = True
        elif arg == "-s":
            pass  # libfuse's single-threaded flag: sbx-fs always is
        elif arg == "-o":
            value = next(args, None)
            if value is None:
                raise UsageError("-o needs an argument")
            for option in split_options(value):
                apply_option(opts, option, cwd)
        elif arg.startswith("-o"):
            for option in split_options(arg[2:]):
                apply_option(opts, option, cwd)
        elif arg.startswith("-") and arg != "-":
            raise UsageError(f"unknown option {arg}")
        else:
            opts.mountpoint = _abs(arg, cwd)  # the last one wins, as in fuse-overlayfs
    if opts.show_help or opts.show_version:
        return opts
    if opts.debug:
        opts.foreground = True
    if not opts.mountpoint:
        raise UsageError("no mountpoint specified")
    if not opts.lowerdirs:
        raise UsageError("no lowerdir specified")
    if opts.read_only and opts.upperdir is not None:
        # Read-only with an upper layer: its contents stay visible, as the top layer
        # (the kernel's overlayfs mounted "ro" shows the upper layer too).
        opts.lowerdirs.insert(0, opts.upperdir)
        opts.upperdir = opts.workdir = None
    if opts.upperdir is not None and opts.workdir is None:
        raise UsageError("workdir not specified")
    return opts
