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


def read_env_file(path: str) -> tuple[str, str]:
    """--env-file PATH: (path, text), for specgen.parse_env_file (run, create, exec)."""
    from sandbox.errors import UsageError

    try:
        with open(path, encoding="utf-8") as f:
            return path, f.read()
    except OSError as exc:
        raise UsageError(f"can't read env file {path}: {exc.strerror}",
                         hint="--env-file takes a file of KEY=VALUE lines") from None


def parse_labels(labels: tuple[str, ...] | list[str]) -> dict[str, str]:
    """--label KEY=VALUE (or KEY) options as a dict (run, create, volume create)."""
    from sandbox.errors import UsageError

    out = {}
    for item in labels:
        key, _, value = item.partition("=")
        if not key:
            raise UsageError(f"invalid label {item!r}", hint="--label KEY=VALUE (or KEY)")
        out[key] = value
    return out
