"""The pure parts of `sbx top`: descriptors, Go-style durations, terminal names, id
maps and podman's column layout."""

from __future__ import annotations

import pytest

from sandbox.containers import top


def test_descriptors_default_names_commas_and_aix_codes() -> None:
    assert top.parse_descriptors([]) == ["user", "pid", "ppid", "pcpu", "etime", "tty",
                                         "time", "args"]
    assert top.parse_descriptors(["pid,user", "args"]) == ["pid", "user", "args"]
    assert top.parse_descriptors(["%p", "%U", "%C", "%a"]) == ["pid", "user", "pcpu", "args"]
    with pytest.raises(top.UnknownDescriptor, match="unknown descriptor: -ef"):
        top.parse_descriptors(["-ef"])


@pytest.mark.parametrize(("ns", "text"), [
    (0, "0s"), (999, "999ns"), (1500, "1.5µs"), (10_000_000, "10ms"),
    (7_313_389_723, "7.313389723s"), (60 * 10**9, "1m0s"), (3_600 * 10**9, "1h0m0s"),
    (3_723_500_000_000, "1h2m3.5s"), (-2 * 10**9, "-2s"),
])
def test_go_duration(ns: int, text: str) -> None:
    assert top.go_duration(ns) == text


def test_tty_names() -> None:
    assert top.tty_name(0) == "?"
    assert top.tty_name((136 << 8) | 3) == "pts/3"
    assert top.tty_name((137 << 8) | 1) == "pts/257"
    assert top.tty_name((4 << 8) | 2) == "tty2"


def test_map_id_through_a_uid_map() -> None:
    rows = [(0, 1001, 1), (1, 200000, 65536)]
    assert top.map_id(1001, rows) == 0
    assert top.map_id(200999, rows) == 1000
    assert top.map_id(5, rows) is None


def test_table_is_podmans_layout() -> None:
    text = top.table(["USER", "PID", "ELAPSED", "COMMAND"],
                     [["root", "1", "7.313389723s", "sleep 1000"]])
    assert text == ("USER        PID         ELAPSED       COMMAND\n"
                    "root        1           7.313389723s  sleep 1000\n")
