"""A small TOML writer: tomllib reads TOML but the standard library cannot write it.

Writes what profiles and sbx.lock hold: tables, arrays of tables, strings, integers,
floats, booleans and arrays of those (dates are never needed). What it writes reads
back with tomllib to the same data (tests/unit/test_profiles_toml.py checks that
with hypothesis). Layout follows TOML v1.0.0's examples: a table's own keys first,
then its sub-tables as `[a.b]` headers, then arrays of tables as `[[a.c]]`; arrays
of scalars and tables nested inside arrays are inline. Pure functions.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
# TOML v1.0.0 basic strings: escape ", \ and the control characters but tab.
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n",
            "\f": "\\f", "\r": "\\r"}


def quote_string(text: str) -> str:
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def key(name: str) -> str:
    """A key, bare when TOML allows it, else quoted."""
    return name if _BARE_KEY.fullmatch(name) else quote_string(name)


def dotted(path: Sequence[str]) -> str:
    return ".".join(key(p) for p in path)


def value(v: Any) -> str:
    """An inline value: scalar, array or inline table."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        text = repr(v)
        # repr gives "1e+20" for some floats: valid TOML; "1.0" keeps it a float.
        return text
    if isinstance(v, str):
        return quote_string(v)
    if isinstance(v, Mapping):
        if not v:
            return "{}"
        return "{ " + ", ".join(f"{key(k)} = {value(x)}" for k, x in v.items()) + " }"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(value(x) for x in v) + "]"
    raise TypeError(f"can't write {type(v).__name__} as TOML")


def _is_table_array(v: Any) -> bool:
    return isinstance(v, (list, tuple)) and bool(v) and all(isinstance(x, Mapping) for x in v)


def _write_table(lines: list[str], path: list[str], table: Mapping[str, Any],
                 header: str | None) -> None:
    simple = [(k, v) for k, v in table.items()
              if not isinstance(v, Mapping) and not _is_table_array(v)]
    tables = [(k, v) for k, v in table.items() if isinstance(v, Mapping)]
    arrays = [(k, v) for k, v in table.items() if _is_table_array(v)]
    # A header for a table with keys of its own, or one that would otherwise vanish
    # (an empty table); one that only holds sub-tables is made by their headers.
    if header is not None and (simple or not (tables or arrays) or header.startswith("[[")):
        if lines:
            lines.append("")
        lines.append(header)
    for k, v in simple:
        lines.append(f"{key(k)} = {value(v)}")
    for k, v in tables:
        sub = [*path, k]
        _write_table(lines, sub, v, f"[{dotted(sub)}]")
    for k, items in arrays:
        sub = [*path, k]
        for item in items:
            _write_table(lines, sub, item, f"[[{dotted(sub)}]]")


def dumps(data: Mapping[str, Any], comment: str | None = None) -> str:
    """`data` as a TOML document, after `comment` (each line prefixed with "# ")."""
    lines: list[str] = []
    if comment:
        lines += [f"# {c}".rstrip() for c in comment.splitlines()]
    _write_table(lines, [], data, None)
    return "\n".join(lines) + "\n"
