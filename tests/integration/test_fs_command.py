"""The sbx-fs command: fuse-overlayfs's command line, daemonizing, errors, exit.

Run as the test user inside a user namespace, as podman runs a mount program.
"""

from __future__ import annotations

from pathlib import Path

from fs_rig import run_driver
from helpers import User

LAYERS = {"l1": [{"path": "f", "data": "one"}], "l2": [{"path": "g", "data": "two"}]}

# Helpers shared by the snippets below.
SETUP = (
    "import signal\n"
    "def sbx(*args, **kw):\n"
    "    p = subprocess.run([SBX, *args], capture_output=True, text=True, timeout=30, **kw)\n"
    "    return p.returncode, p.stderr\n"
    "def mounted(at):\n"
    "    with open('/proc/self/mountinfo') as f:\n"
    "        return any(line.split()[4] == at for line in f)\n"
    "def fs_type(at):\n"
    "    with open('/proc/self/mountinfo') as f:\n"
    "        for line in f:\n"
    "            if line.split()[4] == at:\n"
    "                return line.split(' - ')[1].split()[0]\n"
    "def servers(at):\n"
    "    out = []\n"
    "    for pid in os.listdir('/proc'):\n"
    "        try:\n"
    "            with open(f'/proc/{pid}/cmdline', 'rb') as f:\n"
    "                args = f.read().split(b'\\0')\n"
    "        except OSError:\n"
    "            continue\n"
    "        if at.encode() in args and any(b'sbx-fs' in a or a == b'fs' for a in args):\n"
    "            out.append(int(pid))\n"
    "    return out\n"
    "def gone(at):\n"
    "    for _ in range(100):\n"
    "        if not servers(at):\n"
    "            return True\n"
    "        time.sleep(0.05)\n"
    "    return False\n"
    "import sys\n"
    "SBX = sbx_fs\n"
    "LOW = L['l1'] + ':' + L['l2']\n"
    "RW = f'lowerdir={LOW},upperdir={u},workdir={w}'"
)


def run(user: User, workdir: Path, ops: list[str]) -> list[object]:
    return run_driver(user, workdir, [SETUP, *ops], LAYERS)[1:]


def test_daemonizes_and_returns_once_mounted(test_user: User, workdir: Path) -> None:
    r = run(test_user, workdir, [
        "rc = sbx('-o', RW, m); (rc, mounted(m), fs_type(m), read(m + '/g'))",
        "len(servers(m))",
        # the caller's pipes are not held open by the daemon (podman waits on them)
        "p = subprocess.Popen([SBX, '-o', RW, m + '2'], stdout=subprocess.PIPE,"
        " stderr=subprocess.PIPE) if os.mkdir(m + '2') is None else None;"
        " out, errs = p.communicate(timeout=10); (p.returncode, out, errs)",
        # podman unmounts with fusermount3 -u; the server then exits
        "subprocess.run(['fusermount3', '-u', m + '2'], check=True); gone(m + '2')",
        "subprocess.run(['umount', m], check=True); (mounted(m), gone(m))",
    ])
    assert r[0] == [[0, ""], True, "fuse.sbx-fs", "two"]
    assert r[1] == 2  # the server and its reaper (fs/reaper.py); both gone at unmount
    assert r[2] == [0, "", ""]
    assert r[3] is True
    assert r[4] == [False, True]


def test_foreground_and_signals(test_user: User, workdir: Path) -> None:
    r = run(test_user, workdir, [
        "p = subprocess.Popen([SBX, '-f', '-o', RW, m])\n"
        "for _ in range(200):\n"
        "    if mounted(m): break\n"
        "    time.sleep(0.02)\n"
        "(mounted(m), p.poll())",
        "p.send_signal(signal.SIGTERM); (p.wait(timeout=10), mounted(m))",
        # python -m fs is the same command
        "p = subprocess.Popen([sys.executable, '-m', 'fs', '-f', '-o', RW, m])\n"
        "for _ in range(200):\n"
        "    if mounted(m): break\n"
        "    time.sleep(0.02)\n"
        "read(m + '/f')",
        "p.send_signal(signal.SIGINT); (p.wait(timeout=10), mounted(m))",
    ])
    assert r[0] == [True, None]
    assert r[1] == [0, False]
    assert r[2] == "one"
    assert r[3] == [0, False]


def test_errors_exit_1_with_a_message(test_user: User, workdir: Path) -> None:
    r = run(test_user, workdir, [
        "sbx('-o', f'lowerdir={base}/nope', m)",
        "sbx('-o', f'lowerdir={LOW}', base + '/no-mountpoint')",
        "sbx('-o', f'lowerdir={LOW},upperdir={u}', m)",
        "sbx(m)",
        "sbx('-o', f'lowerdir={LOW}')",
        "sbx('-o', f'lowerdir={LOW},uidmapping=0:1', m)",
        "sbx('-o', 'lowerdir=//plugin/x/y', m)",
        # the work directory must be on the upper one's filesystem
        "os.mkdir(base + '/t'); subprocess.run(['mount', '-t', 'tmpfs', 'tmpfs', base + '/t'],"
        " check=True); sbx('-o', f'lowerdir={LOW},upperdir={u},workdir={base}/t/w', m)",
        "mounted(m)",
        "(sbx('--help')[0], subprocess.run([SBX, '--version'], capture_output=True,"
        " text=True).stdout.split(chr(10))[0])",
    ])
    assert r[0][0] == 1 and "nope" in r[0][1]
    assert r[1][0] == 1 and "no-mountpoint" in r[1][1]
    assert r[2] == [1, r[2][1]] and "workdir not specified" in r[2][1]
    assert r[3][0] == 1 and "no lowerdir" in r[3][1]
    assert r[4][0] == 1 and "no mountpoint" in r[4][1]
    assert r[5][0] == 1 and "invalid mapping" in r[5][1]
    assert r[6][0] == 1 and "plugins" in r[6][1]
    assert r[7][0] == 1 and "same filesystem" in r[7][1]
    assert r[8] is False
    assert r[9][0] == 0 and r[9][1].startswith("sbx-fs: version ")


def test_accepts_what_podman_passes(test_user: User, workdir: Path) -> None:
    """containers/storage's options (overlay.go: mountopt, optsAppendMappings,
    force_mask's xattr_permissions=2, volatile, SELinux context with a comma in
    quotes), relative layer paths (its l/ links), read-only layer mounts."""
    r = run(test_user, workdir, [
        "os.symlink(L['l1'], base + '/link1');"
        " opts = ('lowerdir=link1:l2,upperdir=u,workdir=w,'"
        " 'context=\"system_u:object_r:container_file_t:s0:c1,c2\",noacl,fsync=0,'"
        " 'static_nlink,plugins=,volatile,userxattr,threaded=1,fast_ino=1,'"
        " 'uidmapping=:0:0:1:1:1:1000,gidmapping=:0:0:1:1:1:1000,xattr_permissions=2,bogus');"
        " rc = sbx('-o', opts, 'm', cwd=base); (rc, read(m + '/f'))",
        "write(m + '/new', 'n'); (xattrs(u + '/new'), sorted(xattrs(u)))",
        "subprocess.run(['umount', m], check=True); gone(m)",
        # a read-only mount, as podman asks for a layer it only reads
        "rc = sbx('-o', f'lowerdir={u}:{LOW},ro', m); (rc, sorted(os.listdir(m)))",
        "write(m + '/x', 'x')",
        "subprocess.run(['umount', m], check=True); gone(m)",
    ])
    assert r[0] == [[0, "sbx-fs: unknown argument ignored: bogus\n"], "one"]
    assert r[1] == [{"user.fuseoverlayfs.override_stat": "0:0:0644:file"},
                    ["user.fuseoverlayfs.override_stat"]]
    assert r[2] is True
    assert r[3] == [[0, ""], ["f", "g", "new"]]
    assert r[4] == {"errno": "EROFS"}
    assert r[5] is True
