"""The store shared by several processes: concurrent pulls, rmi and prune beside
them, and processes killed with SIGKILL in the middle of writing.

Each scenario runs real child processes (python -c, this checkout on PYTHONPATH)
that open their own Store on the same directory, as concurrent `sbx` commands would.
"""

from __future__ import annotations

import hashlib
import json
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from sandbox.images.store import Store

REPO = Path(__file__).resolve().parents[2]

PRELUDE = """\
import hashlib, io, json, os, sys, time
from pathlib import Path
from sandbox.images.store import Store
root = Path(sys.argv[1])
store = Store(root, sync_layers=False)
def sha(b): return "sha256:" + hashlib.sha256(b).hexdigest()
def ready(*words):
    print("ready", *words, flush=True)
"""


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def spawn(code: str, *args: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(code), *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def wait_line(proc: subprocess.Popen[str], timeout: float = 20) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        proc.kill()
        pytest.fail(f"child said nothing in {timeout}s; stderr: {proc.communicate()[1]}")
    line = proc.stdout.readline()
    if not line:
        pytest.fail(f"child exited early ({proc.wait()}): {proc.stderr.read()}")  # type: ignore[union-attr]
    return line.strip()


def finish(proc: subprocess.Popen[str], timeout: float = 60) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"child failed ({proc.returncode}):\n{err}"
    return out


def kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=10)
    assert proc.returncode == -signal.SIGKILL


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "store"


# -- layers --------------------------------------------------------------------------

UNPACK_SLOWLY = """
diff = sys.argv[2]
def unpack(dest):
    with open(root.parent / "unpacks", "a") as f:
        f.write(f"{os.getpid()}\\n")
    ready()
    (dest / "file").write_text("content")
    time.sleep(float(sys.argv[3]))
info = store.add_layer(diff, diff, unpack)
print(info.path, flush=True)
"""


def test_concurrent_add_layer_unpacks_once(root: Path) -> None:
    Store(root)
    diff = sha(b"shared layer")
    procs = [spawn(UNPACK_SLOWLY, root, diff, 1.0) for _ in range(4)]
    outs = [finish(p) for p in procs]
    paths = {line for out in outs for line in out.split() if line.startswith("/")}
    assert len(paths) == 1
    assert len((root.parent / "unpacks").read_text().split()) == 1
    store = Store(root)
    assert store.has_layer(diff) and store.check() == [] and store.tmp_entries() == []


def test_sigkill_during_unpack_leaves_only_tmp_garbage(root: Path) -> None:
    store = Store(root, tmp_grace_s=0, sync_layers=False)
    diff = sha(b"layer")
    proc = spawn(UNPACK_SLOWLY, root, diff, 60)
    assert wait_line(proc) == "ready"
    [entry] = store.tmp_entries()
    assert entry.startswith("layer-")
    assert store.clean_tmp() == 0, "a live unpack's temp dir must be left alone"
    kill(proc)
    assert not store.has_layer(diff) and store.list_layers() == []
    assert store.clean_tmp() == 1
    assert store.tmp_entries() == [] and store.check() == []
    # The layer lock died with the process: the layer can be added now.
    store.add_layer(diff, diff, lambda d: (d / "f").write_text("x"))
    assert store.has_layer(diff)


def test_a_waiting_unpacker_takes_over_from_a_killed_one(root: Path) -> None:
    Store(root)
    diff = sha(b"layer")
    first = spawn(UNPACK_SLOWLY, root, diff, 60)
    assert wait_line(first) == "ready"
    second = spawn(UNPACK_SLOWLY, root, diff, 0)  # blocks on the layer lock
    time.sleep(0.5)
    assert second.poll() is None
    kill(first)
    out = finish(second)
    assert "ready" in out
    store = Store(root, tmp_grace_s=0)
    assert store.has_layer(diff)
    store.clean_tmp()
    assert store.tmp_entries() == [] and store.check() == []


def test_grace_period_protects_young_unlocked_entries(root: Path) -> None:
    store = Store(root)  # default grace: 60 s
    (root / "tmp" / "blob-young").write_bytes(b"x")
    assert store.clean_tmp() == 0
    old = time.time() - 3600
    os.utime(root / "tmp" / "blob-young", (old, old))
    assert store.clean_tmp() == 1


# -- blobs ---------------------------------------------------------------------------


def test_sigkill_during_ingest(root: Path) -> None:
    store = Store(root, tmp_grace_s=0)
    data = b"x" * 100_000
    proc = spawn(
        """
        data = b"x" * 100_000
        with store.ingest(sha(data), len(data)) as w:
            w.write(data[:50_000])
            ready()
            time.sleep(60)
        """,
        root,
    )
    assert wait_line(proc) == "ready"
    assert len(store.tmp_entries()) == 1
    assert store.clean_tmp() == 0
    kill(proc)
    assert not store.has_blob(sha(data))
    assert store.clean_tmp() == 1 and store.tmp_entries() == []


# -- the index -----------------------------------------------------------------------

INDEX_WORKER = """
me = int(sys.argv[2])
rounds = int(sys.argv[3])
images = json.loads(sys.argv[4])
mine = images[me]
for n in range(rounds):
    store.tag(mine["id"], "r/shared:latest")
    store.tag(mine["id"], f"r/p{me}:{n}")
    if n % 3 == 0:
        store.untag(f"r/p{me}:{n}")
    if me == 0:  # rmi and pull again, beside the others
        store.remove_image(mine["id"])
        store.add_image(config_digest=mine["id"], manifest_digest=mine["manifest"],
                        chain_ids=mine["layers"], names=[f"r/p0:{n}"])
    assert isinstance(store.list_images(), list)
print("done", flush=True)
"""


def _seed_images(store: Store, count: int) -> list[dict[str, object]]:
    out = []
    for i in range(count):
        diff = sha(f"layer {i}".encode())
        store.add_layer(diff, diff, lambda d: None)
        config = store.put_blob_bytes(json.dumps({"i": i}).encode())
        manifest = store.put_blob_bytes(
            json.dumps({"config": {"digest": config}, "layers": []}).encode()
        )
        store.add_image(config_digest=config, manifest_digest=manifest, chain_ids=[diff])
        out.append({"id": config, "manifest": manifest, "layers": [diff]})
    return out


def test_concurrent_index_writers_never_corrupt_it(root: Path) -> None:
    store = Store(root, sync_layers=False)
    images = _seed_images(store, 4)
    rounds = 30
    procs = [spawn(INDEX_WORKER, root, i, rounds, json.dumps(images)) for i in range(4)]
    for p in procs:
        assert finish(p).strip() == "done"
    records = {r.id: r for r in store.list_images()}
    assert set(records) == {str(i["id"]) for i in images}
    # A name has at most one owner (worker 0's rmi may have taken it last).
    owners = [r.id for r in records.values() if "r/shared:latest" in r.names]
    assert len(owners) <= 1
    for i in (1, 2, 3):
        names = set(records[str(images[i]["id"])].names)
        expected = {f"r/p{i}:{n}" for n in range(rounds) if n % 3}
        assert expected <= names
    assert f"r/p0:{rounds - 1}" in records[str(images[0]["id"])].names
    json.loads((root / "images.json").read_text())
    assert store.check() == [] and store.tmp_entries() == []


def test_prune_waits_for_a_running_pull(root: Path) -> None:
    store = Store(root, sync_layers=False)
    proc = spawn(
        """
        with store.protect():
            diff = sha(b"pulled layer")
            store.add_layer(diff, diff, lambda d: (d / "f").write_text("x"))
            config = store.put_blob_bytes(b'{"pulled": true}')
            manifest = store.put_blob_bytes(json.dumps({"config": {"digest": config}}).encode())
            ready()
            time.sleep(1.5)  # still downloading, say
            store.add_image(config_digest=config, manifest_digest=manifest,
                            chain_ids=[diff], names=["r/pulled:1"])
        """,
        root,
    )
    assert wait_line(proc) == "ready"
    started = time.monotonic()
    result = store.prune()
    waited = time.monotonic() - started
    finish(proc)
    assert waited > 0.5, "prune did not wait for the pull"
    assert result.blobs == [] and result.layers == []
    [image] = store.list_images()
    assert image.names == ("r/pulled:1",) and store.check() == []
