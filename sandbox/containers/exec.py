"""`exec`: run one more process in a running container (podman exec, docker exec).

The container's record gives what the process gets: its spec's environment (plus
-e and --env-file), working directory (or -w), user (or -u, resolved against the
container's own /etc/passwd), capabilities and no_new_privs; the namespaces to join
come from its pid 1, identified by pid *and* start time (procfs), so a pid the
kernel gave to someone else is never joined. The joining itself is the runtime's
(sandbox/runtime/nsenter.py).

No exec sessions are recorded (podman keeps ExecIDs): the process is this
command's child and dies with it (PR_SET_PDEATHSIG), or, with -d, is on its own in
the container and ends with it. Either way nothing is left for ps, stop or rm to
clean up. Library code: raises, never prints.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sandbox.containers import procfs
from sandbox.containers.store import Container, ContainerError
from sandbox.errors import UsageError
from sandbox.runtime.spec import Process, Spec


class NotRunning(ContainerError):
    """podman: "can only create exec sessions on running containers: container
    state improper" (exit 125)."""


class ExecOptions:
    """What `sbx exec` was asked for, as parsed by the CLI."""

    __slots__ = ("command", "detach", "env", "env_files", "interactive", "tty", "user",
                 "workdir")

    def __init__(self, command: Sequence[str], *, interactive: bool = False,
                 tty: bool = False, detach: bool = False, user: str | None = None,
                 env: Sequence[str] = (), env_files: Sequence[tuple[str, str]] = (),
                 workdir: str | None = None) -> None:
        self.command = list(command)
        self.interactive = interactive
        self.tty = tty
        self.detach = detach
        self.user = user
        self.env = list(env)
        self.env_files = list(env_files)  # (path, text)
        self.workdir = workdir


def exec_spec(container_spec: Spec, opts: ExecOptions, host_env: Mapping[str, str]) -> Spec:
    """The spec of the process to start: the container's, with the command, the
    environment and the working directory of this exec. Pure."""
    from sandbox.runtime.specgen import merge_env, parse_env_file

    if not opts.command:
        raise UsageError("no command given", hint="sbx exec [OPTIONS] CONTAINER COMMAND [ARG...]")
    workdir = opts.workdir or container_spec.process.cwd or "/"
    if not workdir.startswith("/"):
        raise UsageError(f"invalid --workdir {workdir!r}: it must be an absolute path")
    env = list(container_spec.process.env)
    extra: list[str] = []
    if opts.tty and not any(e.startswith("TERM=") for e in env):
        extra.append("TERM=" + host_env.get("TERM", "xterm"))
    files = [parse_env_file(path, text, host_env) for path, text in opts.env_files]
    merged = merge_env([env, extra, *files, opts.env], host_env)
    proc = container_spec.process
    process = Process(args=list(opts.command), env=merged, cwd=workdir, user=proc.user,
                      terminal=opts.tty, capabilities=proc.capabilities,
                      no_new_privileges=proc.no_new_privileges)
    return Spec(process=process, root=container_spec.root,
                hostname=container_spec.hostname, mounts=[], linux=container_spec.linux,
                init=False)


def sets_home(opts: ExecOptions) -> bool:
    """Whether -u decides HOME: it does unless -e or --env-file set it (podman)."""
    explicit = list(opts.env)
    for _path, text in opts.env_files:
        explicit += [line.strip() for line in text.splitlines()]
    return opts.user is not None and not any(
        e == "HOME" or e.startswith("HOME=") for e in explicit)


def run(container: Container, opts: ExecOptions, host_env: Mapping[str, str]) -> int | None:
    """Run the exec in `container`; its exit status (128+N for signal N, 126/127 as
    run), or None with `detach` once it has started."""
    from sandbox.containers import specjson
    from sandbox.runtime import nsenter

    if not container.running:
        raise NotRunning(f"can only create exec sessions on running containers: "
                         f"{container.name} is {container.status}",
                         hint=f"start it first: sbx start {container.name}")
    try:
        spec = specjson.from_json(container.config["spec"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ContainerError(f"the record of container {container.short_id} is damaged "
                             f"({type(exc).__name__}: {exc})") from None
    espec = exec_spec(spec, opts, host_env)
    st = container.raw_state
    pid = int(st.get("pid") or 0)
    plan = nsenter.join_plan(spec.linux.namespaces)
    try:
        fds = nsenter.open_namespaces(pid, plan)
    except nsenter.ProcessGone:
        raise _gone(container) from None
    # Opened first, checked second: if the pid still has the recorded start time
    # now, the descriptors are that process's namespaces (they stay valid even if
    # it exits meanwhile; a fork into an emptied pid namespace then fails cleanly).
    if not procfs.is_running(pid, st.get("pid_start", 0), st.get("boot_id", "")):
        nsenter.close_all(fds)
        raise _gone(container)
    cgroup = ""
    if container.config.get("limits"):
        from sandbox.runtime import cgroups

        cgroup = cgroups.of_process(pid) or ""
    launched = nsenter.enter(espec, fds, user_spec=opts.user, set_home=sets_home(opts),
                             interactive=opts.interactive, detach=opts.detach,
                             cgroup=cgroup)
    if opts.detach:
        launched.release()
        return None
    with launched:
        if launched.master >= 0:
            from sandbox.runtime import terminal

            terminal.relay(launched.master, opts.interactive, launched.alive)
        return launched.wait()


def _gone(container: Container) -> NotRunning:
    return NotRunning(f"can only create exec sessions on running containers: "
                      f"{container.name} has just exited",
                      hint=f"start it again: sbx start {container.name}")


__all__ = ["ExecOptions", "NotRunning", "exec_spec", "run", "sets_home"]
