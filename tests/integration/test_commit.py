"""`sbx commit` as the unprivileged test user: a container's changes become an image
layer that later containers see, with owners, deletions (whiteouts) and opaque
directories carried over, history and --change applied, and clear errors."""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import SbxRunner, User
from test_lifecycle_commands import Life, end_life, life_store, make_life  # noqa: F401

pytest_plugins = ["registry_rig", "image_rig"]


@pytest.fixture
def life(sbx: SbxRunner, test_user: User, life_store: tuple[Path, str]) -> Iterator[Life]:  # noqa: F811
    b = make_life(sbx, test_user, *life_store)
    try:
        yield b
    finally:
        for image in ("localhost/one:latest", "localhost/two:latest"):
            b.sbx.run("rmi", "-f", image, env=b.env, timeout=60)
        end_life(b)


def test_commit_carries_files_owners_and_deletions(life: Life) -> None:
    life.run("run", "--name", "c1", life.image, "sh", "-c",
             "mkdir -p /data/keep && echo hi > /data/a && echo old > /data/b && "
             "chown 1234:5678 /data/a && chmod 0640 /data/a && ln /data/a /data/a-link && "
             "rm /bin/ls")
    cid = life.run("commit", "-m", "first", "-c", 'CMD ["cat", "/data/a"]', "c1",
                   "one").stdout.strip()
    assert len(cid) == 64
    # CMD from --change; the file, its owner and mode, the hard link, the deletion.
    assert life.run("run", "--rm", "one").stdout == "hi\n"
    out = life.run("run", "--rm", "one", "sh", "-c",
                   "stat -c '%u:%g %a %h' /data/a; ls /bin/ls 2>&1; true").stdout
    assert out.splitlines()[0] == "1234:5678 640 2"
    assert "No such file" in out.splitlines()[1]
    [img] = json.loads(life.run("image", "inspect", "one").stdout)
    assert img["Id"].endswith(cid)
    assert img["RepoTags"] == ["localhost/one:latest"]
    assert img["Config"]["Cmd"] == ["cat", "/data/a"]
    base = json.loads(life.run("image", "inspect", life.image).stdout)[0]
    assert len(img["RootFS"]["Layers"]) == len(base["RootFS"]["Layers"]) + 1
    assert json.loads(life.run("image", "inspect", "--format", "{{json .History}}", "one")
                      .stdout)[-1]["comment"] == "first"

    # An opaque directory: /data replaced by a new one hides the lower /data/*.
    life.run("run", "--name", "c2", "one", "sh", "-c",
             "rm -rf /data && mkdir /data && echo new > /data/c")
    life.run("commit", "-c", "ENV GREETING=hello", "-c", "WORKDIR /data", "c2", "two")
    out = life.run("run", "--rm", "two", "sh", "-c", 'pwd; ls -A; echo "$GREETING"').stdout
    assert out.split() == ["/data", "c", "hello"]
    # The new layer holds the changes as OCI whiteouts, and not the mount points
    # the runtime made (/etc/hostname, /proc, ...).
    archive = life.root / "two.tar"
    life.run("save", "-o", str(archive), "two")
    with tarfile.open(archive) as outer:
        manifest = json.load(outer.extractfile("manifest.json"))  # type: ignore[arg-type]
        top = outer.extractfile(manifest[0]["Layers"][-1])
        assert top is not None
        with tarfile.open(fileobj=top) as layer:
            members = sorted(m.name for m in layer.getmembers())
    assert members == ["data", "data/.wh..wh..opq", "data/c"]


def test_commit_errors(life: Life) -> None:
    p = life.run("commit", "no-such-container", "x", check=False)
    assert p.returncode == 125 and "no-such-container" in p.stderr
    life.run("create", "--name", "c3", life.image, "true")
    p = life.run("commit", "-c", "RUN make", "c3", "x", check=False)
    assert p.returncode == 125 and "RUN" in p.stderr and "hint:" in p.stderr
    p = life.run("commit", "c3", "x@sha256:" + "0" * 64, check=False)
    assert p.returncode == 125 and "digest" in p.stderr
    # Nothing was added.
    names = [t for i in json.loads(life.run("images", "--format", "json").stdout)
             for t in i.get("Names") or []]
    assert not any("localhost/x" in n for n in names)
