"""Container records (sandbox/containers/store.py): create, names, lookup, state,
rename, remove, and what a dead monitor or a reboot looks like, in a temporary
XDG_DATA_HOME (no containers run here)."""

from __future__ import annotations

import json
import multiprocessing
import os
import threading
from pathlib import Path

import pytest

from sandbox import paths
from sandbox.containers import procfs
from sandbox.containers.rmtree import remove_tree
from sandbox.containers.store import (
    CREATED,
    EXITED,
    RUNNING,
    UNKNOWN_EXIT,
    AmbiguousContainer,
    ContainerError,
    ContainerStore,
    NameInUse,
    NoSuchContainer,
    effective_state,
    format_time,
    initial_state,
    new_id,
    parse_time,
)


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ContainerStore:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    (tmp_path / "run").mkdir(mode=0o700)
    return ContainerStore()


def _make(store: ContainerStore, name: str | None = None, **config: object):
    return store.create(new_id(), {"created": format_time(os.urandom(1)[0] + 10**18),
                                   **config}, name)


def test_create_writes_config_and_state(store: ContainerStore) -> None:
    c = _make(store, "web", image="busybox")
    assert len(c.id) == 64 and c.name == "web" and c.status == CREATED
    on_disk = json.loads(Path(paths.container_config_file(c.id)).read_text())
    assert on_disk["name"] == "web" and on_disk["id"] == c.id
    assert json.loads(Path(paths.container_state_file(c.id)).read_text())["status"] == CREATED
    assert os.readlink(paths.container_name_link("web")) == c.id
    assert store.load(c.id).config["image"] == "busybox"
    assert store.leftovers() == []


def test_generated_names_are_docker_style_and_distinct(store: ContainerStore) -> None:
    names = {_make(store).name for _ in range(30)}
    assert len(names) == 30
    for name in names:
        adjective, _, surname = name.partition("_")
        assert adjective and surname and name != "boring_wozniak"


def test_a_name_in_use_is_refused_and_nothing_is_left(store: ContainerStore) -> None:
    first = _make(store, "x")
    with pytest.raises(NameInUse) as info:
        _make(store, "x")
    assert first.id[:12] in info.value.message and info.value.hint
    assert [c.id for c in store.list()] == [first.id]
    assert store.leftovers() == []


def test_invalid_names_are_refused(store: ContainerStore) -> None:
    for bad in ("", "../x", "-x", "a b", "a/b"):
        with pytest.raises(ContainerError):
            _make(store, bad)
    assert store.list() == []


def test_a_stale_name_link_is_taken_over(store: ContainerStore) -> None:
    os.makedirs(paths.container_names_dir(), exist_ok=True)
    os.symlink("f" * 64, paths.container_name_link("old"))  # its container is gone
    c = _make(store, "old")
    assert os.readlink(paths.container_name_link("old")) == c.id


def _race(data: str, run: str, name: str, out: multiprocessing.Queue) -> None:
    os.environ["XDG_DATA_HOME"] = data
    os.environ["XDG_RUNTIME_DIR"] = run
    try:
        c = ContainerStore().create(new_id(), {"created": "x"}, name)
        out.put(("ok", c.id))
    except NameInUse as exc:
        out.put(("in use", exc.owner))


def test_racing_creates_of_one_name_exactly_one_wins(store: ContainerStore) -> None:
    ctx = multiprocessing.get_context("fork")
    out: multiprocessing.Queue = ctx.Queue()
    data, run = os.environ["XDG_DATA_HOME"], os.environ["XDG_RUNTIME_DIR"]
    procs = [ctx.Process(target=_race, args=(data, run, "same", out)) for _ in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    results = [out.get(timeout=5) for _ in procs]
    winners = [cid for kind, cid in results if kind == "ok"]
    assert len(winners) == 1
    assert all(owner == winners[0] for kind, owner in results if kind == "in use")
    assert [c.id for c in store.list()] == winners


def test_lookup_by_id_name_and_unique_prefix(store: ContainerStore) -> None:
    a = store.create("ab" + "0" * 62, {"created": "1"}, "alpha")
    b = store.create("ac" + "0" * 62, {"created": "2"}, "beta")
    assert store.lookup(a.id).id == a.id
    assert store.lookup("beta").id == b.id
    assert store.lookup("ab").id == a.id
    with pytest.raises(AmbiguousContainer):
        store.lookup("a")
    with pytest.raises(NoSuchContainer) as info:
        store.lookup("nothing")
    assert info.value.hint
    # A name that looks like an id prefix: the name wins, as docker's lookup order.
    named = store.create("cd" + "0" * 62, {"created": "3"}, "ab0")
    assert store.lookup("ab0").id == named.id


def test_list_is_oldest_first_and_skips_unreadable_records(store: ContainerStore) -> None:
    late = store.create(new_id(), {"created": "2024-01-02T00:00:00.000000000Z"}, "late")
    early = store.create(new_id(), {"created": "2024-01-01T00:00:00.000000000Z"}, "early")
    broken = new_id()
    os.makedirs(paths.container_dir(broken))
    Path(paths.container_config_file(broken)).write_text("{half")
    assert [c.id for c in store.list()] == [early.id, late.id]


def test_state_updates_are_whole_files(store: ContainerStore) -> None:
    c = _make(store)
    with store.lock(c.id):
        store.update_state(c.id, exit_code=3, status=EXITED)
    state = store.load(c.id).state
    assert (state["status"], state["exit_code"]) == (EXITED, 3)
    record = Path(paths.container_dir(c.id))
    assert not [p for p in record.iterdir() if ".tmp-" in p.name]


def test_readers_never_see_a_half_written_state(store: ContainerStore) -> None:
    c = _make(store)
    stop = threading.Event()
    bad: list[str] = []

    def read() -> None:
        while not stop.is_set():
            text = Path(paths.container_state_file(c.id)).read_text()
            try:
                json.loads(text)
            except ValueError:
                bad.append(text)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(300):
            store.update_state(c.id, durable=False, error="x" * (i * 37 % 5000))
    finally:
        stop.set()
        reader.join()
    assert bad == []


def test_a_running_record_whose_monitor_is_gone_reads_as_exited_unknown() -> None:
    state = {**initial_state(), "status": RUNNING, "pid": 123, "monitor_pid": 2**22 + 7,
             "monitor_start": 1, "boot_id": procfs.boot_id()}
    seen = effective_state(state)
    assert seen["status"] == EXITED and seen["exit_code"] == UNKNOWN_EXIT
    assert "monitor" in seen["error"] and seen["pid"] == 0


def test_a_running_record_from_another_boot_reads_as_exited() -> None:
    me = os.getpid()
    state = {**initial_state(), "status": RUNNING, "monitor_pid": me,
             "monitor_start": procfs.start_time(me), "boot_id": "another-boot"}
    assert effective_state(state)["status"] == EXITED
    state["boot_id"] = procfs.boot_id()
    assert effective_state(state)["status"] == RUNNING  # this process: alive


def test_a_recorded_exit_code_is_kept_when_the_monitor_is_gone() -> None:
    state = {**initial_state(), "status": RUNNING, "exit_code": 7, "monitor_pid": 0}
    assert effective_state(state)["exit_code"] == 7


def test_rename(store: ContainerStore) -> None:
    c = _make(store, "one")
    _make(store, "taken")
    with pytest.raises(NameInUse):
        store.rename(c, "taken")
    store.rename(c, "two")
    assert store.lookup("two").id == c.id
    with pytest.raises(NoSuchContainer):
        store.lookup("one")
    assert store.load(c.id).name == "two"


def test_remove_takes_the_record_and_frees_the_name(store: ContainerStore) -> None:
    c = _make(store, "gone")
    os.makedirs(os.path.join(paths.container_layer_dir(c.id), "upper", "a"))
    store.remove(c, remove_tree)
    assert store.load(c.id) is None and store.list() == []
    assert not os.path.lexists(paths.container_name_link("gone"))
    assert store.leftovers() == []
    with pytest.raises(NoSuchContainer):
        store.remove(c, remove_tree)
    assert _make(store, "gone").name == "gone"


def test_lock_of_a_removed_container_is_no_such_container(store: ContainerStore) -> None:
    c = _make(store)
    store.remove(c, remove_tree)
    with pytest.raises(NoSuchContainer), store.lock(c.id):
        pass


def test_leftovers_and_stale_names_are_found(store: ContainerStore) -> None:
    c = _make(store, "kept")
    os.makedirs(paths.container_trash_dir(new_id()))
    os.makedirs(paths.container_tmp_dir(new_id()))
    os.symlink("e" * 64, paths.container_name_link("stale"))
    assert len(store.leftovers()) == 2
    assert store.stale_names() == ["stale"]
    assert store.lookup("kept").id == c.id


def test_times_round_trip() -> None:
    ns = 1_700_000_000_123_456_789
    text = format_time(ns)
    assert text == "2023-11-14T22:13:20.123456789Z"
    assert parse_time(text) == ns
    assert parse_time("2023-11-14T22:13:20Z") == 1_700_000_000 * 10**9
    assert parse_time("") is None and parse_time("garbage") is None


def test_clean_leftovers_spares_a_removal_in_progress(store: ContainerStore) -> None:
    from sandbox.containers.store import Lock

    _make(store, "kept")
    stale_tmp = paths.container_tmp_dir(new_id())
    os.makedirs(stale_tmp)
    Path(stale_tmp, "config.json").write_text("{}")
    stale_trash = paths.container_trash_dir(new_id())
    os.makedirs(os.path.join(stale_trash, "layer", "upper"))
    Path(stale_trash, "lock").write_text("")
    busy_trash = paths.container_trash_dir(new_id())
    os.makedirs(busy_trash)
    os.symlink("e" * 64, paths.container_name_link("stale"))
    with Lock(os.path.join(busy_trash, "lock")):  # its remover is still at work
        removed = store.clean_leftovers(remove_tree)
    assert sorted(removed) == sorted([stale_tmp, stale_trash])
    assert store.leftovers() == [busy_trash]
    assert store.stale_names() == []
    assert store.lookup("kept").name == "kept"


def test_clean_leftovers_sweeps_runtime_dirs_of_containers_that_never_were(
    store: ContainerStore,
) -> None:
    from sandbox.containers.store import Lock

    real = _make(store, "real")
    ghost, busy = new_id(), new_id()
    for cid in (real.id, ghost, busy):
        os.makedirs(paths.container_run_dir(cid))
        Path(paths.container_run_dir(cid), "hosts").write_text("x")
    with Lock(paths.container_creating_lock(busy)):  # `sbx run` still creating it
        removed = store.clean_leftovers(remove_tree)
    assert removed == [paths.container_run_dir(ghost)]
    assert os.path.isdir(paths.container_run_dir(real.id))
    assert os.path.isdir(paths.container_run_dir(busy))
