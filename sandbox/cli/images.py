"""`sbx images` (also `sbx image ls`), and what every image verb shares.

The shared part is the wiring of the image store to the user namespace, which only
the CLI may do (DESIGN.md: `images` never touches namespaces):

- `ImageContext.store`: the Store under paths.storage_dir(), asking
  `images.usage.image_in_use` before removing an image, and removing layer trees
  from inside the user namespace (their files belong to subordinate ids, which the
  user can't unlink from outside; podman does the same with `podman unshare rm`).
- `ImageContext.unpacker`: layers unpacked as root of the user namespace
  (`userns.call`) with owners="real" when newuidmap/newgidmap map the subordinate
  ranges, owners="xattr" (user.containers.override_stat) when they don't;
  whiteouts as 0/0 character devices, which the overlay driver mounts.

The lead's `sbx run IMAGE` uses the same: `ctx = ImageContext()`, then
`pull.ensure_image(ref, ctx.store, policy, unpacker=ctx.unpacker)`.

Also here: the `--tls-verify=BOOL` and `--format` helpers, and a small subset of Go
templates (`{{.Id}}`, `{{.Config.Cmd}}`, `{{json .Config}}`) as podman's --format
takes them.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from sandbox.cli import handle_errors
from sandbox.cli.options import tls_verify_option
from sandbox.errors import UsageError

if TYPE_CHECKING:
    from sandbox.images.config import ImageConfig
    from sandbox.images.pull import Unpacker
    from sandbox.images.store import ImageRecord, Store
    from sandbox.runtime.idmap import MapPlan


# --- the store, wired to the user namespace -----------------------------------------


def _remove_here(path: str) -> None:
    """Remove a tree without following symlinks (the store's own fd-based way)."""
    from sandbox.images.whiteout import remove_at

    parent = os.open(os.path.dirname(path), os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        remove_at(parent, os.path.basename(path))
    finally:
        os.close(parent)


class ImageContext:
    """The user's image store and how to unpack into it; built lazily, so a command
    that only lists images never probes the id-map helpers."""

    def __init__(self, root: Path | None = None) -> None:
        self._root = root
        self._store: Store | None = None
        self._maps: MapPlan | None = None

    @property
    def maps(self) -> MapPlan:
        if self._maps is None:
            from sandbox.runtime import idmap

            self._maps = idmap.plan_for_current_user()
        return self._maps

    def in_userns(self, fn: Callable[[], Any]) -> Any:
        """Run fn() as root of the user's namespace (forks: call with one thread)."""
        from sandbox.runtime import userns

        return userns.call(fn, self.maps)

    def remove_tree(self, path: Path) -> None:
        self.in_userns(functools.partial(_remove_here, str(path)))

    @property
    def store(self) -> Store:
        if self._store is None:
            from sandbox import paths
            from sandbox.images.store import Store
            from sandbox.images.usage import image_in_use

            root = self._root or Path(paths.storage_dir())
            self._store = Store(root, in_use=image_in_use, remove_tree=self.remove_tree)
        return self._store

    def prune_shifted(self) -> None:
        """Remove keep-id copies (storage/shifted.py) of layers the store no longer
        has: after a store prune, so that removing an image frees its copies too."""
        from sandbox.storage import shifted

        keep = {c.partition(":")[2] for c in self.store.list_layers()}
        shifted.prune(keep, self.in_userns)

    @property
    def unpacker(self) -> Unpacker:
        from sandbox.images.pull import Unpacker

        owners = "real" if self.maps.use_helpers else "xattr"
        return Unpacker(runner=self.in_userns, owners=owners, whiteout_format="chardev")


# --- options ------------------------------------------------------------------------


def strip_transport(text: str) -> str:
    """podman accepts docker://NAME for a registry image; sbx only has that one."""
    if text.startswith("docker://"):
        return text[len("docker://"):]
    if "://" in text.partition("/")[0]:
        raise UsageError(f"unsupported transport in {text!r}",
                         hint="sbx pulls and pushes registry images: docker://NAME or NAME")
    return text


def find_image(store: Store, text: str) -> ImageRecord:
    from sandbox.images.pull import find_local

    return find_local(store, text)


# --- time and size, as podman prints them -------------------------------------------


def human_duration(seconds: float) -> str:
    """docker/go-units HumanDuration, which podman's CREATED column uses."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = int(seconds / 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(seconds / 3600 + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds / 3600) // 24 // 365} years"


def time_ago(when: datetime | None, now: datetime | None = None) -> str:
    if when is None:
        return "<unknown>"
    now = now or datetime.now(UTC)
    delta = (now - when).total_seconds()
    if delta < 0:
        return "Less than a second ago" if delta > -1 else "In the future"
    return f"{human_duration(delta)} ago"


def human_size(size: float) -> str:
    """go-units HumanSizeWithPrecision(size, 3): decimal units, 3 significant digits."""
    units = ("B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB")
    i = 0
    value = float(size)
    while value >= 1000 and i < len(units) - 1:
        value /= 1000
        i += 1
    return f"{value:.3g} {units[i]}"


# --- Go templates, the subset --format needs -----------------------------------------

_ACTION = re.compile(r"{{-?\s*(.*?)\s*-?}}")
_FUNCS = ("json", "upper", "lower")


class _Missing:
    pass


_MISSING = _Missing()


def _go_value(value: Any) -> str:
    """A value as Go's text/template prints it with fmt's %v."""
    if value is _MISSING:
        return "<no value>"
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + " ".join(_go_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{_go_value(v)}" for k, v in sorted(value.items())) + "]"
    return str(value)


def _lookup(obj: Any, path: str) -> Any:
    if path == ".":
        return obj
    if not path.startswith("."):
        raise UsageError(f"unsupported template expression {path!r}",
                         hint="--format takes json, or fields like '{{.Id}} {{.Config.Cmd}}'")
    value = obj
    for part in path[1:].split("."):
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        else:
            return _MISSING
    return value


def render_template(template: str, obj: Any) -> str:
    """Render `template` (podman --format style) against a dict."""
    template = template.replace("\\t", "\t").replace("\\n", "\n")

    def action(m: re.Match[str]) -> str:
        expr = m.group(1).strip()
        fn = ""
        head, _, rest = expr.partition(" ")
        if head in _FUNCS:
            fn, expr = head, rest.strip()
        value = _lookup(obj, expr)
        if fn == "json":
            return json.dumps(None if value is _MISSING else value)
        text = _go_value(value)
        return text.upper() if fn == "upper" else text.lower() if fn == "lower" else text

    return _ACTION.sub(action, template)


def template_header(template: str) -> str:
    """The header row of a `table ...` template: each field's name in capitals."""
    template = template.replace("\\t", "\t").replace("\\n", "\n")

    def action(m: re.Match[str]) -> str:
        expr = m.group(1).strip().split()[-1]
        return expr.lstrip(".").replace(".", " ").upper() or "."

    return _ACTION.sub(action, template)


def print_table(rows: Sequence[Sequence[str]], header: Sequence[str] | None) -> None:
    """Columns padded to their widest cell, three spaces apart (podman's tabwriter)."""
    everything = ([list(header)] if header else []) + [list(r) for r in rows]
    if not everything:
        return
    widths = [max(len(r[i]) for r in everything) for i in range(len(everything[0]))]
    for r in everything:
        cells = [c.ljust(w) for c, w in zip(r[:-1], widths[:-1], strict=True)] + [r[-1]]
        click.echo("  ".join(cells).rstrip())


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=4, ensure_ascii=False))


# --- sbx images ---------------------------------------------------------------------


def _config_of(store: Store, record: ImageRecord) -> ImageConfig | None:
    from sandbox.images.config import load_config
    from sandbox.images.store import StoreError

    try:
        return load_config(store, record)
    except StoreError:
        return None


def image_created(store: Store, record: ImageRecord,
                  config: ImageConfig | None = None) -> datetime | None:
    """When the image was built (its config's `created`, as podman shows), else when
    it entered the store."""
    from sandbox.images.config import parse_time

    config = config or _config_of(store, record)
    return (config.created_at() if config else None) or parse_time(record.created)


def image_rows(store: Store, records: Sequence[ImageRecord]) -> list[dict[str, Any]]:
    """One row per repository:tag (an image without tags gets one <none> row), with
    the fields podman's `images --format` templates use."""
    from sandbox.images.pull import split_name

    now = datetime.now(UTC)
    rows = []
    for record in records:
        config = _config_of(store, record)
        created = image_created(store, record, config)
        pairs: list[tuple[str, str]] = []
        for name in record.names:
            repo, tag, _digest = split_name(name)
            pairs.append((repo, tag or "<none>"))
        if any(t != "<none>" for _, t in pairs):
            pairs = [p for p in pairs if p[1] != "<none>"]
        pairs = list(dict.fromkeys(pairs)) or [("<none>", "<none>")]
        # The manifest each repository served (its digest name), as --digests shows.
        digests = {}
        for name in record.names:
            repo, _tag, digest = split_name(name)
            if digest:
                digests.setdefault(repo, digest)
        for repo, tag in pairs:
            rows.append({
                "ID": record.short_id,
                "Id": record.id.partition(":")[2],
                "Repository": repo,
                "Tag": tag,
                "Digest": digests.get(repo, record.manifest_digest),
                "CreatedSince": time_ago(created, now),
                "CreatedAt": created.isoformat() if created else "",
                "Created": time_ago(created, now),
                "Size": human_size(record.size),
                "VirtualSize": human_size(record.size),
                "Labels": dict(config.labels) if config else {},
                "Containers": 0,
            })
    return rows


def image_summary(store: Store, record: ImageRecord) -> dict[str, Any]:
    """An image as podman's `images --format json` lists it."""
    from sandbox.images.pull import repo_digests, repo_tags

    config = _config_of(store, record)
    created = image_created(store, record, config)
    return {
        "Id": record.id.partition(":")[2],
        "ParentId": "",
        "RepoTags": repo_tags(record) or None,
        "RepoDigests": repo_digests(record),
        "Size": record.size,
        "SharedSize": 0,
        "VirtualSize": record.size,
        "Labels": dict(config.labels) if config and config.labels else None,
        "Containers": 0,
        "Names": list(record.names) or None,
        "Digest": record.manifest_digest,
        "History": list(record.names) or None,
        "Created": int(created.timestamp()) if created else 0,
        "CreatedAt": created.isoformat().replace("+00:00", "Z") if created else "",
    }


def _matches(record: ImageRecord, pattern: str) -> bool:
    """`sbx images NAME` filter: a repository (or repository:tag) as typed, matched
    like podman's reference filter on the full name or its last components."""
    from sandbox.images.pull import split_name

    for name in record.names:
        repo, tag, _ = split_name(name)
        for candidate in (repo, f"{repo}:{tag}" if tag else repo):
            if candidate == pattern or candidate.endswith("/" + pattern):
                return True
    return False


def list_images(ctx: ImageContext, pattern: str | None, *, quiet: bool, digests: bool,
                no_trunc: bool, fmt: str | None, noheading: bool) -> None:
    store = ctx.store
    records = store.list_images()
    if pattern:
        records = [r for r in records if _matches(r, pattern)]
    records.sort(key=lambda r: (image_created(store, r) or datetime.min.replace(tzinfo=UTC)),
                 reverse=True)
    if quiet:
        for rid in dict.fromkeys(r.id if no_trunc else r.short_id for r in records):
            click.echo(rid)
        return
    if fmt == "json":
        echo_json([image_summary(store, r) for r in records])
        return
    rows = image_rows(store, records)
    if fmt and fmt != "table":
        template = fmt
        if template.startswith("table"):
            template = template[len("table"):].lstrip()
            if not noheading:
                click.echo(template_header(template))
        for row in rows:
            click.echo(render_template(template, row))
        return
    header = ["REPOSITORY", "TAG", *(["DIGEST"] if digests else []), "IMAGE ID", "CREATED",
              "SIZE"]
    table = [
        [row["Repository"], row["Tag"], *([row["Digest"]] if digests else []),
         f"sha256:{row['Id']}" if no_trunc else row["ID"], row["CreatedSince"], row["Size"]]
        for row in rows
    ]
    print_table(table, None if noheading else header)


def images_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    for decorator in reversed([
        click.argument("repository", required=False),
        click.option("-a", "--all", "all_", is_flag=True,
                     help="Show all images (sbx keeps no intermediate images: same list)."),
        click.option("-q", "--quiet", is_flag=True, help="Show only image ids."),
        click.option("--digests", is_flag=True, help="Show the manifest digests."),
        click.option("--no-trunc", is_flag=True, help="Show full image ids."),
        click.option("-n", "--noheading", is_flag=True, help="Leave out the header row."),
        click.option("--format", "fmt", metavar="json|table|TEMPLATE",
                     help="json, table, or a Go template such as '{{.Repository}}:{{.Tag}}'."),
    ]):
        fn = decorator(fn)
    return fn


@click.command("images")
@images_options
@handle_errors
def images(repository: str | None, all_: bool, quiet: bool, digests: bool, no_trunc: bool,
           noheading: bool, fmt: str | None) -> None:
    """List the images in the store (REPOSITORY narrows the list)."""
    del all_
    list_images(ImageContext(), repository, quiet=quiet, digests=digests, no_trunc=no_trunc,
                fmt=fmt, noheading=noheading)


__all__ = [
    "ImageContext",
    "find_image",
    "human_duration",
    "human_size",
    "image_rows",
    "image_summary",
    "images",
    "render_template",
    "strip_transport",
    "time_ago",
    "tls_verify_option",
]
