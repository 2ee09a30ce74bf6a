"""Volumes as the unprivileged test user on the busybox image: named volumes made on
first use and kept across runs, filled from the image on their first mount with the
image's owners, read-only mounts, `sbx volume create/ls/inspect/rm/prune/exists`,
`volume rm` refusing a volume a container uses (podman's exit 2), the anonymous
volume of the image's `Volumes` (/vol) and of `-v /path`, and `rm -v` and `--rm`
removing anonymous volumes but never named ones.

Uses the lifecycle rig (test_lifecycle_commands.py): each test has its own data
directory, so `volume ls` shows only its volumes.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import test_lifecycle_commands as rig
from test_lifecycle_commands import Life

pytest_plugins = ["registry_rig", "image_rig"]

life_store = rig.life_store
life = rig.life

HEX64 = re.compile(r"[0-9a-f]{64}")


def volumes_dir(life: Life) -> Path:
    return life.root / "data" / "sbx" / "volumes"


def names(life: Life) -> list[str]:
    return life.run("volume", "ls", "-q").stdout.split()


def test_named_volume_is_filled_from_the_image_and_kept_across_runs(life: Life) -> None:
    first = life.run("run", "--rm", "-v", "cache:/data", life.image, "sh", "-c",
                     "ls /data; stat -c %u:%g:%a /data/b; echo kept > /data/new")
    # The image's /data (b, c, d and a hard link to d) was copied in on first mount.
    assert first.stdout.split() == ["b", "c", "d", "d-hardlink", "0:0:644"]
    assert names(life) == ["cache"]
    second = life.run("run", "--rm", "-v", "cache:/data", life.image, "sh", "-c",
                      "cat /data/new; ls /data")
    assert second.stdout.split() == ["kept", "b", "c", "d", "d-hardlink", "new"]
    # Copy-up happens once: a volume the user emptied stays empty (podman's NeedsCopyUp).
    life.run("run", "--rm", "-v", "cache:/data", life.image, "sh", "-c", "rm -rf /data/*")
    third = life.run("run", "--rm", "-v", "cache:/data", life.image, "ls", "-A", "/data")
    assert third.stdout == ""
    info = json.loads(life.run("volume", "inspect", "cache").stdout)[0]
    assert info["NeedsCopyUp"] is False
    # On the host the content is the user's (container root is the user).
    data = volumes_dir(life) / "cache" / "_data"
    assert info["Mountpoint"] == str(data)
    assert data.stat().st_uid == life.sbx.user.uid


def test_volume_takes_the_image_owner_or_the_container_user(life: Life) -> None:
    # /home/tester belongs to 1000:1000 in the image: so does the new volume.
    p = life.run("run", "--rm", "-u", "1000:1000", "-v", "home:/home/tester", life.image,
                 "sh", "-c", "stat -c %u:%g /home/tester /home/tester/.profile; "
                 "touch /home/tester/mine && echo writable")
    assert p.stdout.split() == ["1000:1000", "1000:1000", "writable"]
    # A path the image lacks: the volume belongs to the container's user.
    p = life.run("run", "--rm", "-u", "1000:1000", "-v", "fresh:/not/in/image", life.image,
                 "sh", "-c", "stat -c %u:%g /not/in/image; touch /not/in/image/x && echo ok")
    assert p.stdout.split() == ["1000:1000", "ok"]
    # On the host, files of container uid 1000 belong to the subordinate range.
    made = volumes_dir(life) / "home" / "_data" / "mine"
    assert made.stat().st_uid == 200000 + 1000 - 1


def test_read_only_volume(life: Life) -> None:
    life.run("volume", "create", "ro-vol")
    p = life.run("run", "--rm", "-v", "ro-vol:/v:ro", life.image, "sh", "-c",
                 "touch /v/x", check=False)
    assert p.returncode != 0 and "Read-only file system" in p.stderr
    ok = life.run("run", "--rm", "-v", "ro-vol:/v", life.image, "touch", "/v/x")
    assert ok.returncode == 0


def test_volume_commands(life: Life) -> None:
    assert life.run("volume", "create", "--label", "team=web", "one").stdout == "one\n"
    made = life.run("volume", "create").stdout.strip()
    assert HEX64.fullmatch(made)
    again = life.run("volume", "create", "one", check=False)
    assert again.returncode == 125 and "already exists" in again.stderr
    assert life.run("volume", "create", "--ignore", "one").returncode == 0
    bad = life.run("volume", "create", "no/slash", check=False)
    assert bad.returncode == 125 and "invalid volume name" in bad.stderr
    assert sorted(names(life)) == sorted(["one", made])

    table = life.run("volume", "ls").stdout.splitlines()
    assert table[0].split() == ["DRIVER", "VOLUME", "NAME"]
    listed = json.loads(life.run("volume", "ls", "--format", "json").stdout)
    assert {v["Name"] for v in listed} == {"one", made}
    assert life.run("volume", "ls", "-q", "--filter", "label=team=web").stdout == "one\n"
    assert life.run("volume", "ls", "--format", "{{.Name}} {{.Driver}}",
                    "--filter", "name=^on").stdout == "one local\n"
    bad_filter = life.run("volume", "ls", "--filter", "color=red", check=False)
    assert bad_filter.returncode == 125 and "invalid volume filter" in bad_filter.stderr

    [info] = json.loads(life.run("volume", "inspect", "one").stdout)
    assert info["Labels"] == {"team": "web"} and info["Driver"] == "local"
    assert info["Mountpoint"] == str(volumes_dir(life) / "one" / "_data")
    assert info["NeedsCopyUp"] is True
    assert life.run("volume", "inspect", "--format", "{{.Name}}", "one").stdout == "one\n"
    missing = life.run("volume", "inspect", "nope", check=False)
    assert missing.returncode == 125 and 'no volume with name "nope"' in missing.stderr

    assert life.run("volume", "exists", "one", check=False).returncode == 0
    assert life.run("volume", "exists", "nope", check=False).returncode == 1

    assert life.run("volume", "rm", "one").stdout == "one\n"
    gone = life.run("volume", "rm", "one", check=False)
    assert gone.returncode == 1 and 'no volume with name "one"' in gone.stderr
    assert names(life) == [made]


def test_rm_refuses_a_volume_in_use_and_prune_keeps_it(life: Life) -> None:
    life.run("create", "--name", "user", "-v", "busy:/busy", life.image, "true")
    life.run("volume", "create", "idle")
    p = life.run("volume", "rm", "busy", check=False)
    assert p.returncode == 2
    assert "volume busy is being used by the following container(s)" in p.stderr
    assert "busy" in names(life)
    dangling = life.run("volume", "ls", "-q", "--filter", "dangling=true").stdout.split()
    assert "idle" in dangling and "busy" not in dangling
    # prune: every unused volume (the anonymous /vol of "user" is in use too).
    pruned = life.run("volume", "prune", "-f").stdout.split()
    assert pruned == ["idle"]
    assert "busy" in names(life)
    # Without -f it asks; "n" keeps everything.
    life.run("volume", "create", "idle2")
    kept = life.run("volume", "prune", input="n\n")
    assert "idle2" in names(life) and kept.stdout == ""
    # -f removes the containers that use it, then the volume (podman's volume rm -f).
    assert life.run("volume", "rm", "-f", "busy").stdout == "busy\n"
    assert "busy" not in names(life)
    assert life.ps() == []


def test_anonymous_volumes_and_rm_v(life: Life) -> None:
    # The busybox image's config has Volumes {"/vol": {}}: each container gets its own.
    life.run("run", "--name", "a", life.image, "sh", "-c", "echo a > /vol/f")
    [mount] = [m for m in life.inspect("a")["Mounts"] if m["Destination"] == "/vol"]
    assert mount["Type"] == "volume" and HEX64.fullmatch(mount["Name"])
    assert json.loads(life.run("volume", "inspect", mount["Name"]).stdout)[0]["Anonymous"]
    # A second container does not share it.
    b = life.run("run", "--name", "b", "-v", "named:/named", life.image, "sh", "-c",
                 "ls /vol; touch /named/x")
    assert b.stdout == ""
    vols = set(names(life))
    assert len(vols) == 3 and "named" in vols and mount["Name"] in vols
    # rm without -v keeps anonymous volumes (podman); rm -v removes them, not named ones.
    life.run("rm", "a")
    assert mount["Name"] in names(life)
    life.run("rm", "-v", "b")
    assert set(names(life)) == {mount["Name"], "named"}
    # A -v on the image's volume path replaces the anonymous volume.
    life.run("run", "--rm", "-v", "named:/vol", life.image, "test", "-e", "/vol/x")
    # --rm removes the anonymous volumes too, -v /path makes one.
    p = life.run("run", "--rm", "-v", "/scratch", life.image, "sh", "-c",
                 "grep -c ' /scratch ' /proc/self/mountinfo")
    assert p.stdout == "1\n"
    assert set(names(life)) == {mount["Name"], "named"}


def test_bad_volume_arguments_change_nothing(life: Life) -> None:
    for arg, text in (("bad$name:/x", "neither a host path nor a volume name"),
                      ("relative", "container path must be absolute"),
                      ("v:/x:bogus", "invalid option 'bogus'"),
                      ("v:/x", "duplicate mount destination /x")):
        extra = ["-v", "w:/x"] if arg == "v:/x" else []
        p = life.run("run", "--rm", *extra, "-v", arg, life.image, "true", check=False)
        assert p.returncode == 125 and text in p.stderr, p.stderr
    assert names(life) == []
    assert life.ps() == []
    # A name in use fails after the volumes were made: they are taken back.
    life.run("create", "--name", "taken", life.image, "true")
    before = set(names(life))
    p = life.run("run", "--name", "taken", "-v", "late:/late", life.image, "true",
                 check=False)
    assert p.returncode == 125 and set(names(life)) == before


def test_parallel_first_use_of_one_volume(life: Life) -> None:
    def one(i: int) -> int:
        return life.run("run", "--rm", "-v", "shared:/s", life.image, "sh", "-c",
                        f"touch /s/{i}", check=False).returncode

    with ThreadPoolExecutor(max_workers=4) as pool:
        codes = list(pool.map(one, range(4)))
    assert codes == [0, 0, 0, 0]
    assert names(life) == ["shared"]
    ls = life.run("run", "--rm", "-v", "shared:/s", life.image, "ls", "/s").stdout.split()
    assert {"0", "1", "2", "3"} <= set(ls)

    def create(_i: int) -> int:
        return life.run("volume", "create", "race", check=False).returncode

    with ThreadPoolExecutor(max_workers=4) as pool:
        assert sorted(pool.map(create, range(4))) == [0, 125, 125, 125]
