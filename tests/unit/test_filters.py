"""sandbox/filters.py: podman's --filter grammar, shared by ps and volume ls/prune."""

from __future__ import annotations

import pytest

from sandbox import filters
from sandbox.errors import UsageError


def test_parse_and_combine() -> None:
    f = filters.parse(["name=^a", "name=b$", "label=x=1"], ("name", "label"))
    assert f == {"name": ["^a", "b$"], "label": ["x=1"]}
    seen = {("name", "^a"): False, ("name", "b$"): True, ("label", "x=1"): True}
    assert filters.matches(f, lambda k, v: seen[(k, v)])  # same key ORed
    seen[("label", "x=1")] = False
    assert not filters.matches(f, lambda k, v: seen[(k, v)])  # keys ANDed
    assert filters.label_matches({"x": "1"}, "x") and filters.label_matches({"x": "1"}, "x=1")
    assert not filters.label_matches({"x": "1"}, "x=2")


@pytest.mark.parametrize(("item", "message"), [
    ("color=red", "invalid volume filter 'color=red'"),
    ("nokey", "invalid volume filter 'nokey'"),
    ("name=(", "invalid name filter '('"),
    ("dangling=maybe", "invalid dangling filter 'maybe'"),
])
def test_bad_items_name_themselves(item: str, message: str) -> None:
    with pytest.raises(UsageError, match=message.replace("(", r"\(")):
        filters.parse([item], ("name", "dangling"), what="volume filter",
                      values={"dangling": ("true", "false")})
