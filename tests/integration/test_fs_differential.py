"""Differential test of the union filesystem: fs/ (sbx-fs) against kernel overlayfs.

Hypothesis draws 2-3 lower layers (files, directories, symlinks with relative,
absolute and `..` targets, hard links, fifos, whiteouts as 0/0 character devices
and as `.wh.` files, opaque directories by xattr and by `.wh..wh..opq`) and a
sequence of operations (write, O_EXCL create, append, pwrite, truncate, mkdir,
rmdir, unlink, rename, symlink, link, chmod, chown to 0/1000, user xattrs,
utimes, mkfifo, and a remount over the same upper layer); tests/fs_harness.py
mounts the layers with the kernel's overlayfs and with the fs under test, applies
each operation to both, and compares its errno (EXDEV included) and then every
path's type, mode, owner, size, content, link target, link count, which paths
share an inode, user xattrs and (test-set) mtime.

What may differ, and why, is written down in the harness: `ALWAYS` for every fs
(a directory's st_nlink; lower hard links, which the kernel breaks on copy-up
in a user namespace and the issue wants kept; whiteouts the kernel lists in
single-layer directories; ESTALE renames onto an own hard link), and
`FUSE_OVERLAYFS`, eleven bugs of fuse-overlayfs 1.10 the harness found, excluded
only when it is the fs under test.

The fs under test is `sbx-fs` unless SBX_FS_CMD names another command with
fuse-overlayfs's command line (`SBX_FS_CMD=fuse-overlayfs` checks the harness
against the peer). Length: SBX_FS_EXAMPLES (default 40) cases of SBX_FS_STEPS
(default 25) steps; a soak is e.g. SBX_FS_EXAMPLES=2000 SBX_FS_STEPS=50.

A failure is shrunk and saved as tests/regressions/fs/<digest>.json (layers and
op list, with a note); every file there, and the hand-written seed-*.json, is
replayed by test_regression. The harness checks itself without any fs under
test: kernel overlayfs against itself shows nothing, and a kernel mount with its
lower layers upside down is caught.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import fs_harness as fh
import pytest
from helpers import User, make_tmp_dir, remove_tree, sbx_script

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis missing: run scripts/setup.sh")
from hypothesis import HealthCheck, Phase, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.stateful import (  # noqa: E402
    RuleBasedStateMachine,
    initialize,
    rule,
    run_state_machine_as_test,
)

pytestmark = pytest.mark.integration

REGRESSIONS = Path(__file__).resolve().parent.parent / "regressions" / "fs"

EXAMPLES = int(os.environ.get("SBX_FS_EXAMPLES", "40"))
STEPS = int(os.environ.get("SBX_FS_STEPS", "25"))

# A small name space, so that the layers and the ops keep meeting each other.
NAMES = ("a", "b", "c", "d")
NEW_NAMES = (*NAMES, "e")
OWNERS = ((0, 0), (1000, 1000), (0, 1000))
FILE_MODES = (0o644, 0o600, 0o755, 0o444, 0o4755, 0o2755, 0o777, 0o000)
DIR_MODES = (0o755, 0o700, 0o1777, 0o2775, 0o555)
XATTR_NAMES = ("user.a", "user.b")
XATTR_VALUES = ("1", "two", "")
# Relative, absolute, `..` (past the root too), dangling: the chroot in the
# harness keeps every one of them inside the mount.
LINK_TARGETS = ("a", "b/c", "../a", "../../b", "/a", "/b/c", "/", "..", ".", "nope",
                "/etc/passwd", "a/../b")
# Mostly small; sometimes past a page, and past FUSE's 128 KiB request size.
DATA = st.sampled_from(("", "x", "hello\n", "0123456789abcdef"))
REPEAT = st.sampled_from((1, 1, 1, 300, 9000))


# --------------------------------------------------------------------------
# Strategies: layers
# --------------------------------------------------------------------------

def _owner_fields() -> st.SearchStrategy[dict[str, int]]:
    return st.sampled_from(OWNERS).map(lambda o: {"uid": o[0], "gid": o[1]})


def _xattrs() -> st.SearchStrategy[dict[str, str]]:
    return st.dictionaries(st.sampled_from(XATTR_NAMES), st.sampled_from(XATTR_VALUES),
                           max_size=2)


LAYER_PATH = st.lists(st.sampled_from(NAMES), min_size=1, max_size=3).map("/".join)


@st.composite
def layer_entry(draw: st.DrawFn) -> dict[str, Any]:
    """One entry of a layer, in the spec format of fs_harness.build_layer."""
    path = draw(LAYER_PATH)
    kind = draw(st.sampled_from(("file", "file", "file", "dir", "dir", "symlink",
                                 "whiteout", "link", "fifo")))
    entry: dict[str, Any] = {"path": path, "type": kind}
    if kind in ("file", "dir", "fifo", "symlink"):
        entry.update(draw(_owner_fields()))
    if kind == "file":
        entry.update(data=draw(DATA), repeat=draw(REPEAT), mode=draw(st.sampled_from(FILE_MODES)),
                     xattrs=draw(_xattrs()))
    elif kind == "dir":
        entry.update(mode=draw(st.sampled_from(DIR_MODES)), xattrs=draw(_xattrs()),
                     opaque=draw(st.sampled_from((None, None, None, "xattr", "wh"))))
    elif kind == "fifo":
        entry.update(mode=draw(st.sampled_from((0o644, 0o600))))
    elif kind == "symlink":
        entry.update(target=draw(st.sampled_from(LINK_TARGETS)))
    elif kind == "whiteout":
        entry.update(form=draw(st.sampled_from(("chardev", "wh"))))
    elif kind == "link":
        entry.update(target=draw(LAYER_PATH))
    return entry


LAYERS = st.lists(st.lists(layer_entry(), max_size=10).map(fh.normalize_layer),
                  min_size=2, max_size=3)


# --------------------------------------------------------------------------
# Strategies: operations on the current tree
# --------------------------------------------------------------------------

def _paths(tree: fh.Tree) -> st.SearchStrategy[str]:
    """A path that exists (mostly) or a new name under something that does."""
    existing = sorted(p for p in tree if p != ".")
    parents = [".", *sorted(p for p, i in tree.items() if p != "." and i["type"] in "dl")]
    new = st.builds(lambda parent, name: name if parent == "." else f"{parent}/{name}",
                    st.sampled_from(parents), st.sampled_from(NEW_NAMES))
    if not existing:
        return new
    return st.one_of(st.sampled_from(existing), st.sampled_from(existing), new)


def ops(tree: fh.Tree) -> st.SearchStrategy[dict[str, Any]]:
    """One operation, in the format of fs_harness.apply_op."""
    path = _paths(tree)
    mode = st.sampled_from(FILE_MODES)
    return st.one_of(
        st.fixed_dictionaries({"op": st.just("write"), "path": path, "data": DATA,
                               "repeat": REPEAT, "mode": mode}),
        st.fixed_dictionaries({"op": st.just("create_excl"), "path": path, "mode": mode}),
        st.fixed_dictionaries({"op": st.just("append"), "path": path, "data": DATA}),
        st.fixed_dictionaries({"op": st.just("pwrite"), "path": path, "data": DATA,
                               "offset": st.sampled_from((0, 1, 3, 4096, 140000))}),
        st.fixed_dictionaries({"op": st.just("truncate"), "path": path,
                               "size": st.sampled_from((0, 1, 5, 200000))}),
        st.fixed_dictionaries({"op": st.just("mkdir"), "path": path,
                               "mode": st.sampled_from(DIR_MODES)}),
        st.fixed_dictionaries({"op": st.just("rmdir"), "path": path}),
        st.fixed_dictionaries({"op": st.just("unlink"), "path": path}),
        st.fixed_dictionaries({"op": st.just("rename"), "src": path, "dst": path}),
        st.fixed_dictionaries({"op": st.just("symlink"), "path": path,
                               "target": st.sampled_from(LINK_TARGETS)}),
        st.fixed_dictionaries({"op": st.just("link"), "src": path, "dst": path}),
        st.fixed_dictionaries({"op": st.just("chmod"), "path": path,
                               "mode": st.sampled_from(FILE_MODES + DIR_MODES)}),
        st.fixed_dictionaries({"op": st.just("chown"), "path": path,
                               "uid": st.sampled_from((0, 1000)),
                               "gid": st.sampled_from((0, 1000))}),
        st.fixed_dictionaries({"op": st.just("setxattr"), "path": path,
                               "name": st.sampled_from(XATTR_NAMES),
                               "value": st.sampled_from(XATTR_VALUES)}),
        st.fixed_dictionaries({"op": st.just("removexattr"), "path": path,
                               "name": st.sampled_from(XATTR_NAMES)}),
        st.fixed_dictionaries({"op": st.just("utime"), "path": path,
                               "mtime": st.integers(1_100_000_000, 1_100_000_100)}),
        st.fixed_dictionaries({"op": st.just("mkfifo"), "path": path, "mode": mode}),
        # Unmount and mount both again on the same upper: what the fs under test
        # wrote there (whiteouts, opaque markers, copied-up metadata) must read back.
        st.just({"op": "remount"}),
    )


# --------------------------------------------------------------------------
# The machine
# --------------------------------------------------------------------------

class DifferentialMachine(RuleBasedStateMachine):
    """Layers, then operations on both mounts, the trees compared after each."""

    worker: ClassVar[fh.Worker]
    sut_cmd: ClassVar[list[str]]
    aufs: ClassVar[bool] = True
    # The last case that ran, finished or not: after a failure hypothesis runs the
    # shrunk case last, so this is what gets saved.
    last_case: ClassVar[dict[str, Any] | None] = None

    def __init__(self) -> None:
        super().__init__()
        self.session: fh.Session | None = None
        self.failed = False

    @initialize(layers=LAYERS)
    def mount(self, layers: list[list[dict[str, Any]]]) -> None:
        self.session = fh.Session(self.worker, layers, self.sut_cmd, self.aufs)
        type(self).last_case = self.session.record()
        self._guard(self.session.start)

    @rule(data=st.data())
    def step(self, data: st.DataObject) -> None:
        assert self.session is not None
        op = data.draw(ops(self.session.ref_tree), label="op")
        self._guard(lambda: self.session.apply(op))  # type: ignore[union-attr]

    def _guard(self, fn: Callable[[], object]) -> None:
        try:
            fn()
        except BaseException:
            self.failed = True
            raise
        finally:
            if self.session is not None:
                type(self).last_case = self.session.record()

    def teardown(self) -> None:
        if self.session is None:
            return
        try:
            self.session.stop()
        except fh.Mismatch:
            if not self.failed:  # else the first failure is the one to report
                raise


def machine_for(worker: fh.Worker, sut_cmd: list[str], *,
                aufs: bool = True) -> type[DifferentialMachine]:
    """A machine class of its own (its last_case is this run's) for sut_cmd."""

    class Machine(DifferentialMachine):
        pass

    Machine.worker = worker
    Machine.sut_cmd = sut_cmd
    Machine.aufs = aufs
    return Machine


def run_machine(machine: type[DifferentialMachine], *, examples: int = EXAMPLES,
                steps: int = STEPS, shrink: bool = True) -> None:
    """Run hypothesis on the machine; raises what the (shrunk) failing case raised."""
    run_state_machine_as_test(machine, settings=settings(
        max_examples=examples,
        stateful_step_count=steps,
        deadline=None,
        database=None,  # the shrunk cases are kept in tests/regressions/fs instead
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        phases=list(Phase) if shrink else [Phase.explicit, Phase.reuse, Phase.generate],
        # In CI the same cases every run: a red CI then means a change broke them, not
        # that this run drew a new case (soaks, with random cases, find those; their
        # shrunk results land in tests/regressions/fs).
        derandomize=os.environ.get("CI") == "true",
    ))


# --------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sut_cmd() -> list[str]:
    """The fs under test ($SBX_FS_CMD, default sbx-fs); skips while it is missing."""
    cmd = fh.sut_command()
    reason = fh.sut_missing_reason(cmd)
    if reason:
        pytest.skip(reason)
    return cmd


@pytest.fixture(scope="module")
def fs_root(test_user: User) -> Iterator[Path]:
    """A directory the test user owns, for the worker, its cases and wrappers."""
    root = make_tmp_dir("sbx-fsdiff-")
    test_user.chown(root)
    yield root
    remove_tree(root)


@pytest.fixture(scope="module")
def fs_worker(test_user: User, fs_root: Path) -> Iterator[fh.Worker]:
    """The harness's worker, root of the test user's namespace (sbx unshare)."""
    worker = fh.Worker(test_user, sbx_script(), fs_root)
    try:
        yield worker
    finally:
        worker.close()


@pytest.fixture(scope="module")
def kernel_sut(fs_root: Path) -> list[str]:
    """Kernel overlayfs behind the fs command line: the harness's own control."""
    return [str(fh.write_kernel_sut(fs_root))]


# --------------------------------------------------------------------------
# The differential test and its regressions
# --------------------------------------------------------------------------

def test_differential(fs_worker: fh.Worker, sut_cmd: list[str]) -> None:
    """Random layers and operations: the fs under test behaves as kernel overlayfs."""
    machine = machine_for(fs_worker, sut_cmd)
    try:
        run_machine(machine)
    except Exception as exc:
        # A mismatch, a hung or crashed fs (WorkerError), or one that fails only now
        # and then (hypothesis's Flaky): the last case that ran is the shrunk one.
        case = machine.last_case
        if case is None:
            raise
        first = " ".join(line.strip() for line in str(exc).splitlines()[:2])
        case["note"] = f"{type(exc).__name__}: {first[:300]}"
        saved = fh.save_regression(REGRESSIONS, case)
        raise AssertionError(f"{exc}\n\nshrunk case saved as {saved} (replayed by "
                             "test_regression; keep it once the bug is fixed)") from exc


@pytest.mark.parametrize("case_file", list(fh.iter_regressions(REGRESSIONS)),
                         ids=lambda p: p.stem)
def test_regression(fs_worker: fh.Worker, sut_cmd: list[str], case_file: Path) -> None:
    """A saved case (shrunk failure or hand-written seed) still behaves as overlayfs."""
    case = json.loads(case_file.read_text())
    fh.replay(fs_worker, sut_cmd, case)


# --------------------------------------------------------------------------
# The harness checked against itself (no fs under test needed)
# --------------------------------------------------------------------------

def test_harness_sees_no_difference_between_kernel_and_kernel(
        fs_worker: fh.Worker, kernel_sut: list[str]) -> None:
    """Kernel overlayfs against itself: any difference would be the harness's noise."""
    run_machine(machine_for(fs_worker, kernel_sut, aufs=False), examples=max(EXAMPLES // 4, 5))


@pytest.mark.parametrize("case_file", list(fh.iter_regressions(REGRESSIONS)),
                         ids=lambda p: p.stem)
def test_harness_replays_regressions_on_kernel(
        fs_worker: fh.Worker, kernel_sut: list[str], case_file: Path) -> None:
    """Every saved case runs clean with the kernel on both sides."""
    fh.replay(fs_worker, kernel_sut, json.loads(case_file.read_text()), aufs=False)


CASE_ORDER_MATTERS: dict[str, Any] = {
    "layers": [
        [{"path": "a", "type": "file", "data": "lowest"},
         {"path": "d/x", "type": "file", "data": "x"}],
        [{"path": "a", "type": "file", "data": "top"},
         {"path": "d", "type": "whiteout", "form": "chardev"}],
    ],
    "ops": [{"op": "append", "path": "a", "data": "+"}],
}


def test_harness_catches_layers_stacked_upside_down(
        fs_worker: fh.Worker, kernel_sut: list[str]) -> None:
    """A broken fs (lower layers reversed) fails, and says where."""
    with pytest.raises(fh.Mismatch) as failure:
        fh.replay(fs_worker, [*kernel_sut, "--reverse"], CASE_ORDER_MATTERS, aufs=False)
    assert "after mounting" in str(failure.value)
    assert "a: sha256" in str(failure.value)
    assert "d: only in sut" in str(failure.value)


def test_harness_catches_a_broken_fs_by_search(
        fs_worker: fh.Worker, kernel_sut: list[str]) -> None:
    """Hypothesis finds the broken fs on its own, from random layers."""
    with pytest.raises(fh.Mismatch):
        run_machine(machine_for(fs_worker, [*kernel_sut, "--reverse"], aufs=False),
                    examples=EXAMPLES, steps=3, shrink=False)


# --------------------------------------------------------------------------
# The harness's pure parts
# --------------------------------------------------------------------------

def test_normalize_layer_keeps_what_a_tar_could_hold() -> None:
    layer = fh.normalize_layer([
        {"path": "a", "type": "file"},
        {"path": "a/b", "type": "file"},        # under a file of the same layer
        {"path": "c/d", "type": "file"},        # c: an implied directory
        {"path": "l", "type": "link", "target": "c/d"},
        {"path": "m", "type": "link", "target": "nope"},
        {"path": "n", "type": "link", "target": "c"},   # links go to files only
        {"path": "a", "type": "dir"},           # the first entry at a path wins
        {"path": "c", "type": "dir"},
    ])
    assert [(e["path"], e["type"]) for e in layer] == [
        ("c", "dir"), ("a", "file"), ("c/d", "file"), ("l", "link")]


def test_hidden_and_stacked_paths_from_layers() -> None:
    layers = [
        [{"path": "x/y", "type": "file"}, {"path": "o", "type": "dir", "opaque": "wh"}],
        [{"path": "x", "type": "symlink", "target": "x"},
         {"path": "o/p", "type": "dir", "opaque": "wh"}],
        [{"path": "x/z", "type": "dir"}],
    ]
    assert fh.hidden_lower_dirs(layers) == {"x"}
    assert fh.stacked_aufs_opaque(layers) == {"o/p"}
    assert fh.looping_symlinks_under_dirs(layers) == {"x"}


def _info(**kw: Any) -> dict[str, Any]:
    base = {"type": "-", "mode": "0o644", "uid": 0, "gid": 0, "nlink": 1, "mtime": "recent",
            "ino": 1, "xattrs": {}, "size": 1, "sha256": "00"}
    return {**base, **kw}


def test_compare_trees_reports_each_difference() -> None:
    tol = fh.Tolerance(fh.ALWAYS)
    ref = {".": _info(type="d", ino=9), "a": _info(), "b": _info(ino=2)}
    sut = {".": _info(type="d", ino=9, nlink=5), "a": _info(mode="0o600"), "c": _info(ino=3)}
    assert fh.compare_trees(ref, sut, tol) == [
        "a: mode ref='0o644' sut='0o600'",
        "b: only in ref (-)",
        "c: only in sut (-)",
    ]


def test_compare_trees_checks_hard_links_both_ways() -> None:
    tol = fh.Tolerance(fh.ALWAYS)
    ref = {"a": _info(ino=1, nlink=2), "b": _info(ino=1, nlink=2), "c": _info(ino=3)}
    sut = {"a": _info(ino=1, nlink=2), "b": _info(ino=2, nlink=2), "c": _info(ino=1)}
    diffs = fh.compare_trees(ref, sut, tol)
    assert "a: not a hard link of ['b'] in sut" in diffs
    assert "c: shares an inode with a in sut only" in diffs


def test_tolerance_follows_what_diverged_through_renames() -> None:
    tol = fh.Tolerance(fh.FUSE_OVERLAYFS)
    tree = {"f": _info(type="p")}
    assert tol.diverges({"op": "chmod", "path": "f", "mode": 0}, tree, ["f"])
    tol.touch(["f", "g"])  # rename f g
    assert tol.is_diverged("g")
    assert tol.attr_allowed(".", "mtime", _info(), _info(), fh.View({}, {}, []))
    assert not fh.Tolerance(fh.ALWAYS).diverges({"op": "chmod", "path": "f"}, tree, ["f"])
    tol.free(["d/x"], "gid")
    tol.moved("d", "e")  # rename d e: what was under d is under e
    assert tol.attr_allowed("e/x", "gid", _info(), _info(), fh.View({}, {}, []))
    assert not tol.attr_allowed("e/y", "gid", _info(), _info(), fh.View({}, {}, []))
