"""`sbx generate kube PROFILE`: print a Kubernetes Pod manifest for a profile.

As `podman generate kube` does for a container. The mapping and its notes are
sandbox/profiles/kube.py's; the image is pinned by the digest in ./sbx.lock when the
lock agrees with the profile. Notes (what has no Kubernetes equivalent) go into the
YAML as comments, or to stderr with --format json.
"""

from __future__ import annotations

import json
import os

import click

from sandbox.cli import handle_errors, warn


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def generate() -> None:
    """Generate files for other tools from profiles."""


@generate.command()
@click.argument("name", metavar="PROFILE")
@click.option("--format", "fmt", type=click.Choice(["yaml", "json"]), default="yaml",
              show_default=True, help="Output format.")
@handle_errors
def kube(name: str, fmt: str) -> None:
    """Print a Kubernetes Pod manifest for PROFILE (a name or a .toml file)."""
    from sandbox.profiles.kube import pod_manifest, to_yaml
    from sandbox.profiles.load import Search
    from sandbox.profiles.lock import lock_path, read_lock

    search = Search()
    prof = search.load(name)
    lock = read_lock(lock_path(search.cwd))
    pod, notes, comments = pod_manifest(prof, search.cwd, dict(os.environ), lock)
    if fmt == "json":
        for note in notes:
            warn(note)
        click.echo(json.dumps(pod, indent=4, ensure_ascii=False))
    else:
        click.echo(to_yaml(pod, notes, comments), nl=False)
