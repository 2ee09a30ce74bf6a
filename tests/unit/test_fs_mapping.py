"""fs/mapping.py: id translation and the override_stat format."""

from __future__ import annotations

import os
import stat

import pytest

from fs.mapping import (
    IdMap,
    IdRange,
    MappingError,
    Override,
    apply_override,
    format_override,
    parse_mapping,
    parse_override,
)


def test_parse_mapping_skips_empty_fields() -> None:
    assert parse_mapping(":0:1000:1:1:100000:65536") == [IdRange(0, 1000, 1),
                                                        IdRange(1, 100000, 65536)]
    for bad in ("", "0:1", "0:1:2:3", "a:b:c", "0:-1:1"):
        with pytest.raises(MappingError):
            parse_mapping(bad)


def test_present_and_store_are_inverse_within_the_ranges() -> None:
    m = IdMap(parse_mapping("0:1000:1:1:1:999"), overflow=65534)
    assert [m.present(i) for i in (0, 1, 5, 999, 1000, 3000)] == [1000, 1, 5, 999, 65534, 65534]
    assert [m.store(i) for i in (1000, 1, 5, 0, 2000)] == [0, 1, 5, 65534, 65534]
    assert all(m.store(m.present(i)) == i for i in range(0, 1000))


def test_identity_and_squash() -> None:
    ident = IdMap()
    assert ident.identity and ident.present(1234) == 1234 and ident.store(1234) == 1234
    sq = IdMap(squash=0)
    assert sq.squashed and sq.present(1234) == 0
    assert sq.store(5) == 5  # chown through a squashing mount stores what it is given


@pytest.mark.parametrize("value, expected", [
    (b"1000:1000:4755:file", Override(1000, 1000, 0o4755, stat.S_IFREG)),
    (b"0:0:0755:dir", Override(0, 0, 0o755, stat.S_IFDIR)),
    (b"0:0:755", Override(0, 0, 0o755)),
    (b"0:0:0666:char-1-3", Override(0, 0, 0o666, stat.S_IFCHR, os.makedev(1, 3))),
    (b"1:2:0640:block-8-1", Override(1, 2, 0o640, stat.S_IFBLK, os.makedev(8, 1))),
    (b"5:5:0777:symlink", Override(5, 5, 0o777, stat.S_IFLNK)),
    (b"0:0:100644", Override(0, 0, 0o644, stat.S_IFREG)),
    (b"0:0", None), (b"x:0:0755", None), (b"0:0:0755:frob", None), (b"\xff", None),
    (b"0:0:0755:char-x-1", None),
])
def test_parse_override(value: bytes, expected: Override | None) -> None:
    assert parse_override(value) == expected


def test_format_override_is_containers_storages() -> None:
    assert format_override(1000, 1000, stat.S_IFREG | 0o4755) == b"1000:1000:4755:file"
    assert format_override(0, 0, stat.S_IFDIR | 0o755) == b"0:0:0755:dir"
    assert format_override(0, 0, stat.S_IFCHR | 0o666, os.makedev(1, 3)) == b"0:0:0666:char-1-3"
    for mode, rdev in ((stat.S_IFIFO | 0o600, 0), (stat.S_IFBLK | 0o660, os.makedev(8, 2))):
        ov = parse_override(format_override(1, 2, mode, rdev))
        assert ov is not None
        assert apply_override(ov, stat.S_IFREG | 0o600, 0) == (mode, rdev)


def test_apply_override_changes_the_type_of_plain_files_only() -> None:
    dev = Override(0, 0, 0o666, stat.S_IFCHR, os.makedev(1, 3))
    assert apply_override(dev, stat.S_IFREG | 0o600, 0) == (stat.S_IFCHR | 0o666,
                                                            os.makedev(1, 3))
    assert apply_override(dev, stat.S_IFDIR | 0o700, 0) == (stat.S_IFDIR | 0o666, 0)
    plain = Override(0, 0, 0o4755)
    assert apply_override(plain, stat.S_IFREG | 0o600, 0) == (stat.S_IFREG | 0o4755, 0)
