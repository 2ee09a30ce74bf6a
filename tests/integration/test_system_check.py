"""`sbx system check` run for real as the unprivileged test user.

The test setup (scripts/test.sh) makes the user `sbxtest` with /etc/subuid and
/etc/subgid ranges and installs Debian's uidmap; on such a host the id-mapping helpers
and user namespaces must check out. Runs `python -m sandbox` from this checkout with
the interpreter that runs pytest, dropping to the user through subprocess's
user/group arguments (the suite starts as root).
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
TEST_USER = "sbxtest"


def run_check_as(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `python -m sandbox system check ARGS` as user `name`, with a login-like env."""
    if os.geteuid() != 0:
        pytest.skip(
            "integration tests start as root and drop to the test user; run scripts/test.sh"
        )
    try:
        user = pwd.getpwnam(name)
    except KeyError:
        pytest.skip(f"user {name} missing: run scripts/test.sh, which creates it")
    try:
        return _run_as(user, args)
    except PermissionError as exc:
        pytest.fail(
            f"{exc.filename} is not executable by {name}: run pytest with an interpreter "
            "every user can run (scripts/test.sh uses the venv it installs sbx into)"
        )


def _run_as(user: pwd.struct_passwd, args: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sandbox", "system", "check", *args],
        capture_output=True,
        text=True,
        timeout=60,
        # The user's own home: the checkout's directory need not be theirs.
        cwd=user.pw_dir,
        env={
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": user.pw_dir,
            "PYTHONPATH": str(REPO),
        },
        user=user.pw_uid,
        group=user.pw_gid,
        # Without this the child keeps root's supplementary groups.
        extra_groups=os.getgrouplist(user.pw_name, user.pw_gid),
    )


def checks_by_name(result: subprocess.CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    assert result.returncode in (0, 1), result.stderr
    try:
        rows = json.loads(result.stdout)
    except json.JSONDecodeError:
        pytest.fail(
            f"sbx system check --format json printed no JSON (exit {result.returncode}); "
            f"is {sys.executable} runnable by {TEST_USER}?\nstdout: {result.stdout}\n"
            f"stderr: {result.stderr}"
        )
    return {row["name"]: row for row in rows}


def test_system_check_as_test_user() -> None:
    result = run_check_as(TEST_USER, "--format", "json")
    checks = checks_by_name(result)
    assert set(checks) >= {"newuidmap", "newgidmap", "subuid", "subgid", "userns"}
    for name in ("newuidmap", "newgidmap", "subuid", "subgid", "userns"):
        assert checks[name]["status"] == "ok", checks[name]
    # sbxtest has ranges, so the helpers are required; userns always is.
    assert checks["newuidmap"]["required"] and checks["userns"]["required"]
    assert f"{TEST_USER} (uid {pwd.getpwnam(TEST_USER).pw_uid})" in checks["subuid"]["detail"]
    # No required check failed, so the exit status is 0.
    assert result.returncode == 0, result.stdout


def test_system_check_table_as_test_user() -> None:
    result = run_check_as(TEST_USER)
    assert result.returncode == 0, result.stdout + result.stderr
    # Rows start with a status mark; fix lines are indented, the summary is last.
    rows = {
        fields[1]: fields[0]
        for fields in map(str.split, result.stdout.splitlines())
        if fields and fields[0] in ("ok", "warn", "FAIL")
    }
    assert rows["newuidmap"] == "ok"
    assert rows["userns"] == "ok"
