"""`sbx ps` (also `sbx container ls`): list containers as podman does.

The table has podman's columns (CONTAINER ID, IMAGE, COMMAND, CREATED, STATUS,
PORTS, NAMES), oldest first as podman sorts by default, COMMAND cut to 17 characters
plus "..." past 20 (podman's ps truncation), STATUS as docker prints it ("Up 3
seconds", "Exited (0) 2 seconds ago", "Created"; podman 4.3 says "Up 3 seconds
ago"). `--format json` gives podman's ps JSON fields; a Go template takes the same
field names podman's `ps --format` takes ({{.ID}}, {{.Names}}, {{.Status}}, ...).

Filters (podman's semantics: the same key given twice matches either value, different
keys must all match): status=created|running|exited, name=REGEX, id=PREFIX,
label=KEY or label=KEY=VALUE, ancestor=IMAGE (name or id prefix).

`ps` takes no lock: records are replaced whole (store.py), so a listing taken while
containers start and stop shows each one before or after a change, never halfway.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any

import click

from sandbox import filters as filters_mod
from sandbox.cli import handle_errors

FILTER_KEYS = ("status", "name", "id", "label", "ancestor")
STATUSES = ("created", "running", "exited", "paused", "unknown")


def _duration(seconds: float) -> str:
    from sandbox.cli.images import human_duration

    return human_duration(seconds)


def _ns(text: str) -> int | None:
    from sandbox.containers.store import parse_time

    return parse_time(text)


def status_text(container: Any, now_ns: int) -> str:
    """STATUS as docker prints it."""
    st = container.state
    status = st.get("status")
    if status == "running":
        started = _ns(st.get("started_at", "")) or now_ns
        return f"Up {_duration(max(0, now_ns - started) / 1e9)}"
    if status == "exited":
        finished = _ns(st.get("finished_at", ""))
        code = st.get("exit_code")
        code = -1 if code is None else code
        if finished is None:
            return f"Exited ({code})"
        return f"Exited ({code}) {_duration(max(0, now_ns - finished) / 1e9)} ago"
    if status == "created":
        return "Created"
    return str(status).capitalize()


def created_text(container: Any, now_ns: int) -> str:
    created = _ns(str(container.config.get("created", "")))
    if created is None:
        return ""
    return f"{_duration(max(0, now_ns - created) / 1e9)} ago"


def command_text(container: Any, full: bool = False) -> str:
    args = list(container.config.get("entrypoint") or []) + list(
        container.config.get("command") or [])
    text = " ".join(args)
    if not full and len(text) > 20:
        return text[:17] + "..."  # podman's ps truncation
    return text


def image_text(container: Any) -> str:
    return str(container.config.get("image") or "")


def _unix(text: str) -> int:
    ns = _ns(text)
    return ns // 1_000_000_000 if ns else 0


def ps_json(container: Any, now_ns: int) -> dict[str, Any]:
    """One container as `podman ps --format json` lists it."""
    cfg, st = container.config, container.state
    status = st.get("status", "created")
    image_id = str(cfg.get("image_id") or "")
    return {
        "AutoRemove": bool(cfg.get("auto_remove")),
        "Command": list(cfg.get("entrypoint") or []) + list(cfg.get("command") or []),
        "CreatedAt": created_text(container, now_ns),
        "Exited": status == "exited",
        "ExitedAt": _unix(st.get("finished_at", "")),
        "ExitCode": st.get("exit_code") if st.get("exit_code") is not None else 0,
        "Id": container.id,
        "Image": image_text(container),
        "ImageID": image_id.partition(":")[2] or image_id,
        "IsInfra": False,
        "Labels": dict(cfg.get("labels") or {}) or None,
        "Mounts": [v.split(":")[1] if ":" in v else v for v in cfg.get("volumes") or []],
        "Names": [container.name],
        "Namespaces": {},
        "Networks": [],
        "Pid": container.pid,
        "Pod": "",
        "PodName": "",
        "Ports": None,
        "Size": None,
        "StartedAt": _unix(st.get("started_at", "")),
        "State": status,
        "Status": status_text(container, now_ns),
        "Created": _unix(str(cfg.get("created", ""))),
    }


def template_row(container: Any, now_ns: int, no_trunc: bool) -> dict[str, Any]:
    """The fields podman's `ps --format` templates use."""
    row = ps_json(container, now_ns)
    row.update({
        "ID": container.id if no_trunc else container.short_id,
        "Names": container.name,
        "Command": command_text(container, no_trunc),
        "CreatedHuman": row["CreatedAt"],
        "RunningFor": row["CreatedAt"],
        "Ports": "",
        "Labels": dict(container.config.get("labels") or {}),
    })
    return row


# -- filters -------------------------------------------------------------------------
def parse_filters(items: Sequence[str]) -> dict[str, list[str]]:
    return filters_mod.parse(items, FILTER_KEYS, values={"status": STATUSES})


def _matches_one(container: Any, key: str, value: str) -> bool:
    cfg = container.config
    if key == "status":
        return container.status == value
    if key == "name":
        return re.search(value, container.name) is not None
    if key == "id":
        return container.id.startswith(value)
    if key == "label":
        return filters_mod.label_matches(cfg.get("labels") or {}, value)
    if key == "ancestor":
        image = str(cfg.get("image") or "")
        image_id = str(cfg.get("image_id") or "").partition(":")[2]
        return bool(value) and (image == value or image.endswith("/" + value)
                                or image.rpartition(":")[0].endswith(value)
                                or image_id.startswith(value.removeprefix("sha256:")))
    return False


def matches(container: Any, filters: dict[str, list[str]]) -> bool:
    return filters_mod.matches(filters, lambda key, v: _matches_one(container, key, v))


def list_containers(show_all: bool, filters: dict[str, list[str]]) -> list[Any]:
    from sandbox.containers.store import ContainerStore

    found = ContainerStore().list()
    if not show_all and "status" not in filters:
        found = [c for c in found if c.running]
    return [c for c in found if matches(c, filters)]


@click.command("ps")
@click.option("-a", "--all", "show_all", is_flag=True,
              help="Show every container (default: running ones).")
@click.option("-q", "--quiet", is_flag=True, help="Show only container ids.")
@click.option("-f", "--filter", "filters", multiple=True, metavar="KEY=VALUE",
              help="status=, name=, id=, label=, ancestor= (repeatable).")
@click.option("--format", "fmt", metavar="json|table|TEMPLATE",
              help="json, table, or a Go template such as '{{.ID}} {{.Names}}'.")
@click.option("--no-trunc", is_flag=True, help="Show full ids and commands.")
@click.option("-n", "--noheading", is_flag=True, help="Leave out the header row.")
@handle_errors
def ps(show_all: bool, quiet: bool, filters: tuple[str, ...], fmt: str | None,
       no_trunc: bool, noheading: bool) -> None:
    """List containers."""
    found = list_containers(show_all, parse_filters(filters))
    now = time.time_ns()
    if quiet:
        for c in found:
            click.echo(c.id if no_trunc else c.short_id)
        return
    if fmt == "json":
        from sandbox.cli.images import echo_json

        echo_json([ps_json(c, now) for c in found])
        return
    if fmt and fmt != "table":
        from sandbox.cli.images import render_template, template_header

        template = fmt
        if template.startswith("table"):
            template = template[len("table"):].lstrip()
            if not noheading:
                click.echo(template_header(template))
        for c in found:
            click.echo(render_template(template, template_row(c, now, no_trunc)))
        return
    from sandbox.cli.images import print_table

    header = ["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"]
    rows = [[c.id if no_trunc else c.short_id, image_text(c), command_text(c, no_trunc),
             created_text(c, now), status_text(c, now), "", c.name] for c in found]
    print_table(rows, None if noheading else header)


__all__ = ["matches", "parse_filters", "ps", "ps_json", "status_text"]
