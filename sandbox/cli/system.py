"""`sbx system check`, `sbx info` (and `sbx system info`): show how sbx sees the host.

Renders the probes of `sandbox.system.checks`; the probes themselves live there and
import nothing from here. `sandbox.system` is imported inside the commands, so that
`sbx --help` and other verbs never load it.

`system check` exits 1 when a required check fails, like a linter: a failed check is
a finding about the host, not a failure of sbx (which would be 125).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

from sandbox.cli import handle_errors

if TYPE_CHECKING:
    from sandbox.system.checks import Check

EXIT_CHECK_FAILED = 1

_MARKS = {"ok": "ok", "warn": "warn", "fail": "FAIL"}

_format_option = click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="Output format.",
)


@click.group()
def system() -> None:
    """Check and describe the host."""


def render_checks(checks: Sequence[Check]) -> str:
    """One row per check, with its fix on an indented line when it is not ok."""
    name_width = max((len(c.name) for c in checks), default=0)
    mark_width = max(len(m) for m in _MARKS.values())
    indent = " " * (mark_width + 2)
    lines = []
    for c in checks:
        lines.append(f"{_MARKS[c.status]:<{mark_width}}  {c.name:<{name_width}}  {c.detail}")
        if c.status != "ok" and c.fix:
            lines.append(f"{indent}{'':<{name_width}}  fix: {c.fix}")
    counts = {s: sum(1 for c in checks if c.status == s) for s in _MARKS}
    summary = (
        f"{len(checks)} checks: {counts['ok']} ok, {counts['warn']} warn, {counts['fail']} failed"
    )
    if any(c.required and c.status == "fail" for c in checks):
        summary += ": sbx cannot run containers here"
    lines.append("")
    lines.append(summary)
    return "\n".join(lines)


def _check(fmt: str) -> None:
    from sandbox.system import checks as probes

    results = probes.run_checks()
    if fmt == "json":
        click.echo(json.dumps([c.as_dict() for c in results], indent=2))
    else:
        click.echo(render_checks(results))
    if probes.failed_required(results):
        # sys.exit rather than ctx.exit: sbx's main() runs click with
        # standalone_mode=False, where click returns an Exit's code instead of exiting.
        sys.exit(EXIT_CHECK_FAILED)


@system.command("check")
@_format_option
@handle_errors
def check(fmt: str) -> None:
    """Check that this host and user can run rootless containers.

    Exits 1 when a required check fails.
    """
    _check(fmt)


def render_info(data: dict[str, Any], depth: int = 0) -> str:
    """A nested dict as indented `key: value` lines, as `podman info` shows it."""
    pad = "  " * depth
    lines = []
    for key, value in data.items():
        if isinstance(value, dict):
            lines.append(f"{pad}{key}:")
            lines.append(render_info(value, depth + 1))
        elif isinstance(value, list):
            items = [_inline(v) for v in value]
            lines.append(f"{pad}{key}: {', '.join(items) if items else '[]'}")
        else:
            lines.append(f"{pad}{key}: {'-' if value is None else value}")
    return "\n".join(lines)


def _inline(value: Any) -> str:
    if isinstance(value, dict) and set(value) == {"start", "count"}:
        # An id range: the start-end spelling of usermod --add-subuids.
        return f"{value['start']}-{value['start'] + value['count'] - 1}"
    if isinstance(value, dict):
        return " ".join(f"{k}={v}" for k, v in value.items())
    return str(value)


@click.command()
@_format_option
@click.option("--check", "run_check", is_flag=True, help="Same as `sbx system check`.")
@handle_errors
def info(fmt: str, run_check: bool) -> None:
    """Show how sbx sees this host: versions, cgroups, id ranges, directories."""
    if run_check:
        _check(fmt)
        return
    from sandbox.system import checks as probes

    data = probes.info()
    if fmt == "json":
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo(render_info(data))


system.add_command(info, "info")
