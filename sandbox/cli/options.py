"""Options shared by several verbs, kept in a module with no heavy imports so that
`sbx run` stays fast."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click


def tls_verify_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--tls-verify[=BOOL], as podman spells it (--tls-verify=false)."""
    return click.option(
        "--tls-verify", "tls_verify", type=click.BOOL, default=True, is_flag=False,
        flag_value=True, metavar="BOOL",
        help="Verify the registry's TLS certificate (--tls-verify=false to skip; "
        "plain HTTP is then allowed too).",
    )(fn)
