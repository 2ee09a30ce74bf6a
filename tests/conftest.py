"""Fixtures and hooks of the test rig; the machinery lives in tests/helpers.py."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import (
    NOSUB_USER,
    NOT_ROOT,
    TEST_USER,
    SbxRunner,
    User,
    build_busybox_rootfs,
    lookup_user,
    make_tmp_dir,
    make_user_dir,
    missing_user_reason,
    remove_tree,
    skip_is_failure,
    skip_reason,
)

INTEGRATION_DIR = Path(__file__).parent / "integration"


def pytest_configure(config: pytest.Config) -> None:
    # Also registered in pyproject.toml; here too so the rig stands on its own.
    config.addinivalue_line(
        "markers", "integration: runs sbx for real as the unprivileged test user"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Everything under tests/integration is an integration test, marked or not,
    # so that a forgotten marker cannot hide a skip from CI.
    for item in items:
        if INTEGRATION_DIR in Path(item.path).parents:
            item.add_marker(pytest.mark.integration)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if not report.skipped or hasattr(report, "wasxfail"):
        return
    is_integration = item.get_closest_marker("integration") is not None
    if skip_is_failure(os.environ.get("CI"), is_integration):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI: {skip_reason(report.longrepr)}"


def _user(name: str) -> User:
    if os.geteuid() != 0:
        pytest.skip(NOT_ROOT)
    user = lookup_user(name)
    if user is None:
        pytest.skip(missing_user_reason(name))
    return user


@pytest.fixture(scope="session")
def test_user() -> User:
    return _user(TEST_USER)


@pytest.fixture(scope="session")
def nosub_user() -> User:
    return _user(NOSUB_USER)


def _data_home(session_tmp: Path, user: User) -> Path:
    path = session_tmp / f"data-{user.name}"
    if not path.exists():
        path.mkdir(mode=0o700)
        user.chown(path)
    return path


@pytest.fixture
def sbx(test_user: User, session_tmp: Path) -> SbxRunner:
    """sbx as the test user, with this session's own data directory (images,
    containers), removed with the session."""
    return SbxRunner(test_user, base_env={
        "XDG_DATA_HOME": str(_data_home(session_tmp, test_user))})


@pytest.fixture
def sbx_nosub(nosub_user: User, session_tmp: Path) -> SbxRunner:
    return SbxRunner(nosub_user, base_env={
        "XDG_DATA_HOME": str(_data_home(session_tmp, nosub_user))})


@pytest.fixture
def workdir(test_user: User) -> Iterator[Path]:
    """A fresh directory owned by the test user, removed afterwards."""
    path = make_tmp_dir("sbx-work-")
    test_user.chown(path)
    yield path
    remove_tree(path)


@pytest.fixture(scope="session")
def session_tmp() -> Iterator[Path]:
    """/tmp/sbx-tests-XXXX (0755), shared by the session's fixtures."""
    path = make_tmp_dir("sbx-tests-")
    yield path
    remove_tree(path)


@pytest.fixture(scope="session")
def busybox_rootfs(test_user: User, session_tmp: Path) -> Path:
    """A busybox rootfs whose files belong to the test user."""
    home = make_user_dir(session_tmp, test_user.name, test_user)
    return build_busybox_rootfs(test_user, home / "rootfs")


@pytest.fixture(scope="session")
def nosub_rootfs(nosub_user: User, session_tmp: Path) -> Path:
    """A busybox rootfs whose files belong to the user without subordinate ids."""
    home = make_user_dir(session_tmp, nosub_user.name, nosub_user)
    return build_busybox_rootfs(nosub_user, home / "rootfs")
