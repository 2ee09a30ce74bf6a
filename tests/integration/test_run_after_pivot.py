"""Failures and features that happen after pivot_root, when the host's Python library
is no longer visible to the container's setup process: errors must still reach the
user as a message (not a traceback), and nothing may unwind into sbx's own stack."""


def test_unmapped_group_after_pivot_is_a_clear_error(sbx, busybox_rootfs):
    r = sbx.run("run", "--rootfs", busybox_rootfs, "-u", "0:99999999", "true")
    assert r.returncode == 125
    assert "switch to gid 99999999" in r.stderr
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout


def test_missing_command_after_pivot_is_127_once(sbx, busybox_rootfs):
    r = sbx.run("run", "--rootfs", busybox_rootfs, "no-such-cmd")
    assert r.returncode == 127
    # One message, printed once by the CLI: no child ever returns into sbx's code.
    assert r.stderr.count("can't execute 'no-such-cmd'") == 1
    assert "Traceback" not in r.stderr


def test_tty_setup_after_pivot(sbx, busybox_rootfs):
    import os

    pid, master = sbx.spawn_pty("run", "-t", "--rootfs", busybox_rootfs, "tty")
    out = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    _, status = os.waitpid(pid, 0)
    os.close(master)
    assert os.waitstatus_to_exitcode(status) == 0, out
    assert b"/dev/pts/0" in out
    assert b"Traceback" not in out
