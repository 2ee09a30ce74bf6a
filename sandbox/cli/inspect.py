"""`sbx inspect` (containers, then images) and `sbx container inspect`.

Prints a JSON list of podman's container fields (Id, Created, Path, Args, State,
Image, ImageName, Name, Config, HostConfig, Mounts, paths of the generated files
and the log ...), or renders `--format` as a Go template against each
(`{{.State.ExitCode}}`, `{{.Id}}`, `{{.Name}}`, `{{.State.Status}}`,
`{{.Config.Cmd}}`, `{{json .Config.Labels}}`). Exit code 125 when a name matches
nothing, after printing what did match (podman's behaviour).
"""

from __future__ import annotations

import signal
from typing import Any

import click

from sandbox.cli import handle_errors
from sandbox.errors import SbxError

ZERO_TIME = "0001-01-01T00:00:00Z"  # Go's zero time.Time, which podman prints for "never"


def _signal_number(text: Any) -> int:
    from sandbox.containers.lifecycle import parse_signal

    try:
        return parse_signal(text)
    except SbxError:
        return int(signal.SIGTERM)


def inspect_data(container: Any) -> dict[str, Any]:
    """One container as podman's `inspect` shows it (the fields sbx has)."""
    from sandbox import paths
    from sandbox.containers import monitor

    cfg, st = container.config, container.state
    spec = cfg.get("spec", {})
    proc = spec.get("process", {})
    args = list(proc.get("args", []))
    status = st.get("status", "created")
    run_dir = paths.container_run_dir(container.id)
    image_id = str(cfg.get("image_id") or "")
    mounts = []
    # Volumes (sandbox/volumes): destination -> name, shown as podman's Type "volume".
    volumes = {v.get("destination", ""): v.get("name", "")
               for v in cfg.get("named_volumes") or [] if isinstance(v, dict)}
    for m in spec.get("mounts", []):
        source = m.get("source") or ""
        if m.get("type") == "bind" and source.startswith(run_dir):
            continue  # generated /etc files, as podman leaves them out
        if m.get("destination") in ("/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue",
                                    "/sys") or m.get("destination", "").startswith("/dev/"):
            continue
        if m.get("type") not in ("bind", "tmpfs"):
            continue
        vol = volumes.get(m.get("destination", ""))
        mounts.append({
            "Type": "volume" if vol else m.get("type"),
            **({"Name": vol} if vol else {}),
            "Source": source,
            "Destination": m.get("destination"),
            "Driver": "local" if vol else "",
            "Mode": "",
            "Options": [o for o in m.get("options", [])
                        if o not in ("ro", "rw") and not o.startswith("sbx-")],
            "RW": "ro" not in m.get("options", []),
            "Propagation": "rprivate",
        })
    return {
        "Id": container.id,
        "Created": cfg.get("created", ""),
        "Path": args[0] if args else "",
        "Args": args[1:],
        "State": {
            "OciVersion": spec.get("ociVersion", "1.1.0"),
            "Status": status,
            "Running": status == "running",
            "Paused": False,
            "Restarting": False,
            "OOMKilled": bool(st.get("oom_killed")),
            "Dead": False,
            "Pid": container.pid,
            "ConmonPid": int(st.get("monitor_pid") or 0) if status == "running" else 0,
            "ExitCode": st.get("exit_code") if st.get("exit_code") is not None else 0,
            "Error": st.get("error", ""),
            "StartedAt": st.get("started_at") or ZERO_TIME,
            "FinishedAt": st.get("finished_at") or ZERO_TIME,
        },
        "Image": image_id.partition(":")[2] or image_id,
        "ImageName": cfg.get("image", ""),
        "Rootfs": cfg.get("rootfs", ""),
        "ResolvConfPath": f"{run_dir}/resolv.conf",
        "HostnamePath": f"{run_dir}/hostname",
        "HostsPath": f"{run_dir}/hosts",
        "StaticDir": paths.container_dir(container.id),
        "OCIConfigPath": paths.container_config_file(container.id),
        "LogPath": paths.container_log_file(container.id),
        "Name": container.name,
        "RestartCount": int(st.get("restart_count") or 0),
        "Driver": "overlay" if cfg.get("layers") else "",
        "Mounts": mounts,
        "Config": {
            "Hostname": cfg.get("hostname", ""),
            "Domainname": "",
            "User": cfg.get("user", ""),
            "AttachStdin": False,
            "AttachStdout": False,
            "AttachStderr": False,
            "Tty": bool(cfg.get("tty")),
            "OpenStdin": bool(cfg.get("interactive")),
            "StdinOnce": False,
            "Env": list(proc.get("env", [])),
            "Cmd": list(cfg.get("command") or []) or None,
            "Image": cfg.get("image", ""),
            "Volumes": None,
            "WorkingDir": proc.get("cwd", "/"),
            "Entrypoint": list(cfg.get("entrypoint") or []) or None,
            "Labels": dict(cfg.get("labels") or {}) or None,
            "Annotations": dict(spec.get("annotations") or {}),
            "StopSignal": _signal_number(cfg.get("stop_signal")),
            "StopTimeout": int(cfg.get("stop_timeout", 10)),
            "CreateCommand": list(cfg.get("create_command") or []),
            "Umask": "0022",
        },
        "HostConfig": {
            "AutoRemove": bool(cfg.get("auto_remove")),
            "NetworkMode": cfg.get("network", "host"),
            "UsernsMode": cfg.get("userns", ""),
            "Init": bool(cfg.get("init")),
            "ReadonlyRootfs": bool(cfg.get("read_only")),
            # docker's fields; 0 = no limit (limits dropped for want of cgroup v2
            # delegation are not recorded, so they show as 0 here).
            "Memory": int((cfg.get("limits") or {}).get("memory") or 0),
            "NanoCpus": int(((cfg.get("limits") or {}).get("cpus") or 0) * 1e9),
            "PidsLimit": int((cfg.get("limits") or {}).get("pids") or 0),
            "Binds": [v for v in cfg.get("volumes") or [] if not v.startswith("tmpfs:")],
        },
        # sbx's own: the monitor, and pid 1's identity (start time, boot) that
        # `sbx exec` needs to join the right namespaces.
        "Sbx": monitor.describe(container),
    }


def _print(datas: list[dict[str, Any]], fmt: str | None) -> None:
    from sandbox.cli.images import echo_json, render_template

    if fmt and fmt != "json":
        for data in datas:
            click.echo(render_template(fmt, data))
    else:
        echo_json(datas)


def inspect_containers(names: tuple[str, ...], fmt: str | None, images_too: bool) -> None:
    from sandbox.containers.store import ContainerStore, NoSuchContainer

    store = ContainerStore()
    datas: list[dict[str, Any]] = []
    errors: list[SbxError] = []
    for name in names:
        try:
            datas.append(inspect_data(store.lookup(name)))
            continue
        except NoSuchContainer as exc:
            if not images_too:
                errors.append(exc)
                continue
        except SbxError as exc:
            errors.append(exc)
            continue
        try:
            datas.append(_image_data(name))
        except SbxError:
            errors.append(SbxError(f"no such object: {name!r}",
                                   hint="`sbx ps -a` lists containers, `sbx images` images"))
    _print(datas, fmt)
    for err in errors[:-1]:
        click.echo(f"sbx: {err.message}", err=True)
    if errors:
        raise errors[-1]


def _image_data(name: str) -> dict[str, Any]:
    from sandbox.cli.image import inspect_data as image_inspect_data
    from sandbox.cli.images import ImageContext, find_image, strip_transport

    ctx = ImageContext()
    return image_inspect_data(ctx.store, find_image(ctx.store, strip_transport(name)))


@click.command("inspect")
@click.option("-f", "--format", "fmt", metavar="json|TEMPLATE",
              help="json (default) or a Go template such as '{{.State.ExitCode}}'.")
@click.argument("names", nargs=-1, required=True)
@handle_errors
def inspect(fmt: str | None, names: tuple[str, ...]) -> None:
    """Show containers' (or images') details as JSON."""
    inspect_containers(names, fmt, images_too=True)


@click.command("inspect")
@click.option("-f", "--format", "fmt", metavar="json|TEMPLATE",
              help="json (default) or a Go template such as '{{.State.ExitCode}}'.")
@click.argument("names", nargs=-1, required=True)
@handle_errors
def container_inspect(fmt: str | None, names: tuple[str, ...]) -> None:
    """Show containers' details as JSON."""
    inspect_containers(names, fmt, images_too=False)


__all__ = ["container_inspect", "inspect", "inspect_data"]
