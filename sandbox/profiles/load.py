"""Finding profiles by name, reading their TOML, and applying `extends`.

Discovery, first match wins (docs/profiles.md, "Where profiles come from"):

  rank 0  ./sbx.toml            the project's file: one `[profiles.NAME]` table each
  rank 1  ./.sbx/NAME.toml      one profile per file, keys at the top level
  rank 2  $XDG_CONFIG_HOME/sbx/profiles/NAME.toml   the user's own (paths.profiles_dir)
  rank 3  bundled               sandbox/profiles/bundled/NAME.toml, shipped with sbx

"./" is the directory sbx runs in: like docker compose's compose.yaml and cargo's
Cargo.toml it is the project's file, and it is not looked for in parent directories
(a profile never changes because of a file somewhere above the project).

A path ending in `.toml` names a file instead: a single profile (keys at the top
level; its name is the file's stem), or an sbx.toml-style file holding exactly one
`[profiles.NAME]` table.

`extends = "NAME"` is looked up the same way, with one twist borrowed from shell
functions that wrap the command they shadow: a profile that extends its *own*
name continues the search *after* the place it was found, so ./sbx.toml can say
`[profiles.python] extends = "python"` to refine the bundled python. `extends`
ending in `.toml` is a path relative to the extending file's directory.

TOML syntax errors name FILE:LINE:COL, taken from tomllib's message; schema problems
name FILE:LINE and the key path (schema.find_line). This module reads files; the
checking itself is schema.py's and the merging merge.py's.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from sandbox.profiles.errors import ProfileError, ProfileNotFound

if TYPE_CHECKING:
    from sandbox.profiles.model import Profile
    from sandbox.profiles.schema import Problem

PROJECT_FILE = "sbx.toml"
PROJECT_DIR = ".sbx"
BUNDLED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bundled")
# An extends chain longer than this is surely a mistake (and bounds the recursion).
MAX_DEPTH = 16

RANK_PROJECT, RANK_PROJECT_DIR, RANK_USER, RANK_BUNDLED, RANK_FILE = 0, 1, 2, 3, -1
ORIGINS = {RANK_PROJECT: "project", RANK_PROJECT_DIR: "project", RANK_USER: "user",
           RANK_BUNDLED: "bundled", RANK_FILE: "file"}

_TOML_POS = r"\s*\((?:at line (\d+), column (\d+)|at end of document)\)$"
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def _is_bare_name(text: str) -> bool:
    """What `sbx run X` can take for a profile name: a bare word (schema.NAME_RE,
    checked without a regex, which `sbx run IMAGE` would pay ~0.1 ms to compile).
    Anything with a tag, digest, registry or path separator is an image reference."""
    return (0 < len(text) <= 64 and text[0] not in "._-" and _NAME_CHARS.issuperset(text)
            and not text.endswith(".toml"))


class Found:
    """A profile table as written in one file, before `extends` is applied."""

    __slots__ = ("file", "name", "rank", "raw", "table_path")

    def __init__(self, name: str, file: str, table_path: tuple[str, ...], rank: int,
                 raw: Any) -> None:
        self.name = name
        self.file = file
        self.table_path = table_path
        self.rank = rank
        self.raw = raw

    @property
    def ident(self) -> tuple[str, tuple[str, ...]]:
        return (os.path.realpath(self.file), self.table_path)

    @property
    def origin(self) -> str:
        return ORIGINS[self.rank]

    def where(self, display: str) -> str:
        return f"{display} [{'.'.join(self.table_path)}]" if self.table_path else display

    def __repr__(self) -> str:
        return f"Found({self.name!r}, {self.file!r}, {self.table_path!r}, rank={self.rank})"


class Listed:
    """One entry of `Search.all()`: a profile table found, or the error of a file."""

    __slots__ = ("error", "file", "found", "name", "rank", "shadowed")

    def __init__(self, name: str, rank: int, file: str, shadowed: bool,
                 found: Found | None = None, error: ProfileError | None = None) -> None:
        self.name = name
        self.rank = rank
        self.file = file
        self.shadowed = shadowed
        self.found = found
        self.error = error

    @property
    def origin(self) -> str:
        return ORIGINS[self.rank]


class Checked:
    """One result of `Search.check()`: the loaded profile, or its error."""

    __slots__ = ("error", "file", "name", "profile")

    def __init__(self, name: str, file: str | None, profile: Profile | None,
                 error: ProfileError | None) -> None:
        self.name = name
        self.file = file
        self.profile = profile
        self.error = error


class Search:
    """Profile discovery from one project directory. Parsed files are cached for
    the life of the object (one command)."""

    def __init__(self, cwd: str | None = None, user_dir: str | None = None,
                 bundled_dir: str | None = None) -> None:
        self.cwd = os.path.abspath(cwd or os.getcwd())
        if user_dir is None:
            from sandbox import paths

            user_dir = paths.profiles_dir()
        self.user_dir = user_dir
        self.bundled_dir = bundled_dir or BUNDLED_DIR
        self._texts: dict[str, str] = {}
        self._data: dict[str, dict[str, Any]] = {}

    # -- files --------------------------------------------------------------------

    @property
    def project_file(self) -> str:
        return os.path.join(self.cwd, PROJECT_FILE)

    @property
    def project_dir(self) -> str:
        return os.path.join(self.cwd, PROJECT_DIR)

    def display(self, path: str) -> str:
        """A file as messages show it: relative inside the project, else absolute."""
        rel = os.path.relpath(path, self.cwd)
        return path if rel == ".." or rel.startswith("../") else rel

    def text(self, path: str) -> str:
        if path not in self._texts:
            try:
                with open(path, "rb") as f:
                    raw = f.read()
            except OSError as exc:
                raise ProfileError(f"{self.display(path)}: can't read: {exc.strerror}") from None
            try:
                self._texts[path] = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                line = raw[:exc.start].count(b"\n") + 1
                raise ProfileError(f"{self.display(path)}:{line}: not UTF-8 text "
                                   "(TOML files are UTF-8)") from None
        return self._texts[path]

    def read(self, path: str) -> dict[str, Any]:
        """The parsed TOML of `path`; a syntax error becomes FILE:LINE:COL: message."""
        if path not in self._data:
            self._data[path] = parse_toml(self.text(path), self.display(path))
        return self._data[path]

    def problem_lines(self, path: str, problems: list[Problem]) -> list[str]:
        from sandbox.profiles.schema import find_line

        text = self.text(path)
        located = [(find_line(text, p.path), p) for p in problems]
        # In file order, as a compiler lists them; a problem with no line first.
        located.sort(key=lambda lp: lp[0] or 0)
        out = []
        for line, p in located:
            where = f"{self.display(path)}:{line}" if line else self.display(path)
            out.append(f"{where}: {p.text()}")
        return out

    def _project_data(self) -> dict[str, Any] | None:
        """./sbx.toml, parsed and its top level checked; None when there is none."""
        path = self.project_file
        if not os.path.isfile(path):
            return None
        data = self.read(path)
        from sandbox.profiles.schema import validate_project

        problems = validate_project(data)
        if problems:
            raise ProfileError(self.problem_lines(path, problems))
        return data

    # -- discovery ----------------------------------------------------------------

    def looked(self, name: str) -> list[str]:
        """Where a name was looked for, as a not-found message lists it."""
        return [f"{self.display(self.project_file)} [profiles.{name}]",
                self.display(os.path.join(self.project_dir, name + ".toml")),
                os.path.join(self.user_dir, name + ".toml"),
                "the bundled profiles"]

    def _at_rank(self, name: str, rank: int) -> Found | None:
        if rank == RANK_PROJECT:
            data = self._project_data()
            if data is not None:
                profiles = data.get("profiles", {})
                if name in profiles:
                    return Found(name, self.project_file, ("profiles", name), rank,
                                 profiles[name])
            return None
        base = {RANK_PROJECT_DIR: self.project_dir, RANK_USER: self.user_dir,
                RANK_BUNDLED: self.bundled_dir}[rank]
        path = os.path.join(base, name + ".toml")
        if not os.path.isfile(path):
            return None
        return Found(name, path, (), rank, self.read(path))

    def find(self, name: str, start: int = 0,
             skip: tuple[str, tuple[str, ...]] | None = None) -> Found | None:
        """The first profile called `name` from rank `start` on (skipping `skip`)."""
        if not _is_bare_name(name):
            return None
        for rank in range(start, RANK_BUNDLED + 1):
            found = self._at_rank(name, rank)
            if found is not None and found.ident != skip:
                return found
        return None

    def exists(self, name: str, bundled: bool = True) -> bool:
        """Whether discovery finds `name`, cheaply: ./sbx.toml is parsed only when
        it exists, and the NAME.toml files are only stat()ed (a broken one still
        names a profile, so that the run reports its error instead of silently
        running an image). So does a broken sbx.toml whose text has a
        [profiles.NAME] header."""
        if not _is_bare_name(name):
            return False
        try:
            data = self._project_data()
        except ProfileError:
            text = self._texts.get(self.project_file, "")
            header = re.compile(r"^\s*\[\s*profiles\s*\.\s*[\"']?" + re.escape(name)
                                + r"[\"']?\s*[\].]", re.MULTILINE)
            if header.search(text):
                return True
        else:
            if data is not None and name in data.get("profiles", {}):
                return True
        dirs = [self.project_dir, self.user_dir] + ([self.bundled_dir] if bundled else [])
        return any(os.path.isfile(os.path.join(d, name + ".toml")) for d in dirs)

    def from_file(self, path: str) -> Found:
        """The profile in a .toml file named by path (see the module docstring)."""
        full = os.path.abspath(os.path.join(self.cwd, os.path.expanduser(path)))
        if not os.path.isfile(full):
            raise ProfileError(f"{path}: no such profile file",
                               hint="a path ending in .toml names a profile file")
        data = self.read(full)
        stem = os.path.basename(full)[:-len(".toml")] if full.endswith(".toml") else full
        if os.path.basename(full) == PROJECT_FILE or "profiles" in data:
            from sandbox.profiles.schema import validate_project

            problems = validate_project(data)
            if problems:
                raise ProfileError(self.problem_lines(full, problems))
            names = list(data.get("profiles", {}))
            if len(names) != 1:
                raise ProfileError(
                    f"{self.display(full)} holds {len(names)} profiles "
                    f"({', '.join(names) or 'none'}): a path must name a file with one",
                    hint=f"run `sbx run NAME` in {os.path.dirname(full)}, or move the "
                    "profile to a NAME.toml file of its own")
            name = names[0]
            return Found(name, full, ("profiles", name), RANK_FILE, data["profiles"][name])
        return Found(stem, full, (), RANK_FILE, data)

    def resolve(self, ref: str) -> Found:
        """The profile `ref` names: a path ending in .toml, or a name to discover."""
        if ref.endswith(".toml"):
            return self.from_file(ref)
        if not _is_bare_name(ref):
            raise ProfileError(f"invalid profile name {ref!r}",
                               hint="a profile name is letters, digits, '.', '_' and '-'")
        found = self.find(ref)
        if found is None:
            raise ProfileNotFound(ref, self.looked(ref))
        return found

    def all(self) -> Iterator[Listed]:
        """Every profile discovery can see, in rank order and by name within a
        rank, each marked when a higher rank shadows it. A file that can't be read
        or parsed is listed with its error instead of stopping the listing."""
        seen: set[str] = set()
        ranks: list[tuple[int, str, list[str]]] = []
        try:
            data = self._project_data()
            ranks.append((RANK_PROJECT, self.project_file,
                          sorted((data or {}).get("profiles", {}))))
        except ProfileError as err:
            yield Listed(PROJECT_FILE, RANK_PROJECT, self.project_file, False, error=err)
        for rank, base in ((RANK_PROJECT_DIR, self.project_dir), (RANK_USER, self.user_dir),
                           (RANK_BUNDLED, self.bundled_dir)):
            try:
                entries = sorted(os.listdir(base))
            except OSError:
                entries = []
            names = [e[:-len(".toml")] for e in entries
                     if e.endswith(".toml") and _is_bare_name(e[:-len(".toml")])
                     and os.path.isfile(os.path.join(base, e))]
            ranks.append((rank, base, names))
        for rank, base, names in ranks:
            for name in names:
                path = base if rank == RANK_PROJECT else os.path.join(base, name + ".toml")
                try:
                    found = self._at_rank(name, rank)
                except ProfileError as err:
                    yield Listed(name, rank, path, name in seen, error=err)
                else:
                    if found is not None:
                        yield Listed(name, rank, path, name in seen, found=found)
                seen.add(name)

    def check(self, refs: list[str]) -> list[Checked]:
        """Load each of `refs` (names or .toml files; a file of several profiles
        stands for each of them) and report what is wrong, never stopping at the
        first. With no refs: every profile of the project and of the user."""
        targets: list[tuple[str, Found | None, ProfileError | None]] = []
        if not refs:
            for item in self.all():
                if item.rank in (RANK_PROJECT, RANK_PROJECT_DIR, RANK_USER):
                    targets.append((item.name, item.found, item.error))
        for ref in refs:
            try:
                if ref.endswith(".toml"):
                    full = os.path.abspath(os.path.join(self.cwd, os.path.expanduser(ref)))
                    data = self.read(full) if os.path.isfile(full) else None
                    if data is not None and (os.path.basename(full) == PROJECT_FILE
                                             or "profiles" in data):
                        from sandbox.profiles.schema import validate_project

                        problems = validate_project(data)
                        if problems:
                            raise ProfileError(self.problem_lines(full, problems))
                        for name, table in data.get("profiles", {}).items():
                            targets.append((name, Found(name, full, ("profiles", name),
                                                        RANK_FILE, table), None))
                        continue
                one = self.resolve(ref)
                targets.append((one.name, one, None))
            except ProfileError as err:
                targets.append((ref, None, err))
        out = []
        for name, target, error in targets:
            if target is not None and error is None:
                try:
                    out.append(Checked(name, target.file, self.load_found(target), None))
                except ProfileError as err:
                    out.append(Checked(name, target.file, None, err))
            else:
                out.append(Checked(name, target.file if target else None, None, error))
        return out

    # -- extends ------------------------------------------------------------------

    def validate(self, found: Found) -> dict[str, Any]:
        """One table's clean form; ProfileError listing every problem in it."""
        from sandbox.profiles.schema import validate_profile

        clean, problems = validate_profile(found.raw, found.table_path)
        if problems:
            raise ProfileError(self.problem_lines(found.file, problems))
        return clean

    def _parent(self, found: Found, ext: str) -> Found | None:
        if ext.endswith(".toml"):
            base = os.path.dirname(found.file)
            return self.from_file(os.path.join(base, os.path.expanduser(ext)))
        if ext == found.name and found.rank != RANK_FILE:
            return self.find(ext, found.rank + 1)
        return self.find(ext, 0, skip=found.ident)

    def chain(self, found: Found) -> list[tuple[Found, dict[str, Any]]]:
        """`found` and the profiles it extends, child first, each validated."""
        out: list[tuple[Found, dict[str, Any]]] = []
        current = found
        while True:
            clean = self.validate(current)
            if any(current.ident == f.ident for f, _ in out):
                names = " -> ".join(f"{f.name} ({self.display(f.file)})"
                                    for f, _ in [*out, (current, clean)])
                raise ProfileError(f"extends cycle: {names}",
                                   hint="a profile can't extend itself, directly or not")
            out.append((current, clean))
            ext = clean.get("extends")
            if ext is None:
                return out
            if len(out) > MAX_DEPTH:
                names = " -> ".join(f.name for f, _ in out)
                raise ProfileError(f"extends chain longer than {MAX_DEPTH}: {names} -> ...")
            parent = self._parent(current, ext)
            if parent is None:
                from sandbox.profiles.schema import Problem

                problem = Problem((*current.table_path, "extends"),
                                  f"no profile named {ext!r} (looked in "
                                  f"{', '.join(self.looked(ext))})")
                if ext == current.name:
                    problem.message += "; a profile that extends its own name continues " \
                        "the search after its own place"
                raise ProfileError(self.problem_lines(current.file, [problem]),
                                   hint="`sbx profile list` shows the profiles there are")
            current = parent

    def load_found(self, found: Found) -> Profile:
        """The fully merged, checked Profile for one found table."""
        from sandbox.profiles.merge import merge
        from sandbox.profiles.model import Profile
        from sandbox.profiles.schema import check_complete

        links = self.chain(found)
        data: dict[str, Any] = {}
        for _f, clean in reversed(links):
            data = merge(data, clean)
        problems = check_complete(data, found.table_path)
        if problems:
            raise ProfileError(self.problem_lines(found.file, problems))
        return Profile(found.name, data, [f.file for f, _ in links], found.origin,
                       [f.name for f, _ in links])

    def load(self, ref: str) -> Profile:
        return self.load_found(self.resolve(ref))


def parse_toml(text: str, display: str) -> dict[str, Any]:
    """tomllib.loads, with a syntax error re-raised as "FILE:LINE:COL: message"."""
    import tomllib

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        m = re.search(_TOML_POS, message)
        if m is None:
            raise ProfileError(f"{display}: {message}") from None
        if m.group(1):
            line, col = int(m.group(1)), int(m.group(2))
        else:  # "at end of document": the position just after the last character
            lines = text.split("\n")
            line, col = len(lines), len(lines[-1]) + 1
        raise ProfileError(f"{display}:{line}:{col}: {message[:m.start()]}",
                           hint="TOML syntax: https://toml.io/en/v1.0.0") from None


# --- the lead's entry points ------------------------------------------------------------


def load_profile(ref: str, cwd: str | None = None) -> Profile:
    """The Profile that `ref` (a name or a .toml path) names, seen from `cwd`."""
    return Search(cwd).load(ref)


def is_profile_reference(text: str, cwd: str | None = None, *, bundled: bool = True) -> bool:
    """Whether `sbx run TEXT` means a profile rather than an image.

    The rule (docs/profiles.md, "Profile or image?"): a path ending in .toml is a
    profile file; a bare name (no ':', '/' or '@') that discovery finds is that
    profile, the bundled ones included; anything else is an image. So `sbx run
    python` enters the bundled python profile (DESIGN.md's first sentence), and
    `sbx run python:3.12`, `sbx run docker.io/library/python` or `sbx run
    python:latest` run the image as docker would. `bundled=False` leaves bundled
    names to images."""
    return profile_search(text, cwd, bundled=bundled) is not None


def profile_search(text: str, cwd: str | None = None, *, bundled: bool = True
                   ) -> Search | None:
    """is_profile_reference, returning the Search that decided (with the files it
    parsed), for the caller to load the profile from without parsing them again."""
    search = Search(cwd)
    if text.endswith(".toml") or search.exists(text, bundled=bundled):
        return search
    return None

