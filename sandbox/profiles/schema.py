"""The keys of a profile, their types, and their normal form: pure validation.

`validate_profile(table, path)` checks one profile table as read from TOML and
returns (clean, problems): `clean` keeps every valid key in a normal form (a numeric
user becomes a string, `workspace = true` the default table), `problems` lists each
invalid key with its key path, e.g. `profiles.python.limits.memory: expected a size
like "2g", got 12`. Unknown keys get a did-you-mean from difflib, as git and cargo
suggest commands. docs/profiles.md documents every key here; keep them together.

tomllib gives no positions for values, so `find_line(text, path)` finds the line a
key path was written on by scanning the file text: it tracks `[table]` and
`[[array]]` headers (counting each array's entries) and matches `key = ` lines
(dotted and quoted keys included) against the path; the longest match wins, so a
problem inside an inline table or array points at the line of its key. A key
spelled out inside a multi-line string can fool it; the key path in the message is
always exact.

No I/O; imports only the registry's reference grammar (itself pure).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

KeyPath = tuple[str | int, ...]

# A profile name is a bare word: it is what `sbx run NAME` and `extends` use, and
# anything with "/", ":" or "@" is an image reference (load.is_profile_reference).
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# podman volume names: [a-zA-Z0-9][a-zA-Z0-9_.-]*
VOLUME_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# docker's RAMInBytes (go-units): a number, then b, k, m, g, t or p, optionally
# followed by "b" or "ib"; all binary multiples.
SIZE_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([bkmgtp]?)(?:i?b)?\s*", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
# [IP:]HOST:CONTAINER[/PROTO] as `docker run -p` writes it (IPv6 in brackets).
PORT_RE = re.compile(
    r"(?:(?P<ip>\d{1,3}(?:\.\d{1,3}){3}|\[[0-9A-Fa-f:.]+\]):)?"
    r"(?P<host>\d{1,5}):(?P<ctr>\d{1,5})(?:/(?P<proto>tcp|udp))?"
)
# mmdebstrap's "SUITE" argument, with the distribution named as an image would be.
BOOTSTRAP_RE = re.compile(r"(?P<distro>debian|ubuntu):(?P<suite>[a-z][a-z0-9-]*)")
DEB_PACKAGE_RE = re.compile(r"[a-z0-9][a-z0-9+.-]+(?::[a-z0-9-]+)?(?:=[A-Za-z0-9.+~:-]+)?")
# mmdebstrap --variant values (mmdebstrap(1)).
BOOTSTRAP_VARIANTS = ("extract", "custom", "essential", "apt", "required", "minbase",
                      "buildd", "important", "debootstrap", "standard")
USER_RE = re.compile(r"(?:\d+|[a-z_][a-z0-9_-]*\$?)(?::(?:\d+|[a-z_][a-z0-9_-]*))?")
FORWARDS = ("ssh_agent", "git_config", "x11", "wayland", "gpu")
NETWORKS = ("host", "none")

# Every key of a profile table, in the order `sbx profile show` writes them.
PROFILE_KEYS = ("description", "extends", "image", "workdir", "command", "shell", "user",
                "network", "env", "workspace", "mounts", "volumes", "tmpfs", "limits",
                "ports", "forward", "setup", "inputs")
IMAGE_TABLE_KEYS = ("bootstrap", "packages", "mirror", "variant")
MOUNT_KEYS = ("source", "target", "ro", "optional")
WORKSPACE_KEYS = ("source", "target", "ro")
LIMIT_KEYS = ("memory", "cpus", "pids")


class Problem:
    """One invalid key: where (a key path) and what is wrong."""

    __slots__ = ("message", "path")

    def __init__(self, path: KeyPath, message: str) -> None:
        self.path = path
        self.message = message

    def __repr__(self) -> str:
        return f"Problem({path_text(self.path)!r}, {self.message!r})"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Problem) and self.path == other.path
                and self.message == other.message)

    def __hash__(self) -> int:
        return hash((self.path, self.message))

    def text(self) -> str:
        return f"{path_text(self.path)}: {self.message}" if self.path else self.message


def path_text(path: KeyPath) -> str:
    """("profiles", "py", "mounts", 0, "target") -> profiles.py.mounts[0].target"""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            from sandbox.profiles.tomlwrite import key

            out += ("." if out else "") + key(part)
    return out


def describe(v: Any) -> str:
    """A value as a problem message shows it: TOML's spelling, or its kind."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        from sandbox.profiles.tomlwrite import quote_string

        return quote_string(v if len(v) <= 60 else v[:57] + "...")
    if isinstance(v, Mapping):
        return "a table"
    if isinstance(v, list):
        return "an array"
    return type(v).__name__


def did_you_mean(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


def parse_size(text: str) -> int:
    """"2g" -> 2147483648, as docker's --memory reads it; ValueError if malformed."""
    m = SIZE_RE.fullmatch(text)
    if not m:
        raise ValueError(text)
    number, unit = m.group(1), m.group(2).lower()
    size = int(float(number) * _UNITS[unit])
    if size <= 0:
        raise ValueError(text)
    return size


class _V:
    """The problems found in one validation run; helpers report through it."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def bad(self, path: KeyPath, message: str) -> None:
        self.problems.append(Problem(path, message))

    def expect(self, path: KeyPath, what: str, got: Any) -> None:
        self.bad(path, f"expected {what}, got {describe(got)}")

    def table(self, v: Any, path: KeyPath) -> Mapping[str, Any] | None:
        if isinstance(v, Mapping):
            return v
        self.expect(path, "a table", v)
        return None

    def keys(self, table: Mapping[str, Any], allowed: Sequence[str], path: KeyPath) -> None:
        for k in table:
            if k not in allowed:
                self.bad((*path, k), f"unknown key{did_you_mean(k, allowed)}")

    def string(self, v: Any, path: KeyPath, *, empty: bool = False) -> str | None:
        if not isinstance(v, str):
            self.expect(path, "a string", v)
            return None
        if not v and not empty:
            self.bad(path, "must not be empty")
            return None
        return v

    def boolean(self, v: Any, path: KeyPath) -> bool | None:
        if isinstance(v, bool):
            return v
        self.expect(path, "true or false", v)
        return None

    def strings(self, v: Any, path: KeyPath) -> list[str] | None:
        if not isinstance(v, list):
            self.expect(path, "an array of strings", v)
            return None
        out = []
        for i, item in enumerate(v):
            s = self.string(item, (*path, i))
            if s is not None:
                out.append(s)
        return out if len(out) == len(v) else None

    def container_path(self, v: Any, path: KeyPath) -> str | None:
        s = self.string(v, path)
        if s is None:
            return None
        if not s.startswith("/"):
            self.bad(path, f"expected an absolute path inside the container, got {describe(s)}")
            return None
        if ":" in s:
            # It becomes part of a HOST:CTR[:ro] volume string (podman's -v syntax).
            self.bad(path, f"a container path can't contain ':', got {describe(s)}")
            return None
        return s

    def host_path(self, v: Any, path: KeyPath) -> str | None:
        s = self.string(v, path)
        if s is not None and ":" in s and "${" not in s:
            self.bad(path, f"a host path can't contain ':', got {describe(s)}")
            return None
        return s


# --- ${VAR} syntax ------------------------------------------------------------------

# docker compose's interpolation: ${VAR}, ${VAR:-default} (unset or empty),
# ${VAR-default} (unset), and $$ for a literal $. A bare $VAR stays as written
# (the container's shell may want it, as in PATH = "/opt/bin:$PATH").
REF_RE = re.compile(r"\$\$|\$\{(?P<name>[^}:\-]*)(?:(?P<op>:?-)(?P<default>[^}]*))?\}")


def check_interpolation(text: str) -> str | None:
    """What is wrong with the ${...} references in `text`, or None."""
    pos = 0
    while True:
        i = text.find("$", pos)
        if i < 0 or i + 1 >= len(text):
            return None
        if text[i + 1] == "$":
            pos = i + 2
            continue
        if text[i + 1] != "{":
            pos = i + 1
            continue
        m = REF_RE.match(text, i)
        if m is None:
            end = text.find("}", i)
            bad = text[i:end + 1] if end >= 0 else text[i:]
            if end < 0:
                return f"unclosed {bad!r}: write ${{NAME}} or ${{NAME:-default}} ($$ for a $)"
            return f"invalid reference {bad!r}: write ${{NAME}} or ${{NAME:-default}}"
        if not ENV_NAME_RE.fullmatch(m.group("name") or ""):
            return f"invalid variable name in {m.group(0)!r}"
        pos = m.end()


# --- the keys ------------------------------------------------------------------------


def _image(v: _V, value: Any, path: KeyPath) -> Any:
    if isinstance(value, str):
        from sandbox.registry.errors import InvalidReferenceError
        from sandbox.registry.reference import parse_reference

        try:
            parse_reference(value)
        except InvalidReferenceError as err:
            v.bad(path, f"invalid image reference {describe(value)}: {err.problem}")
            return None
        return value
    if not isinstance(value, Mapping):
        v.expect(path, 'an image reference ("debian:bookworm") or a table '
                 '({ bootstrap = "debian:bookworm", packages = [...] })', value)
        return None
    v.keys(value, IMAGE_TABLE_KEYS, path)
    out: dict[str, Any] = {}
    if "bootstrap" not in value:
        v.bad((*path, "bootstrap"), 'missing: say what to bootstrap, e.g. "debian:bookworm"')
    else:
        boot = v.string(value["bootstrap"], (*path, "bootstrap"))
        if boot is not None:
            if BOOTSTRAP_RE.fullmatch(boot):
                out["bootstrap"] = boot
            else:
                v.expect((*path, "bootstrap"), 'DISTRIBUTION:SUITE like "debian:bookworm"', boot)
    if "packages" in value:
        pkgs = v.strings(value["packages"], (*path, "packages"))
        if pkgs is not None:
            for i, p in enumerate(pkgs):
                if not DEB_PACKAGE_RE.fullmatch(p):
                    v.expect((*path, "packages", i), "a Debian package name", p)
            out["packages"] = pkgs
    if "mirror" in value:
        mirror = v.string(value["mirror"], (*path, "mirror"))
        if mirror is not None:
            out["mirror"] = mirror
    if "variant" in value:
        variant = v.string(value["variant"], (*path, "variant"))
        if variant is not None:
            if variant in BOOTSTRAP_VARIANTS:
                out["variant"] = variant
            else:
                v.bad((*path, "variant"), f"expected one of {', '.join(BOOTSTRAP_VARIANTS)}, "
                      f"got {describe(variant)}{did_you_mean(variant, BOOTSTRAP_VARIANTS)}")
    return out


def _extends(v: _V, value: Any, path: KeyPath) -> Any:
    s = v.string(value, path)
    if s is None:
        return None
    if s.endswith(".toml") or NAME_RE.fullmatch(s):
        return s
    v.expect(path, "a profile name or a path to a .toml file", s)
    return None


def _workdir(v: _V, value: Any, path: KeyPath) -> Any:
    return v.container_path(value, path)


def _command(v: _V, value: Any, path: KeyPath) -> Any:
    if isinstance(value, str):
        return v.string(value, path)
    if isinstance(value, list):
        if not value:
            v.bad(path, "must not be empty")
            return None
        return v.strings(value, path)
    v.expect(path, "a string (run by the shell) or an array of strings", value)
    return None


def _shell(v: _V, value: Any, path: KeyPath) -> Any:
    return v.string(value, path)


def _description(v: _V, value: Any, path: KeyPath) -> Any:
    return v.string(value, path, empty=True)


def _user(v: _V, value: Any, path: KeyPath) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            v.expect(path, "a uid of 0 or more", value)
            return None
        return str(value)
    if isinstance(value, str) and (value in ("keep-id", "root") or USER_RE.fullmatch(value)):
        return value
    v.expect(path, '"keep-id", "root", a uid[:gid] or a user name', value)
    return None


def _network(v: _V, value: Any, path: KeyPath) -> Any:
    if value in NETWORKS:
        return value
    hint = did_you_mean(value, NETWORKS) if isinstance(value, str) else ""
    v.bad(path, f'expected "host" or "none", got {describe(value)}{hint}')
    return None


def _env(v: _V, value: Any, path: KeyPath) -> Any:
    table = v.table(value, path)
    if table is None:
        return None
    out: dict[str, str] = {}
    for name, item in table.items():
        p = (*path, name)
        if not ENV_NAME_RE.fullmatch(name):
            v.bad(p, "invalid variable name (letters, digits and _, not starting with a digit)")
            continue
        if isinstance(item, bool):
            # docker compose asks for quoted booleans too: "true" or "1" is the
            # program's business, not TOML's.
            v.bad(p, f"expected a string or a number, got {describe(item)} "
                  f'(write "{describe(item)}")')
            continue
        if isinstance(item, (int, float)):
            out[name] = str(item)
            continue
        s = v.string(item, p, empty=True)
        if s is None:
            continue
        problem = check_interpolation(s)
        if problem:
            v.bad(p, problem)
            continue
        out[name] = s
    return out


def _mounts(v: _V, value: Any, path: KeyPath) -> Any:
    if not isinstance(value, list):
        v.expect(path, 'an array of tables like { source = "~/data", target = "/data" }', value)
        return None
    out = []
    for i, item in enumerate(value):
        p = (*path, i)
        table = v.table(item, p)
        if table is None:
            continue
        v.keys(table, MOUNT_KEYS, p)
        mount: dict[str, Any] = {}
        for req in ("source", "target"):
            if req not in table:
                v.bad((*p, req), "missing")
        if "source" in table:
            src = v.host_path(table["source"], (*p, "source"))
            if src is not None:
                problem = check_interpolation(src)
                if problem:
                    v.bad((*p, "source"), problem)
                else:
                    mount["source"] = src
        if "target" in table:
            target = v.container_path(table["target"], (*p, "target"))
            if target is not None:
                mount["target"] = target
        for flag in ("ro", "optional"):
            if flag in table:
                b = v.boolean(table[flag], (*p, flag))
                if b is not None:
                    mount[flag] = b
        if "source" in mount and "target" in mount:
            out.append(mount)
    return out


def _volumes(v: _V, value: Any, path: KeyPath) -> Any:
    table = v.table(value, path)
    if table is None:
        return None
    out = {}
    for name, target in table.items():
        p = (*path, name)
        if not VOLUME_NAME_RE.fullmatch(name):
            v.bad(p, "invalid volume name (letters, digits, '_', '.' and '-', "
                  "starting with a letter or digit)")
            continue
        t = v.container_path(target, p)
        if t is not None:
            out[name] = t
    return out


def _workspace(v: _V, value: Any, path: KeyPath) -> Any:
    if value is True:
        return {}
    if value is False:
        return False
    table = v.table(value, path)
    if table is None:
        return None
    v.keys(table, WORKSPACE_KEYS, path)
    out: dict[str, Any] = {}
    if "source" in table:
        src = v.host_path(table["source"], (*path, "source"))
        if src is not None:
            problem = check_interpolation(src)
            if problem:
                v.bad((*path, "source"), problem)
            else:
                out["source"] = src
    if "target" in table:
        t = v.container_path(table["target"], (*path, "target"))
        if t is not None:
            out["target"] = t
    if "ro" in table:
        b = v.boolean(table["ro"], (*path, "ro"))
        if b is not None:
            out["ro"] = b
    return out


def _tmpfs(v: _V, value: Any, path: KeyPath) -> Any:
    items = v.strings(value, path)
    if items is None:
        return None
    for i, item in enumerate(items):
        if not item.startswith("/"):
            v.expect((*path, i), 'an absolute path, optionally with options ("/tmp:size=64m")',
                     item)
    return items


def _limits(v: _V, value: Any, path: KeyPath) -> Any:
    table = v.table(value, path)
    if table is None:
        return None
    v.keys(table, LIMIT_KEYS, path)
    out: dict[str, Any] = {}
    if "memory" in table:
        mem = table["memory"]
        try:
            if not isinstance(mem, str):
                raise ValueError(mem)
            parse_size(mem)
            out["memory"] = mem
        except ValueError:
            v.expect((*path, "memory"), 'a size like "2g"', mem)
    if "cpus" in table:
        cpus = table["cpus"]
        if isinstance(cpus, (int, float)) and not isinstance(cpus, bool) and 0 < cpus < 1e6:
            out["cpus"] = cpus
        else:
            v.expect((*path, "cpus"), "a number of CPUs above 0, like 2 or 2.5", cpus)
    if "pids" in table:
        pids = table["pids"]
        if isinstance(pids, int) and not isinstance(pids, bool) and pids > 0:
            out["pids"] = pids
        else:
            v.expect((*path, "pids"), "a number of processes above 0, like 512", pids)
    return out


def parse_port(text: str) -> dict[str, Any] | None:
    """"127.0.0.1:8080:80/tcp" -> {host_ip, host_port, container_port, protocol}."""
    m = PORT_RE.fullmatch(text)
    if not m:
        return None
    host, ctr = int(m.group("host")), int(m.group("ctr"))
    if not (0 < host < 65536 and 0 < ctr < 65536):
        return None
    return {"host_ip": (m.group("ip") or "").strip("[]"), "host_port": host,
            "container_port": ctr, "protocol": m.group("proto") or "tcp"}


def _ports(v: _V, value: Any, path: KeyPath) -> Any:
    items = v.strings(value, path)
    if items is None:
        return None
    for i, item in enumerate(items):
        if parse_port(item) is None:
            v.expect((*path, i), '"HOST:CONTAINER[/tcp|/udp]" with ports 1-65535, '
                     'like "8000:8000"', item)
    return items


def _forward(v: _V, value: Any, path: KeyPath) -> Any:
    table = v.table(value, path)
    if table is None:
        return None
    v.keys(table, FORWARDS, path)
    out = {}
    for name in FORWARDS:
        if name in table:
            b = v.boolean(table[name], (*path, name))
            if b is not None:
                out[name] = b
    return out


def _setup(v: _V, value: Any, path: KeyPath) -> Any:
    if isinstance(value, str):
        v.expect(path, f"an array of shell steps (write [{describe(value)}])", value)
        return None
    return v.strings(value, path)


def _inputs(v: _V, value: Any, path: KeyPath) -> Any:
    items = v.strings(value, path)
    if items is None:
        return None
    for i, item in enumerate(items):
        parts = item.replace("\\", "/").split("/")
        if item.startswith("/") or ".." in parts:
            v.expect((*path, i), "a file pattern inside the project (relative, no '..')", item)
    return items


_VALIDATORS: dict[str, Callable[[_V, Any, KeyPath], Any]] = {
    "description": _description, "extends": _extends, "image": _image,
    "workdir": _workdir, "command": _command, "shell": _shell, "user": _user,
    "network": _network, "env": _env, "workspace": _workspace, "mounts": _mounts,
    "volumes": _volumes, "tmpfs": _tmpfs, "limits": _limits, "ports": _ports,
    "forward": _forward, "setup": _setup, "inputs": _inputs,
}
assert tuple(_VALIDATORS) == PROFILE_KEYS


def validate_profile(table: Any, path: KeyPath = ()) -> tuple[dict[str, Any], list[Problem]]:
    """Check one profile table (before `extends` is applied): (clean, problems).

    `path` is where the table sits in its file: () for NAME.toml, ("profiles", NAME)
    in sbx.toml; problems carry full key paths from there."""
    v = _V()
    if not isinstance(table, Mapping):
        v.expect(path, "a table of profile keys", table)
        return {}, v.problems
    v.keys(table, PROFILE_KEYS, path)
    clean: dict[str, Any] = {}
    for name, check in _VALIDATORS.items():
        if name in table:
            value = check(v, table[name], (*path, name))
            if value is not None:
                clean[name] = value
    return clean, v.problems


def validate_project(data: Mapping[str, Any]) -> list[Problem]:
    """The top level of sbx.toml: only `[profiles.NAME]` tables (profile keys at the
    top level belong in one of them)."""
    v = _V()
    for k in data:
        if k == "profiles":
            continue
        if k in PROFILE_KEYS:
            v.bad((k,), "profile keys go in a [profiles.NAME] table in sbx.toml")
        else:
            v.bad((k,), f"unknown key{did_you_mean(k, ['profiles'])}"
                  " (sbx.toml holds [profiles.NAME] tables)")
    profiles = data.get("profiles", {})
    if not isinstance(profiles, Mapping):
        v.expect(("profiles",), "a table of profiles ([profiles.NAME])", profiles)
        return v.problems
    for name, table in profiles.items():
        if not NAME_RE.fullmatch(name):
            v.bad(("profiles", name), "invalid profile name (letters, digits, '.', '_' and "
                  "'-', starting with a letter or digit, at most 64)")
        elif not isinstance(table, Mapping):
            v.expect(("profiles", name), "a table of profile keys", table)
    return v.problems


def check_complete(profile: Mapping[str, Any], path: KeyPath = ()) -> list[Problem]:
    """What a fully merged profile still lacks."""
    if "image" not in profile:
        return [Problem(path, 'no image: set `image = "REFERENCE"`, or `extends` a profile '
                        "that has one")]
    return []


# --- where a key was written -----------------------------------------------------------

_HEADER_RE = re.compile(r"\s*(\[\[?)\s*(.+?)\s*\]\]?\s*(?:#.*)?$")
_KEYLINE_RE = re.compile(r"\s*((?:[A-Za-z0-9_-]+|\"(?:[^\"\\]|\\.)*\"|'[^']*')"
                         r"(?:\s*\.\s*(?:[A-Za-z0-9_-]+|\"(?:[^\"\\]|\\.)*\"|'[^']*'))*)\s*=")
_KEYPART_RE = re.compile(r"[A-Za-z0-9_-]+|\"(?:[^\"\\]|\\.)*\"|'[^']*'")


def _split_key(text: str) -> list[str]:
    parts = []
    for m in _KEYPART_RE.finditer(text):
        p = m.group(0)
        if p.startswith('"'):
            import json

            try:
                p = json.loads(p)
            except ValueError:
                p = p[1:-1]
        elif p.startswith("'"):
            p = p[1:-1]
        parts.append(p)
    return parts


def _match_len(line_path: Sequence[str | int], target: KeyPath) -> int:
    """How much of `target` a line's key path covers: 0 unless one of the two is a
    prefix of the other (a table header below the target's key covers all of it)."""
    for a, b in zip(line_path, target, strict=False):
        if a != b:
            return 0
    return min(len(line_path), len(target))


def find_line(text: str, path: KeyPath) -> int | None:
    """The 1-based line where `path` (or its nearest written ancestor) is set."""
    best, best_len = None, 0
    table: list[str | int] = []
    counts: dict[tuple[str | int, ...], int] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        stripped = line.lstrip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("["):
            m = _HEADER_RE.match(line)
            if m is None:
                continue
            parts: list[str | int] = list(_split_key(m.group(2)))
            if m.group(1) == "[[":
                key_t = tuple(parts)
                counts[key_t] = counts.get(key_t, -1) + 1
                parts.append(counts[key_t])
            table = parts
            candidate: list[str | int] = table
        else:
            m = _KEYLINE_RE.match(line)
            if m is None:
                continue
            candidate = [*table, *_split_key(m.group(1))]
        n = _match_len(candidate, path)
        if n > best_len:
            best, best_len = lineno, n
    return best
