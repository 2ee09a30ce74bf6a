"""`sbx login` and `sbx logout`: registry credentials in auth.json.

`sbx login` checks the credentials against the registry first (GET /v2/ with Basic
auth, or a token request for a Bearer registry, as podman's login does) and only
then stores them, with mode 0600, in the auth.json podman and skopeo read too
(sandbox.registry.credentials.auth_file: $REGISTRY_AUTH_FILE, else
$XDG_RUNTIME_DIR/containers/auth.json, else ~/.config/containers/auth.json).
"""

from __future__ import annotations

import sys

import click

from sandbox.cli import handle_errors
from sandbox.cli.images import tls_verify_option
from sandbox.errors import SbxError, UsageError


def registry_key(text: str) -> str:
    """What the user typed, as an auth.json key: scheme and trailing '/' dropped
    (`https://quay.io/` -> quay.io); a namespace (`quay.io/team`) is kept, since
    auth.json entries may be per namespace."""
    key = text.strip()
    for scheme in ("https://", "http://"):
        key = key.removeprefix(scheme)
    key = key.rstrip("/")
    if not key or any(c.isspace() for c in key):
        raise UsageError(f"invalid registry {text!r}", hint="sbx login REGISTRY[:PORT]")
    return key


def _is_tty() -> bool:
    try:
        return sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


@click.command()
@click.option("-u", "--username", metavar="USER", help="Registry user name.")
@click.option("-p", "--password", metavar="PASS",
              help="Password (visible to other users in ps; prefer --password-stdin).")
@click.option("--password-stdin", is_flag=True, help="Read the password from stdin.")
@tls_verify_option
@click.argument("registry")
@handle_errors
def login(username: str | None, password: str | None, password_stdin: bool,
          tls_verify: bool, registry: str) -> None:
    """Log in to REGISTRY: check the credentials there, then store them."""
    from sandbox.registry import credentials
    from sandbox.registry.client import RegistryClient
    from sandbox.registry.errors import UnauthorizedError
    from sandbox.registry.reference import normalize_registry

    key = registry_key(registry)
    host = normalize_registry(key.partition("/")[0])
    if password is not None and password_stdin:
        raise UsageError("--password and --password-stdin are mutually exclusive")
    if password_stdin:
        if not username:
            raise UsageError("--password-stdin needs --username")
        # podman strips the trailing newline of `echo PASS | podman login ...`.
        password = sys.stdin.read().rstrip("\r\n")
    if not username:
        if not _is_tty():
            raise UsageError("no username given", hint="use -u USER")
        username = click.prompt("Username", type=str)
    if password is None:
        if not _is_tty():
            raise UsageError("no password given", hint="use -p PASS or --password-stdin")
        password = click.prompt("Password", hide_input=True, type=str)
    creds = credentials.Credentials(username, password)
    from sandbox.registry.config import insecure

    verify = tls_verify and not insecure(host)
    with RegistryClient(host, tls_verify=verify, credentials=creds) as client:
        try:
            client.ping()
        except UnauthorizedError as err:
            raise SbxError(
                f"logging into {key!r}: invalid username/password",
                hint=f"check the user name and password for {host}",
            ) from err
    credentials.save(key, username, password)
    click.echo("Login Succeeded!")


@click.command()
@click.option("-a", "--all", "all_", is_flag=True, help="Log out of every registry.")
@click.argument("registry", required=False)
@handle_errors
def logout(all_: bool, registry: str | None) -> None:
    """Forget the stored credentials for REGISTRY (or --all)."""
    from sandbox.registry import credentials

    if all_:
        credentials.remove_all()
        click.echo("Removed login credentials for all registries")
        return
    if not registry:
        raise UsageError("which registry?", hint="sbx logout REGISTRY, or sbx logout --all")
    key = registry_key(registry)
    if not credentials.remove(key):
        raise SbxError(f"not logged into {key}",
                       hint=f"credentials are read from {credentials.auth_file()}")
    click.echo(f"Removed login credentials for {key}")
