"""Id-map math: default, keep-id and single-id maps; no namespaces needed."""

from sandbox.runtime.idmap import (
    Range,
    default_maps,
    format_map,
    keep_id_maps,
    map_size,
    single_maps,
    to_container,
)
from sandbox.runtime.spec import IdMapping


def test_default_map_puts_root_on_the_user_and_the_rest_on_the_range():
    maps = default_maps(1000, [Range(100000, 65536)])
    assert maps == [IdMapping(0, 1000, 1), IdMapping(1, 100000, 65536)]
    assert format_map(maps) == "0 1000 1\n1 100000 65536\n"


def test_default_map_spans_several_ranges_in_order():
    maps = default_maps(1000, [Range(100000, 10), Range(300000, 5)])
    assert maps == [IdMapping(0, 1000, 1), IdMapping(1, 100000, 10), IdMapping(11, 300000, 5)]
    assert map_size(maps) == 16


def test_keep_id_maps_the_user_to_itself_and_fills_around_it():
    maps = keep_id_maps(1000, [Range(100000, 65536)])
    assert maps == [
        IdMapping(0, 100000, 1000),
        IdMapping(1000, 1000, 1),
        IdMapping(1001, 101000, 64536),
    ]
    assert to_container(maps, 1000) == 1000
    assert to_container(maps, 100000) == 0
    assert to_container(maps, 101000) == 1001
    # Every container id below the end is mapped exactly once.
    covered = sorted(c for m in maps for c in range(m.container_id, m.container_id + m.size))
    assert covered == list(range(65537))


def test_keep_id_with_a_range_smaller_than_the_uid():
    maps = keep_id_maps(5000, [Range(100000, 100)])
    assert maps == [IdMapping(0, 100000, 100), IdMapping(5000, 5000, 1)]


def test_single_maps():
    assert single_maps(1000) == [IdMapping(0, 1000, 1)]
    assert single_maps(1000, keep_id=True) == [IdMapping(1000, 1000, 1)]


def test_to_container_of_an_unmapped_id_is_none():
    assert to_container(default_maps(1000, []), 4242) is None


def test_shift_presents_keep_id_disk_ids_as_the_image_built_them():
    from sandbox.runtime.idmap import shift

    ranges = [Range(100000, 65536)]
    stored = default_maps(1000, ranges)  # how the layers were unpacked
    seen = keep_id_maps(1000, ranges)  # how a keep-id container sees the disk
    segments = shift(stored, seen)
    # Image root (host 1000) is seen as 1000 under keep-id: present it as 0 again.
    assert IdMapping(0, 1000, 1) in segments
    # Image uid 1..1000 are host 100000..100999, seen as 0..999 under keep-id.
    assert IdMapping(1, 0, 1000) in segments
    # The rest stay where they are.
    assert IdMapping(1001, 1001, 64536) in segments
    assert map_size(segments) == 65537
