"""The k8s-file log format (podman's conmon): writing chunks, reading entries back,
tails, partial lines and timestamps."""

from __future__ import annotations

from pathlib import Path

from sandbox.containers import logs


def test_encode_whole_and_partial_lines() -> None:
    ns = 1_700_000_000_000_000_001
    out = logs.encode(b"stdout", b"one\ntwo\npart", ns)
    assert out.splitlines() == [
        b"2023-11-14T22:13:20.000000001+00:00 stdout F one",
        b"2023-11-14T22:13:20.000000001+00:00 stdout F two",
        b"2023-11-14T22:13:20.000000001+00:00 stdout P part",
    ]
    assert logs.encode(b"stderr", b"\n", ns) == b"2023-11-14T22:13:20.000000001+00:00 stderr F \n"
    assert logs.encode(b"stdout", b"", ns) == b""


def test_parse_podmans_lines() -> None:
    line = b"2026-11-27T20:51:49.088002699+00:00 stdout P part with  spaces"
    entry = logs.parse_line(line)
    assert entry is not None
    assert (entry.stream, entry.partial, entry.text) == (b"stdout", True, b"part with  spaces")
    assert entry.ns == logs.parse_log_time(b"2026-11-27T20:51:49.088002699Z")
    empty = logs.parse_line(b"2026-11-27T20:51:49.088002699+00:00 stdout F ")
    assert empty is not None and empty.text == b""
    assert logs.parse_line(b"not a log line") is None
    assert logs.parse_log_time(b"2024-01-01T01:00:00+01:00") == logs.parse_log_time(
        b"2024-01-01T00:00:00Z")


def test_writer_and_reader(tmp_path: Path) -> None:
    path = tmp_path / "ctr.log"
    w = logs.LogWriter(str(path))
    w.write(b"stdout", b"hello\nwor")
    w.write(b"stdout", b"ld\n")
    w.write(b"stderr", b"oops\n")
    w.close()
    entries, offset = logs.read_entries(str(path))
    assert offset == path.stat().st_size
    assert [(e.stream, e.partial, e.text) for e in entries] == [
        (b"stdout", False, b"hello"), (b"stdout", True, b"wor"), (b"stdout", False, b"ld"),
        (b"stderr", False, b"oops")]
    rendered = list(logs.render(entries, False, {}))
    assert b"".join(d for s, d in rendered if s == b"stdout") == b"hello\nworld\n"
    assert [d for s, d in rendered if s == b"stderr"] == [b"oops\n"]


def test_a_line_still_being_written_is_left_for_later(tmp_path: Path) -> None:
    path = tmp_path / "ctr.log"
    path.write_bytes(b"2024-01-01T00:00:00.000000000+00:00 stdout F a\n"
                     b"2024-01-01T00:00:00.000000000+00:00 std")
    entries, offset = logs.read_entries(str(path))
    assert [e.text for e in entries] == [b"a"]
    with path.open("ab") as f:
        f.write(b"out F b\n")
    more, _ = logs.read_entries(str(path), offset)
    assert [e.text for e in more] == [b"b"]


def test_tail_counts_logical_lines() -> None:
    ns = 1_700_000_000 * 10**9
    data = (logs.encode(b"stdout", b"1\n2\n", ns) + logs.encode(b"stdout", b"3a", ns)
            + logs.encode(b"stdout", b"3b\n", ns) + logs.encode(b"stderr", b"4\n", ns))
    entries = [logs.parse_line(ln) for ln in data.splitlines()]
    assert [e.text for e in logs.tail(entries, 2)] == [b"3a", b"3b", b"4"]
    assert logs.tail(entries, 0) == []
    assert len(logs.tail(entries, -1)) == 5


def test_timestamps_start_each_line_once() -> None:
    ns = 1_700_000_000 * 10**9
    data = logs.encode(b"stdout", b"a", ns) + logs.encode(b"stdout", b"b\nc\n", ns)
    entries = [logs.parse_line(ln) for ln in data.splitlines()]
    out = b"".join(d for _s, d in logs.render(entries, True, {}))
    assert out == (b"2023-11-14T22:13:20.000000000Z ab\n"
                   b"2023-11-14T22:13:20.000000000Z c\n")
