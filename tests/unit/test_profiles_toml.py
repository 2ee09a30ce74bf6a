"""The TOML writer: what it writes, tomllib reads back the same (sandbox/profiles/tomlwrite.py)."""

from __future__ import annotations

import math
import tomllib

from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox.profiles.tomlwrite import dumps, quote_string, value

keys = st.text(min_size=0, max_size=12)
scalars = st.one_of(
    st.text(max_size=30),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.booleans(),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(keys, children, max_size=4)),
    max_leaves=12,
)
documents = st.dictionaries(keys, values, max_size=6)


@settings(max_examples=300, deadline=None)
@given(documents)
def test_roundtrip(doc):
    assert tomllib.loads(dumps(doc)) == doc


def test_layout():
    doc = {"version": 1, "profiles": {"py": {"image": "python", "env": {"A": "1"},
                                             "mounts": [{"source": "/a", "target": "/b"}]}}}
    assert dumps(doc, comment="head\nline") == (
        '# head\n# line\nversion = 1\n\n[profiles.py]\nimage = "python"\n\n'
        '[profiles.py.env]\nA = "1"\n\n[[profiles.py.mounts]]\nsource = "/a"\ntarget = "/b"\n')


def test_strings_and_keys():
    assert quote_string('a"b\\c\n\t\x01\x7f') == '"a\\"b\\\\c\\n\\t\\u0001\\u007F"'
    assert dumps({"a b": 1, "ok-key_1": 2, "": 3}) == '"a b" = 1\nok-key_1 = 2\n"" = 3\n'


def test_special_floats():
    assert value(math.inf) == "inf" and value(-math.inf) == "-inf"
    assert math.isnan(tomllib.loads(f"x = {value(math.nan)}")["x"])


def test_empty_tables_survive():
    doc = {"a": {}, "b": {"c": {}}, "d": [{}], "e": []}
    assert tomllib.loads(dumps(doc)) == doc
