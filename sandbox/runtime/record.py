"""`Record`: the base of the plain data classes on the `sbx run` path.

They are what dataclasses would generate (slots, equality, repr), written once here:
each dataclass costs ~0.3 ms to create at import, and `sbx run` pays every import on
every start (bench/startup; docs/benchmarks.md has the numbers).
"""

from __future__ import annotations

from typing import Any


class Record:
    """A mutable record: subclasses list their fields in `__slots__` and write their
    own `__init__`; equality, repr and `as_dict` come from the slots."""

    __slots__: tuple[str, ...] = ()

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and all(
            getattr(self, n) == getattr(other, n) for n in self.__slots__
        )

    def __repr__(self) -> str:
        fields = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__)
        return f"{type(self).__name__}({fields})"

    def as_dict(self) -> dict[str, Any]:
        return {n: getattr(self, n) for n in self.__slots__}
