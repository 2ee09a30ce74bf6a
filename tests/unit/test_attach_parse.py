"""The pure parts of `sbx attach`: podman's --detach-keys syntax and the matcher that
holds back a possible detach sequence until it is clear."""

from __future__ import annotations

import pytest

from sandbox.containers.attach import DetachMatcher, parse_detach_keys
from sandbox.containers.store import ContainerError


@pytest.mark.parametrize(("text", "keys"), [
    ("ctrl-p,ctrl-q", b"\x10\x11"), ("ctrl-a", b"\x01"), ("CTRL-Z", b"\x1a"),
    ("ctrl-@", b"\x00"), ("ctrl-[,ctrl-\\,ctrl-],ctrl-^,ctrl-_", b"\x1b\x1c\x1d\x1e\x1f"),
    ("a,b", b"ab"), ("ctrl-x,e", b"\x18e"), ("", b""),
])
def test_detach_keys(text: str, keys: bytes) -> None:
    assert parse_detach_keys(text) == keys


@pytest.mark.parametrize("text", ["ctrl-1", "ctrl-", "ab", "ctrl-p,,ctrl-q", "é"])
def test_bad_detach_keys(text: str) -> None:
    with pytest.raises(ContainerError, match="invalid detach keys"):
        parse_detach_keys(text)


def test_matcher_detaches_on_the_sequence_and_passes_the_rest() -> None:
    m = DetachMatcher(b"\x10\x11")
    assert m.feed(b"ls\r") == (b"ls\r", False)
    assert m.feed(b"x\x10\x11y") == (b"x", True)


def test_matcher_across_reads_and_false_starts() -> None:
    m = DetachMatcher(b"\x10\x11")
    assert m.feed(b"a\x10") == (b"a", False)  # held: it may begin the sequence
    assert m.feed(b"b") == (b"\x10b", False)  # it did not
    assert m.feed(b"\x10") == (b"", False)
    assert m.feed(b"\x10") == (b"\x10", False)  # the first is let go, the second held
    assert m.feed(b"\x11") == (b"", True)


def test_matcher_disabled() -> None:
    assert DetachMatcher(b"").feed(b"\x10\x11") == (b"\x10\x11", False)
