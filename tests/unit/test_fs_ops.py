"""fs/ops.py with a stock pyfuse3, one without the fallocate handler that
third_party/pyfuse3's patch adds (scripts/build-pyfuse3.sh): sbx-fs must still import,
start and serve requests, as it does for someone who pip-installs it with pyfuse3 from
PyPI. Runs in a child interpreter whose pyfuse3 has the patch's additions removed before
fs/ is imported, so nothing leaks into other tests. (tests/integration/test_fs_semantics.py
mounts with a really stock build: scripts/build-pyfuse3.sh --stock.)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown): "
                                "run scripts/test.sh")

CHILD = r'''
import errno, os, sys

import pyfuse3
import trio

# What a pyfuse3 3.5.0 from PyPI lacks: the Operations default and the compiled
# handler's coroutine (the C member cannot be taken out; the kernel side is the
# integration test's).
for owner, name in ((pyfuse3.Operations, "fallocate"), (pyfuse3, "fuse_fallocate_async")):
    if hasattr(owner, name):
        delattr(owner, name)
assert not hasattr(pyfuse3.Operations, "fallocate")

from fs import __main__ as cli, syscalls
from fs.node import ROOT_INO
from fs.ops import Operations
from fs.overlay import Overlay

base = sys.argv[1]
lower, upper, work = (os.path.join(base, d) for d in ("l", "u", "w"))
for d in (lower, upper, work):
    os.mkdir(d)
with open(os.path.join(lower, "a"), "w") as f:
    f.write("lower")

assert cli.main(["-V"]) == 0
ops = Operations(Overlay([lower], upper, work), timeout=1.0, writeback=True)
ctx = pyfuse3.RequestContext()


async def run():
    entry = await ops.lookup(ROOT_INO, b"a", ctx)
    fi = await ops.open(entry.st_ino, os.O_RDWR, ctx)
    assert await ops.write(fi.fh, 5, b"+w") == 2
    assert await ops.read(fi.fh, 0, 100) == b"lower+w"
    # Served when called: with a stock pyfuse3 nothing calls it.
    await ops.fallocate(fi.fh, 0, 0, 4096)
    assert (await ops.getattr(entry.st_ino, ctx)).st_size == 4096
    try:
        await ops.fallocate(fi.fh, syscalls.FALLOC_FL_PUNCH_HOLE, 0, 1)
    except pyfuse3.FUSEError as exc:
        assert exc.errno == errno.EOPNOTSUPP
    else:
        raise AssertionError("PUNCH_HOLE without KEEP_SIZE succeeded")
    await ops.release(fi.fh)
    fi, made = await ops.create(ROOT_INO, b"n", 0o100644, os.O_WRONLY, ctx)
    await ops.write(fi.fh, 0, b"new")
    await ops.release(fi.fh)
    names = []
    fh = await ops.opendir(ROOT_INO, ctx)
    ops.fs.readdir(fh, 0, lambda n, a, off: names.append(n) is None)
    await ops.releasedir(fh)
    assert sorted(names) == [b".", b"..", b"a", b"n"], names


trio.run(run)
ops.fs.close()
with open(os.path.join(upper, "a"), "rb") as f:
    assert f.read(7) == b"lower+w"
print("ok")
'''


def test_fs_works_with_a_pyfuse3_that_has_no_fallocate(tmp_path: Path) -> None:
    p = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path)], capture_output=True,
                       text=True, timeout=60, cwd=Path(__file__).parents[2])
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines()[-1] == "ok"
