"""`sbx lock [PROFILE...]`: pin profiles' images by digest in ./sbx.lock.

With no PROFILE, every profile of the project (./sbx.toml and ./.sbx/) is locked;
naming one updates its entry and keeps the others (as `cargo update -p`). The lock
itself is sandbox/profiles/lock.py's; this module supplies the `resolve_digest`
it takes, which is the only code here that reaches the image store or a registry:

- an image already in the local store is pinned to the manifest digest stored for
  it (what `sbx run` would use now, offline too);
- else, and always with --refresh, the registry is asked with a HEAD request for
  the tag (docker's `docker buildx imagetools inspect` does the same): the digest
  of what the tag names there, a multi-platform index when it is one, which pins
  the image for every platform.

`--check` writes nothing and exits 125 when the lock disagrees with the profiles
(for CI, as `cargo build --locked` fails).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

import click

from sandbox.cli import handle_errors
from sandbox.cli.options import tls_verify_option
from sandbox.errors import EXIT_SBX, SbxError, UsageError


def store_resolver(tls_verify: bool, refresh: bool) -> Callable[[str], str]:
    """resolve_digest for lock.py: the local store first (unless refresh), then the
    registry."""
    state: dict[str, object] = {}

    def resolve(text: str) -> str:
        from sandbox.images.pull import connect, find_local
        from sandbox.images.store import StoreError
        from sandbox.registry.reference import parse_reference

        ref = parse_reference(text)
        if not refresh:
            try:
                if "store" not in state:
                    from sandbox.cli.images import ImageContext

                    state["store"] = ImageContext().store
                record = find_local(state["store"], text)  # type: ignore[arg-type]
                return record.manifest_digest
            except StoreError:
                pass  # not stored (or no store yet): ask the registry
        try:
            client = connect(ref.registry, ref.repository, tls_verify=tls_verify)
            desc = client.head_manifest(ref.repository, ref.manifest_reference)
        except SbxError as err:
            raise SbxError(f"resolving {text}: {err.message}", hint=err.hint) from None
        if desc is None:
            raise SbxError(f"{text}: no such image in {ref.registry}",
                           hint="check the profile's image name and tag")
        return desc.digest

    return resolve


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("names", nargs=-1, metavar="[PROFILE]...")
@tls_verify_option
@click.option("--refresh", is_flag=True,
              help="Ask the registry even for images in the local store.")
@click.option("--check", is_flag=True,
              help="Write nothing; exit 125 if sbx.lock disagrees with the profiles.")
@handle_errors
def lock(names: tuple[str, ...], tls_verify: bool, refresh: bool, check: bool) -> None:
    """Pin profiles' images by digest, and their setup layers' keys, in sbx.lock."""
    from sandbox.profiles import lock as lockmod
    from sandbox.profiles.load import RANK_PROJECT, RANK_PROJECT_DIR, Search

    search = Search()
    if names:
        profiles = [search.load(n) for n in names]
    else:
        profiles = []
        for item in search.all():
            if item.rank not in (RANK_PROJECT, RANK_PROJECT_DIR) or item.shadowed:
                continue
            if item.error is not None:
                raise item.error
            if item.found is not None:
                profiles.append(search.load_found(item.found))
        if not profiles:
            raise UsageError("no profiles in this project to lock (no sbx.toml or .sbx/)",
                             hint="name one (`sbx lock python`), or `sbx profile init`")
    path = lockmod.lock_path(search.cwd)
    current = lockmod.read_lock(path)
    if check:
        problems = [m for p in profiles for m in lockmod.check_lock(p, current, search.cwd)]
        for message in problems:
            click.echo(f"sbx: {message}", err=True)
        if problems:
            sys.exit(EXIT_SBX)
        click.echo(f"{os.path.basename(path)} is up to date")
        return
    new = lockmod.lock_profiles(profiles, search.cwd, store_resolver(tls_verify, refresh),
                                current)
    new.write(path)
    for p in profiles:
        entry = new.entries[p.name]
        pinned = entry.get("digest") or entry.get("bootstrap", "")
        what = f"{entry['image']}@{pinned}" if "image" in entry else f"bootstrap {pinned}"
        click.echo(f"{p.name}: {what}")
