"""`sbx cp` and `sbx export` as the unprivileged test user on the busybox image (and
Debian, whose names show the owners): both ways, on stopped and running containers,
owners mapped (in: the container's root, or mapped with -a; out: the user), docker's
path rules, `-` tar streams, a symlink in the container never leading out of it, an
archive with `..` refused whole, and export listing the files with their owners.
"""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
import time
from pathlib import Path

import test_lifecycle_commands as rig
from helpers import SbxRunner, User
from image_rig import ImageLayout, push_layout
from registry_rig import RunningRegistry
from test_lifecycle_commands import Life

pytest_plugins = ["registry_rig", "image_rig"]

life_store = rig.life_store
life = rig.life

SUB = 200000  # sbxtest's subordinate range: container uid N > 0 is host SUB + N - 1


def host_dir(life: Life, name: str) -> Path:
    path = life.root / name
    path.mkdir()
    os.chown(path, life.sbx.user.uid, life.sbx.user.gid)
    return path


def host_file(path: Path, text: str, uid: int, gid: int, mode: int = 0o644) -> Path:
    path.write_text(text)
    os.chown(path, uid, gid)
    path.chmod(mode)
    return path


def run_bytes(life: Life, *args: str, input: bytes | None = None
              ) -> subprocess.CompletedProcess[bytes]:
    user = life.sbx.user
    return subprocess.run(life.sbx.argv(list(args)), capture_output=True, timeout=60,
                          input=input, cwd=life.root,
                          env=user.env({**life.sbx.base_env, **life.env}),
                          user=user.uid, group=user.gid, extra_groups=[])


def tar_members(data: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: m for m in tar}


def cp_out_tar(life: Life, src: str) -> dict[str, tarfile.TarInfo]:
    p = run_bytes(life, "cp", src, "-")
    assert p.returncode == 0, p.stderr.decode()
    return tar_members(p.stdout)


def test_cp_into_a_stopped_container_then_start_sees_it(life: Life) -> None:
    work = host_dir(life, "in")
    mine = host_file(work / "mine.txt", "from the host\n", life.sbx.user.uid,
                     life.sbx.user.gid, 0o640)
    # A file of the user's subordinate id SUB+999, which the container sees as 1000.
    sub = host_file(work / "sub.txt", "sub\n", SUB + 999, SUB + 999)
    life.run("create", "--name", "c", life.image, "sh", "-c",
             "stat -c '%n %u:%g %a' /tmp/mine.txt /tmp/sub.txt /tmp/plain.txt; "
             "cat /tmp/mine.txt")
    life.run("cp", str(mine), "c:/tmp/")
    life.run("cp", "-a", str(sub), "c:/tmp/sub.txt")
    life.run("cp", str(sub), "c:tmp/plain.txt")  # relative to the container's /
    p = life.run("start", "-a", "c")
    assert p.stdout.splitlines() == [
        "/tmp/mine.txt 0:0 640",  # copied in: the container's root
        "/tmp/sub.txt 1000:1000 644",  # -a: the owner as the id map shows it
        "/tmp/plain.txt 0:0 644",
        "from the host",
    ]


def test_cp_out_belongs_to_the_user(life: Life, test_user: User) -> None:
    life.run("run", "--name", "c", life.image, "sh", "-c",
             "mkdir -p /out/sub && echo x > /out/sub/f && chown -R 1000:1000 /out && "
             "chmod 700 /out/sub")
    work = host_dir(life, "out")
    life.run("cp", "c:/out", str(work))  # an existing dir: copied into it
    f = work / "out" / "sub" / "f"
    assert f.read_text() == "x\n"
    for path in (work / "out", work / "out" / "sub", f):
        st = path.stat()
        assert (st.st_uid, st.st_gid) == (test_user.uid, test_user.gid)
    assert (work / "out" / "sub").stat().st_mode & 0o777 == 0o700
    # The same files as a tar stream keep the container's owners.
    members = cp_out_tar(life, "c:/home/tester")
    assert (members["tester/.profile"].uid, members["tester/.profile"].gid) == (1000, 1000)
    assert members["tester"].isdir()


def test_cp_path_rules(life: Life) -> None:
    life.run("run", "--name", "c", life.image, "sh", "-c",
             "mkdir -p /d/inner && echo 1 > /d/one && echo 2 > /d/inner/two && "
             "echo f > /file")
    work = host_dir(life, "rules")
    # dir -> missing dest: created with the dir's content
    life.run("cp", "c:/d", str(work / "new"))
    assert sorted(os.listdir(work / "new")) == ["inner", "one"]
    # dir/. -> existing dir: the content only
    (work / "exists").mkdir()
    os.chown(work / "exists", life.sbx.user.uid, life.sbx.user.gid)
    life.run("cp", "c:/d/.", str(work / "exists"))
    assert sorted(os.listdir(work / "exists")) == ["inner", "one"]
    # file -> existing dir: into it; file -> existing file: overwritten
    life.run("cp", "c:/file", str(work / "exists"))
    assert (work / "exists" / "file").read_text() == "f\n"
    life.run("cp", "c:/d/one", str(work / "exists" / "file"))
    assert (work / "exists" / "file").read_text() == "1\n"
    # errors, each leaving nothing behind
    for args, text in (
        (("c:/d", str(work / "exists" / "file")), "cannot copy a directory to a file"),
        (("c:/file", str(work / "nodir") + "/"), "destination directory must exist"),
        (("c:/file/", str(work / "x")), "not a directory"),
        (("c:/nope", str(work / "x")), "no such file or directory"),
        (("c:/file", str(work / "a" / "b")), "no such directory"),
        (("c:/file", "nosuch:/x"), "copying between containers is not supported"),
        ((str(work), str(work / "y")), "one of SRC and DEST must be a container path"),
        (("nosuch:/x", str(work / "y")), "nosuch"),
    ):
        p = life.run("cp", *args, check=False)
        assert p.returncode != 0 and text in p.stderr, (args, p.stderr)
    assert not (work / "x").exists() and not (work / "nodir").exists()
    # symlinks: copied as links; -L follows them
    life.run("cp", "c:/bin/sh", str(work / "sh-link"))
    assert os.readlink(work / "sh-link") == "busybox"
    life.run("cp", "-L", "c:/bin/sh", str(work / "sh-file"))
    assert (work / "sh-file").is_file() and not (work / "sh-file").is_symlink()


def test_cp_into_a_running_container(life: Life) -> None:
    work = host_dir(life, "running")
    go = host_file(work / "go", "started\n", life.sbx.user.uid, life.sbx.user.gid)
    life.run("run", "-d", "--name", "r", life.image, "sh", "-c",
             "while ! test -e /tmp/go; do sleep 0.05; done; "
             "stat -c '%u:%g' /tmp/go; cat /tmp/go")
    life.run("cp", str(go), "r:/tmp/go")
    assert life.run("wait", "r", timeout=30).stdout == "0\n"
    assert life.run("logs", "r").stdout == "0:0\nstarted\n"


def test_cp_out_of_a_running_container_sees_its_mounts(life: Life) -> None:
    life.run("run", "-d", "--name", "r", "-v", "vol:/vol", life.image, "sh", "-c",
             "echo live > /vol/state; echo upper > /upper; sleep 60")
    life.wait_for(lambda: "state" in cp_out_tar(life, "r:/vol/."), what="/vol/state")
    work = host_dir(life, "live")
    life.run("cp", "r:/vol/state", str(work / "state"))
    life.run("cp", "r:/upper", str(work / "upper"))
    assert (work / "state").read_text() == "live\n"
    assert (work / "upper").read_text() == "upper\n"
    life.run("rm", "-f", "r")


def test_symlinks_in_the_container_never_lead_out(life: Life) -> None:
    work = host_dir(life, "escape")
    target = host_dir(life, "host-target")
    payload = host_file(work / "payload", "p\n", life.sbx.user.uid, life.sbx.user.gid)
    # Links to a host directory's absolute path, and up and out with ../..
    for mode in ("stopped", "running"):
        name = f"e-{mode}"
        script = (f"ln -s {target} /abs; mkdir -p {target}; "
                  f"ln -s ../../../../../../{target} /rel")
        if mode == "running":
            life.run("run", "-d", "--name", name, life.image, "sh", "-c",
                     script + "; exec sleep 60")
            life.wait_for(lambda n=name: run_bytes(life, "cp", f"{n}:/rel", "-").returncode
                          == 0, what="the links")
        else:
            life.run("run", "--name", name, life.image, "sh", "-c", script)
        life.run("cp", str(payload), f"{name}:/abs/")
        life.run("cp", str(payload), f"{name}:/rel/p2")
        assert os.listdir(target) == [], mode
        inside = cp_out_tar(life, f"{name}:{target}")
        assert {"host-target/payload", "host-target/p2"} <= set(inside), mode
        # Copying out through a link reads the container's file, not the host's.
        host_file(target / "secret", "host secret\n", 0, 0, 0o600)
        p = life.run("cp", f"{name}:/abs/secret", str(work / "got"), check=False)
        assert p.returncode != 0 and not (work / "got").exists(), mode
        (target / "secret").unlink()
        life.run("rm", "-f", name)


def test_archive_with_dotdot_is_refused_whole(life: Life) -> None:
    life.run("create", "--name", "c", life.image, "true")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in ("good", "../evil"):
            info = tarfile.TarInfo(name)
            info.size = 2
            tar.addfile(info, io.BytesIO(b"x\n"))
    p = run_bytes(life, "cp", "-", "c:/tmp", input=buf.getvalue())
    assert p.returncode == 125 and b"refusing archive member '../evil'" in p.stderr
    assert "tmp/good" not in cp_out_tar(life, "c:/tmp")
    # A good archive on stdin is extracted into the directory, owned by root, or
    # with -a by the ids it holds.
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("dir/f")
        info.size, info.uid, info.gid = 2, 1000, 1000
        tar.addfile(info, io.BytesIO(b"y\n"))
    assert run_bytes(life, "cp", "-", "c:/tmp", input=buf.getvalue()).returncode == 0
    assert run_bytes(life, "cp", "-a", "-", "c:/home", input=buf.getvalue()).returncode == 0
    assert cp_out_tar(life, "c:/tmp/dir/f")["f"].uid == 0
    assert cp_out_tar(life, "c:/home/dir/f")["f"].uid == 1000
    bad = run_bytes(life, "cp", "-", "c:/nowhere", input=buf.getvalue())
    assert bad.returncode == 125 and b"must be an existing directory" in bad.stderr


def test_export_lists_the_merged_root_with_owners(life: Life) -> None:
    life.run("run", "--name", "x", life.image, "sh", "-c",
             "echo made > /made; rm /data/b; echo v > /vol/in-volume")
    p = run_bytes(life, "export", "x")
    assert p.returncode == 0, p.stderr.decode()
    members = tar_members(p.stdout)
    assert "made" in members and members["made"].uid == 0
    assert (members["home/tester/.profile"].uid, members["home/tester/.profile"].gid) == (
        1000, 1000)
    assert members["bin/busybox"].isfile() and members["bin/sh"].issym()
    assert "data/b" not in members and "data/a" not in members and "data/c" in members
    assert "vol" in members and "vol/in-volume" not in members  # volumes are not exported
    assert not any(n.startswith(("/", "..")) for n in members)
    out = life.root / "x.tar"
    life.run("export", "-o", str(out), "x")
    listing = subprocess.run(["tar", "tvf", str(out)], capture_output=True, text=True,
                             check=True).stdout
    assert "1000/1000" in listing and "home/tester/.profile" in listing
    # A running container exports the same files, without its mounts' content.
    life.run("run", "-d", "--name", "live", life.image, "sleep", "60")
    running = tar_members(run_bytes(life, "export", "live").stdout)
    assert "bin/busybox" in running and "proc" in running
    assert not any(n.startswith("proc/") or n.startswith("dev/") for n in running)


def test_export_refuses_a_terminal(life: Life) -> None:
    life.run("create", "--name", "x", life.image, "true")
    pid, master = life.sbx.spawn_pty("export", "x", cwd=life.root, env=life.env)
    out = b""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    _pid, status = os.waitpid(pid, 0)
    os.close(master)
    assert os.waitstatus_to_exitcode(status) == 125
    assert b"refusing to write an archive to a terminal" in out and b"-o FILE" in out


def test_cp_on_debian_shows_owner_names(sbx: SbxRunner, registry: RunningRegistry,
                                        debian_layout: ImageLayout, test_user: User,
                                        workdir: Path) -> None:
    ref = f"{registry.host}/sbx/debian:cp"
    push_layout(debian_layout, registry.host, "sbx/debian:cp")
    env = {"XDG_RUNTIME_DIR": str(workdir / "run")}
    (workdir / "run").mkdir(mode=0o700)
    os.chown(workdir / "run", test_user.uid, test_user.gid)
    host_file(workdir / "in.txt", "debian\n", test_user.uid, test_user.gid)
    p = sbx.run("pull", "-q", "--tls-verify=false", ref, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    assert sbx.run("create", "--name", "deb-cp", ref, "sh", "-c",
                   "ls -l /root/in.txt /srv/in.txt | cut -d' ' -f3,4",
                   env=env).returncode == 0
    try:
        assert sbx.run("cp", str(workdir / "in.txt"), "deb-cp:/root/", env=env).returncode == 0
        # -a maps the user to the container's root too: the same owner by another route
        assert sbx.run("cp", "-a", str(workdir / "in.txt"), "deb-cp:/srv/",
                       env=env).returncode == 0
        p = sbx.run("start", "-a", "deb-cp", env=env)
        assert p.stdout.split() == ["root", "root", "root", "root"], p.stdout + p.stderr
        out = workdir / "passwd"
        assert sbx.run("cp", "deb-cp:/etc/passwd", str(out), env=env).returncode == 0
        assert out.stat().st_uid == test_user.uid and "root:x:0:0" in out.read_text()
    finally:
        sbx.run("rm", "-f", "deb-cp", env=env)


def test_cp_on_every_storage_driver(life: Life, test_user: User) -> None:
    """A stopped container's root is mounted by its own driver for cp (the fuse
    driver's sbx-fs included, and gone again afterwards) and keep-id's map is used."""
    from helpers import processes_with

    work = host_dir(life, "drivers")
    payload = host_file(work / "p", "payload\n", test_user.uid, test_user.gid)
    for driver, userns in (("overlay", ""), ("fuse", "keep-id"), ("vfs", "")):
        name = f"d-{driver}"
        life.run("create", "--storage-driver", driver, f"--userns={userns}", "--name", name,
                 life.image, "sh", "-c", "stat -c %u /in; cat /in")
        life.run("cp", str(payload), f"{name}:/in")
        out = life.run("start", "-a", name).stdout.split()
        assert out == ["0", "payload"], (driver, out)
        life.run("cp", f"{name}:/home/tester/.profile", str(work / driver))
        assert (work / driver).stat().st_uid == test_user.uid
        assert "tester$" in (work / driver).read_text()
        life.wait_for(lambda: processes_with(test_user, str(life.root)) == [], timeout=10,
                      what=f"no sbx-fs left by cp ({driver})")



def test_export_into_a_closed_pipe_ends_quietly(life: Life) -> None:
    """`sbx export C | head -c 1`: the reader goes away early; sbx ends as cat(1)
    does on SIGPIPE (141), without an error message."""
    life.run("create", "--name", "x", life.image, "true")
    reader_r, writer = os.pipe()
    p = life.sbx.popen("export", "x", cwd=life.root, env=life.env, stdout=writer,
                       stderr=subprocess.PIPE)
    os.close(writer)
    assert os.read(reader_r, 1)
    os.close(reader_r)  # the reader is gone
    _out, err = p.communicate(timeout=60)
    assert (p.returncode, err) == (141, b"")
