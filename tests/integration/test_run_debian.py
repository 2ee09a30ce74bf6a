"""A real Debian image (mmdebstrap, with python3), pushed by skopeo to a real
registry, pulled and run by sbx as the unprivileged test user."""

from __future__ import annotations

import pytest
from helpers import SbxRunner
from image_rig import ImageLayout, push_layout
from registry_rig import RunningRegistry

pytest_plugins = ["registry_rig", "image_rig"]


@pytest.fixture(scope="module")
def debian_ref(registry: RunningRegistry, debian_layout: ImageLayout) -> str:
    push_layout(debian_layout, registry.host, "sbx/debian:python3")
    return f"{registry.host}/sbx/debian:python3"


def test_debian_python_runs_with_real_owners(sbx: SbxRunner, debian_ref: str) -> None:
    r = sbx.run("run", "--tls-verify=false", debian_ref, "python3", "-c",
                "import os, pwd; print(pwd.getpwuid(os.getuid()).pw_name); "
                "print(os.stat('/var/log').st_gid == 0, os.stat('/usr/bin').st_uid == 0); "
                "import sqlite3, json; print(json.dumps({'ok': True}))",
                timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:3] == ["root", "True True", '{"ok": true}']


def test_debian_apt_sees_its_packages_and_users(sbx: SbxRunner, debian_ref: str) -> None:
    r = sbx.run("run", "--tls-verify=false", "-u", "nobody", debian_ref, "sh", "-c",
                "id -un; dpkg-query -W -f='${Status}\\n' python3", timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:2] == ["nobody", "install ok installed"]
