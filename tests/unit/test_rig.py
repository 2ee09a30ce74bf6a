"""The test rig's own rules: in CI a skipped integration test is a failure."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import skip_is_failure, skip_reason

TESTS = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("ci_env", "is_integration", "expected"),
    [
        ("true", True, True),
        ("true", False, False),
        (None, True, False),
        ("false", True, False),
        ("1", True, False),
    ],
)
def test_skip_is_failure(ci_env: str | None, is_integration: bool, expected: bool) -> None:
    assert skip_is_failure(ci_env, is_integration) is expected


def test_skip_reason_from_a_skip_report() -> None:
    assert skip_reason(("/x/test_a.py", 3, "Skipped: user sbxtest missing")) == (
        "user sbxtest missing"
    )


def run_inner_pytest(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    """Run pytest on a copy of the rig with one skipping integration and unit test."""
    shutil.copy(TESTS / "conftest.py", tmp_path)
    shutil.copy(TESTS / "helpers.py", tmp_path)
    for kind in ("integration", "unit"):
        (tmp_path / kind).mkdir()
        (tmp_path / kind / f"test_{kind}.py").write_text(
            f"import pytest\n\ndef test_{kind}():\n    pytest.skip('no {kind} here')\n"
        )
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_in_ci_a_skipped_integration_test_fails(tmp_path: Path) -> None:
    result = run_inner_pytest(tmp_path, ci="true")
    assert result.returncode == 1, result.stdout
    assert "skipped in CI: no integration here" in result.stdout
    assert "1 failed, 1 skipped" in result.stdout


def test_outside_ci_skips_stay_skips(tmp_path: Path) -> None:
    result = run_inner_pytest(tmp_path, ci=None)
    assert result.returncode == 0, result.stdout
    assert "2 skipped" in result.stdout
