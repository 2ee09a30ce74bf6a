"""`sbx shell PROFILE`: an interactive login shell in a profile (docs/profiles.md).

The same as `sbx run PROFILE` with the profile's `shell -l` as the command, whatever
the profile's `command` says: what `toolbox enter` and `distrobox enter` give.
"""

from __future__ import annotations

from typing import Any

import click

from sandbox.cli import handle_errors
from sandbox.cli.run import create_options


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@create_options
@click.option("--locked", is_flag=True,
              help="Fail unless sbx.lock agrees with the profile.")
@click.argument("profile")
@handle_errors
def shell(locked: bool, profile: str, **opts: Any) -> None:
    """Enter PROFILE with an interactive login shell, in this folder."""
    from sandbox.cli.profile_run import run_profile

    run_profile(profile, (), opts, detach=False, locked=locked, shell=True)
