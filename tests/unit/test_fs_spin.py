"""fs/spin.py: the adaptive busy-poll before each read of /dev/fuse, on a pipe."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from fs.options import UsageError, parse_args
from fs.spin import DEFAULT_SPIN_US, Spinner, find_fuse_fd

WINDOW_US = 20_000  # long enough to tell a spin from none on a loaded host


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    yield r, w
    os.close(r)
    os.close(w)


def timed(spinner: Spinner) -> float:
    t = time.monotonic()
    spinner.wait()
    return time.monotonic() - t


def test_a_waiting_request_is_read_at_once(pipe: tuple[int, int]) -> None:
    r, w = pipe
    s = Spinner(r, WINDOW_US)
    os.write(w, b"x")
    assert timed(s) < WINDOW_US / 1e6 / 2
    assert s.spins == 0


def test_spins_while_requests_come_densely_and_stops_after_a_pause(
        pipe: tuple[int, int]) -> None:
    r, _ = pipe
    s = Spinner(r, WINDOW_US)
    # Just after the previous wait (a dense stream): the window is spent polling.
    s.wait()  # the first one: nothing before it, no spin
    assert s.spins == 0
    assert timed(s) >= WINDOW_US / 1e6
    assert (s.spins, s.hits) == (1, 0)
    # That poll found nothing, and now a pause longer than two windows: no spin.
    time.sleep(3 * WINDOW_US / 1e6)
    assert timed(s) < WINDOW_US / 1e6 / 2
    assert s.spins == 1


def test_a_request_during_the_spin_ends_it(pipe: tuple[int, int]) -> None:
    r, w = pipe
    s = Spinner(r, 2_000_000)  # 2 s: only the request can end it in time
    s.wait()
    pid = os.fork()
    if pid == 0:
        time.sleep(0.05)
        os.write(w, b"x")
        os._exit(0)
    took = timed(s)
    os.waitpid(pid, 0)
    assert 0.04 < took < 1.5
    assert (s.spins, s.hits) == (1, 1)
    os.read(r, 1)
    # A poll that found a request keeps the next one spinning, pause or not.
    time.sleep(0.01)
    assert timed(Spinner(r, 0)) < 0.01  # spin=0: never


def test_stopping_ends_the_spin(pipe: tuple[int, int]) -> None:
    r, _ = pipe
    s = Spinner(r, 2_000_000)
    s.wait()
    t = time.monotonic()
    s.wait(lambda: time.monotonic() - t > 0.05)
    assert time.monotonic() - t < 1.5


def test_the_option() -> None:
    base = ["-o", "lowerdir=/l", "/m"]
    assert parse_args(base).spin_us == DEFAULT_SPIN_US
    assert parse_args(["-o", "spin=0", *base]).spin_us == 0
    assert parse_args(["-o", "spin=200", *base]).spin_us == 200
    for bad in ("-1", "x", "10001"):
        with pytest.raises(UsageError, match="spin"):
            parse_args(["-o", f"spin={bad}", *base])


def test_no_fuse_descriptor_here() -> None:
    assert find_fuse_fd() is None
