"""`sbx profile list|show|validate|init`: look at, check and start profiles.

The library is sandbox/profiles (discovery in load.py, keys in schema.py); this
module only parses options, prints and picks exit codes: 0, or 125 when a profile
has problems (podman's code for "the tool failed"), with every problem listed.
`sbx run PROFILE` belongs to the run half (cli/profile_run.py), and so does the work
of `sbx profile rebuild`.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import click

from sandbox.cli import handle_errors, warn
from sandbox.cli.options import tls_verify_option
from sandbox.errors import EXIT_SBX, SbxError, UsageError

_FORMATS = click.Choice(["table", "json"])


def print_table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> None:
    """Columns padded to their widest cell (podman's tabwriter layout)."""
    everything = [list(header)] + [list(r) for r in rows]
    widths = [max(len(r[i]) for r in everything) for i in range(len(header))]
    for r in everything:
        cells = [c.ljust(w) for c, w in zip(r[:-1], widths[:-1], strict=True)] + [r[-1]]
        click.echo("  ".join(cells).rstrip())


def source_text(path: str | None, origin: str, cwd: str) -> str:
    """A profile's file as the SOURCE column shows it."""
    if path is None:
        return "-"
    if origin == "bundled":
        return "(bundled)"
    rel = os.path.relpath(path, cwd)
    if not rel.startswith(".."):
        return rel
    home = os.environ.get("HOME", "")
    if home and path.startswith(home.rstrip("/") + "/"):
        return "~" + path[len(home.rstrip("/")):]
    return path


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def profile() -> None:
    """Profiles: TOML development environments (docs/profiles.md)."""


@profile.command("list")
@click.option("--format", "fmt", type=_FORMATS, default="table", show_default=True,
              help="Output format.")
@click.option("-a", "--all", "show_all", is_flag=True,
              help="Also list profiles that one of the same name shadows.")
@handle_errors
def list_(fmt: str, show_all: bool) -> None:
    """List the profiles found from here: NAME, SOURCE, IMAGE, DESCRIPTION."""
    from sandbox.profiles.load import Search

    search = Search()
    rows: list[dict[str, Any]] = []
    for item in search.all():
        if item.shadowed and not show_all:
            continue
        row: dict[str, Any] = {"name": item.name, "origin": item.origin,
                               "source": item.file, "shadowed": item.shadowed,
                               "image": "", "description": "", "error": None}
        err = item.error
        if err is None and item.found is not None:
            try:
                prof = search.load_found(item.found)
                row["image"] = prof.image_text()
                row["description"] = prof.description
            except SbxError as exc:  # listed, not fatal: the other profiles still show
                err = exc  # type: ignore[assignment]
        if err is not None:
            row["error"] = str(err)
            warn(f"{str(err).splitlines()[0]} (`sbx profile validate` lists every problem)")
        rows.append(row)
    if fmt == "json":
        click.echo(json.dumps(rows, indent=4, ensure_ascii=False))
        return
    table = []
    for r in rows:
        name = r["name"] + (" (shadowed)" if r["shadowed"] else "")
        image = "!error" if r["error"] else r["image"]
        table.append([name, source_text(r["source"], r["origin"], search.cwd), image,
                      r["description"]])
    print_table(table, ["NAME", "SOURCE", "IMAGE", "DESCRIPTION"])


@profile.command()
@click.argument("name")
@click.option("--format", "fmt", type=click.Choice(["toml", "json"]), default="toml",
              show_default=True, help="Output format.")
@handle_errors
def show(name: str, fmt: str) -> None:
    """Show profile NAME (or a .toml file) with everything it extends merged in."""
    from sandbox.profiles.load import Search

    prof = Search().load(name)
    if fmt == "json":
        click.echo(json.dumps(prof.to_json(), indent=4, ensure_ascii=False))
    else:
        click.echo(prof.to_toml(), nl=False)


@profile.command()
@click.argument("refs", nargs=-1, metavar="[NAME|FILE]...")
@handle_errors
def validate(refs: tuple[str, ...]) -> None:
    """Check profiles (default: the project's and your own); list every problem."""
    from sandbox.profiles.load import Search

    results = Search().check(list(refs))
    if not results:
        raise UsageError("no profiles here to validate (no sbx.toml, .sbx/ or user profiles)",
                         hint="`sbx profile init` writes a starter sbx.toml")
    bad = 0
    for r in results:
        if r.error is None:
            click.echo(f"ok  {r.name}")
            continue
        bad += 1
        problems = getattr(r.error, "problems", [r.error.message])
        for line in problems:
            click.echo(line, err=True)
        if r.error.hint:
            click.echo(f"hint: {r.error.hint}", err=True)
    if bad:
        click.echo(f"sbx: {bad} of {len(results)} profile(s) have problems", err=True)
        sys.exit(EXIT_SBX)


@profile.command()
@click.option("-f", "--force", is_flag=True, help="Replace an existing sbx.toml.")
@handle_errors
def init(force: bool) -> None:
    """Write a starter sbx.toml here, guessing the language from the files."""
    from sandbox.profiles.load import PROJECT_FILE, Search
    from sandbox.profiles.starter import starter

    cwd = os.getcwd()
    path = os.path.join(cwd, PROJECT_FILE)
    if os.path.lexists(path) and not force:
        raise UsageError(f"{PROJECT_FILE} already exists here",
                         hint="`sbx profile init --force` replaces it")
    text, base = starter(cwd)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise UsageError(f"can't write {path}: {exc.strerror}") from None
    Search(cwd).load("dev")  # what was written must load; a bug here is loud
    click.echo(f"wrote {PROJECT_FILE}: profile dev (extends {base}); "
               "`sbx run dev` enters it")


@profile.command()
@click.argument("name")
@click.option("--bootstrap", is_flag=True,
              help="Also build a bootstrapped base image again (mmdebstrap).")
@click.option("--pull", "pull_policy", type=click.Choice(["missing", "always", "never"]),
              default="missing", show_default=True, help="When to pull the base image.")
@tls_verify_option
@handle_errors
def rebuild(name: str, bootstrap: bool, pull_policy: str, tls_verify: bool) -> None:
    """Build NAME's setup layer again, even if one with its key is kept."""
    from sandbox.cli.profile_run import rebuild as do_rebuild

    opts = {"pull_policy": pull_policy, "tls_verify": tls_verify, "storage_driver": None}
    image = do_rebuild(name, opts, bootstrap=bootstrap)
    click.echo(image)
