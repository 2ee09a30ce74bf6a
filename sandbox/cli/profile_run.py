"""`sbx run PROFILE`, `sbx shell PROFILE` and `sbx profile rebuild`: the run half of
profiles (the data half, discovery to `to_run_options`, is sandbox/profiles).

A profile run is an image run with options made from the profile, in this order:

1. load and validate the profile (errors name file, line and key: nothing starts);
2. the lock: sbx.lock pins the image by digest when it agrees with the profile; a
   disagreement is a warning, or an error with `--locked` (cargo's flag), as is a
   missing lock;
3. the base image: pulled (`--pull`, default missing), or for `image = {bootstrap
   = ...}` built with mmdebstrap once and kept as localhost/sbx-bootstrap:KEY;
4. the setup layer, when the profile has `setup` steps: keyed by the base image's
   digest, the steps, the env as written and the inputs' content
   (lock.profile_setup_key); found as localhost/sbx-setup:KEY, else built: the steps
   run in one container from the base image, as root inside, in the workspace
   (mounted), then the container's layer is committed (cli/commit.py) and the
   container removed. A failed step keeps nothing;
5. the container: from the setup image (or the base), with the workspace, mounts,
   named volumes, env, user (keep-id by default: your uid, gid and name inside, a
   home directory), network and tmpfs of the profile, plus what the command line
   adds (-e, -v, --tmpfs, --name, -w, -d, -i, -t, ...); removed when it exits, so
   every run starts fresh and two runs share nothing but named volumes. A terminal
   on stdin and stdout gets a pty, as toolbox and distrobox do.

Limits apply as `--memory`, `--cpus` and `--pids-limit` do (runtime/cgroups.py):
with cgroup v2 delegation; without it, every run says they were not applied.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

import click

from sandbox.cli import warn
from sandbox.errors import SbxError

SETUP_REPO = "localhost/sbx-setup"
# Runs each setup step with /bin/sh -c, in order, saying which one runs; stops at the
# first that fails, with its status (a Dockerfile's RUN steps, one after another).
SETUP_SCRIPT = ('n=$#; i=0; for step do i=$((i+1)); '
                'printf "sbx: setup step %d/%d: %s\\n" "$i" "$n" "$step" >&2; '
                '/bin/sh -c "$step" || { s=$?; '
                'printf "sbx: setup step %d/%d failed (exit %d)\\n" "$i" "$n" "$s" >&2; '
                'exit $s; }; done')


class SetupFailed(SbxError):
    """A setup step exited non-zero; nothing was kept."""


def setup_image_name(key: str) -> str:
    return f"{SETUP_REPO}:{key.partition(':')[2]}"


def _default(ctx: click.Context | None, name: str) -> bool:
    """Whether option `name` was left at its default on the command line."""
    from click.core import ParameterSource

    if ctx is None:
        return True
    return ctx.get_parameter_source(name) in (None, ParameterSource.DEFAULT)


class ProfileRun:
    """One profile, seen from one project folder, on its way to a container."""

    def __init__(self, ref: str, cwd: str | None = None, profile: Any = None) -> None:
        from sandbox.profiles.load import Search

        self.cwd = os.path.abspath(cwd or os.getcwd())
        self.profile = profile or Search(self.cwd).load(ref)
        self._ctx: Any = None
        self._locked: tuple[str | None, str | None] | None = None

    @property
    def ctx(self) -> Any:
        if self._ctx is None:
            from sandbox.cli.images import ImageContext

            self._ctx = ImageContext()
        return self._ctx

    # -- lock ------------------------------------------------------------------------

    def check_lock(self, locked: bool) -> tuple[str | None, str | None]:
        """(reference to pull, the digest the lock pins) after checking sbx.lock:
        warnings for a disagreement, or an error with --locked. Checked once."""
        if self._locked is not None:
            return self._locked
        from sandbox.profiles.errors import ProfileError
        from sandbox.profiles.lock import check_lock, lock_path, locked_reference, read_lock

        lock = read_lock(lock_path(self.cwd))
        if lock is None and not locked:
            self._locked = (None, None)
            return self._locked
        problems = check_lock(self.profile, lock, self.cwd)
        if problems:
            if locked:
                raise ProfileError(problems, hint="run `sbx lock` and commit sbx.lock, "
                                                  "or drop --locked")
            for p in problems:
                warn(f"{p}; using the profile as written")
        ref = locked_reference(self.profile, lock)
        entry = lock.get(self.profile.name) if lock else None
        self._locked = (ref, (entry or {}).get("digest") if ref else None)
        return self._locked

    # -- images ----------------------------------------------------------------------

    def base_image(self, pull: str, tls_verify: bool, locked: bool,
                   rebuild_bootstrap: bool = False) -> tuple[str, str]:
        """(image reference to run, base identity for the setup key)."""
        from sandbox.profiles.lock import image_digest
        from sandbox.profiles.model import bootstrap_key

        boot = self.profile.bootstrap
        if boot is not None:
            # The lock check (bootstrap key) still applies.
            self.check_lock(locked)
            key = bootstrap_key(boot)
            return self._bootstrap(boot, key, rebuild_bootstrap), key
        ref, pinned = self.check_lock(locked)
        ref = ref or str(self.profile.image)
        record = self._ensure(ref, pull, tls_verify)
        return ref, pinned or image_digest(ref) or record.manifest_digest

    def _ensure(self, ref: str, pull: str, tls_verify: bool) -> Any:
        from sandbox.images import progress as prog
        from sandbox.images.pull import ensure_image

        progress = prog.for_stream(sys.stderr, quiet=False)
        try:
            return ensure_image(ref, self.ctx.store, pull,  # type: ignore[arg-type]
                                unpacker=self.ctx.unpacker, tls_verify=tls_verify,
                                progress=progress, warn=warn)
        finally:
            progress.close()

    def _find(self, name: str) -> Any:
        from sandbox.images.store import ImageNotFound

        try:
            return self.ctx.store.resolve(name)
        except ImageNotFound:
            return None

    def _bootstrap(self, boot: dict[str, Any], key: str, rebuild: bool) -> str:
        from sandbox.images import bootstrap

        name = bootstrap.image_name(key)
        if rebuild or self._find(name) is None:
            bootstrap.build(self.ctx.store, boot, key, self.ctx.unpacker,
                            log=lambda m: click.echo(f"sbx: {m}", err=True))
        return name

    def setup_key(self, base: str) -> str:
        from sandbox.profiles.lock import profile_setup_key
        from sandbox.profiles.model import hash_inputs, resolve_inputs

        files = resolve_inputs(self.cwd, self.profile.data.get("inputs", []))
        return profile_setup_key(self.profile, base, hash_inputs(self.cwd, files))

    def with_setup(self, image: str, base: str, opts: dict[str, Any],
                   rebuild: bool = False) -> str:
        """The image to run: `image`, or its setup image (built when missing)."""
        if not self.profile.setup:
            return image
        key = self.setup_key(base)
        name = setup_image_name(key)
        if not rebuild and self._find(name) is not None:
            return name
        self._build_setup(image, name, key, opts)
        return name

    def _build_setup(self, image: str, name: str, key: str, cli: dict[str, Any]) -> None:
        from sandbox.cli.commit import commit_container
        from sandbox.cli.run import create_container
        from sandbox.containers import lifecycle, monitor
        from sandbox.profiles.model import to_run_options

        ro = to_run_options(self.profile, self.cwd, os.environ)
        steps = list(ro["setup"])
        click.echo(f"sbx: building the setup layer of profile {self.profile.name} "
                   f"({len(steps)} step{'s' if len(steps) != 1 else ''})", err=True)
        opts = dict(cli)
        opts.update(
            rootfs=None, pull_policy="never", name=None, auto_remove=False,
            labels=(), stop_signal=None, stop_timeout=None, entrypoint="",
            env=tuple(ro["env"]), env_file=(), workdir=ro["workdir"], user="0:0",
            hostname=None, read_only=False, tmpfs=tuple(ro["tmpfs"]), cap_add=(),
            cap_drop=(), devices=(), interactive=False, tty=False, init=False, userns="",
            network=ro["network"],
            volume=tuple(self._volumes(ro)))
        created = create_container(opts, (image, "/bin/sh", "-c", SETUP_SCRIPT,
                                          "sbx-setup", *steps))
        store, container = created.store, created.container
        # The steps' output goes to stderr, as a build's progress does: stdout is
        # for the command the user runs (`sbx run dev -- cmd > out` gets only it).
        saved_stdout = os.dup(1)
        try:
            os.dup2(2, 1)
            try:
                with store.lock(container.id) as lock:
                    code = monitor.run_attached(store, container, created.spec,
                                                created.maps, lock, interactive=False)
            finally:
                os.dup2(saved_stdout, 1)
                os.close(saved_stdout)
            if code != 0:
                raise SetupFailed(
                    f"profile {self.profile.name}: setup failed (exit {code}); nothing "
                    "was kept", hint="fix the step, then run again: the steps run "
                                     "from the start")
            record = commit_container(
                store.lookup(container.id), names=[name], keep_cmd=False,
                message=f"sbx profile {self.profile.name}: setup",
                labels={"sbx.profile": self.profile.name, "sbx.setup.key": key})
            click.echo(f"sbx: setup layer kept as {name[:len(SETUP_REPO) + 13]} "
                       f"({record.short_id})", err=True)
        finally:
            lifecycle.remove(store, store.lookup(container.id), force=True)

    # -- the run ---------------------------------------------------------------------

    def _volumes(self, ro: dict[str, Any]) -> list[str]:
        return [*ro["volumes"], *(f"{n}:{p}" for n, p in ro["named_volumes"])]

    def run_opts(self, ro: dict[str, Any], cli: dict[str, Any],
                 ctx: click.Context | None, detach: bool) -> dict[str, Any]:
        """create_container's options: the profile's, then the command line's."""
        opts = dict(cli)
        if ro["userns"] == "keep-id" and _default(ctx, "userns") and _default(ctx, "user"):
            # Your home inside, empty and yours, unless the image has it: for the
            # shell's history and the dotfiles tools write (toolbox mounts the real
            # one; a fresh one keeps runs isolated). create_container checks the image.
            opts["home_tmpfs"] = True
        opts.update(
            env=(*ro["env"], *cli["env"]),
            volume=(*self._volumes(ro), *cli["volume"]),
            tmpfs=(*ro["tmpfs"], *cli["tmpfs"]),
            devices=(*ro["devices"], *cli.get("devices", ())),
            workdir=cli["workdir"] or ro["workdir"],
            labels=(f"sbx.profile={self.profile.name}", *cli["labels"]),
            auto_remove=True,
            entrypoint="" if cli["entrypoint"] is None else cli["entrypoint"],
        )
        if _default(ctx, "userns") and _default(ctx, "user"):
            opts["userns"], opts["user"] = ro["userns"] or "", ro["user"]
        if _default(ctx, "network"):
            opts["network"] = ro["network"]
        for key, opt in (("memory", "memory"), ("cpus", "cpus"), ("pids", "pids_limit")):
            if ro["limits"][key] is not None and _default(ctx, opt):
                opts[opt] = ro["limits"][key]
        if not detach:
            term = os.isatty(0) and os.isatty(1)
            opts["interactive"] = True  # stdin passed, as toolbox run passes it
            opts["tty"] = cli["tty"] or term
        return opts


def notes(ro: dict[str, Any]) -> list[str]:
    """What the profile asks for that this run can't give, one line each."""
    out = list(ro["warnings"])
    if ro["ports"] and ro["network"] != "host":
        out.append("ports: publishing needs rootless networking (slirp4netns/pasta), "
                   "which sbx does not have yet; use network = \"host\"")
    return out


def _cache_key(pr: ProfileRun, cli: dict[str, Any], locked: bool) -> str:
    """What the image a profile resolves to depends on, besides the image store: the
    merged profile, the project's sbx.lock, the inputs' content (setup) and --pull."""
    import hashlib
    import json

    from sandbox.profiles.lock import lock_path
    from sandbox.profiles.model import hash_inputs, resolve_inputs

    try:
        with open(lock_path(pr.cwd), "rb") as f:
            lock = hashlib.sha256(f.read()).hexdigest()
    except OSError:
        lock = ""
    inputs: list[tuple[str, str]] = []
    if pr.profile.setup:
        files = resolve_inputs(pr.cwd, pr.profile.data.get("inputs", []))
        inputs = hash_inputs(pr.cwd, files)
    text = json.dumps([1, pr.cwd, pr.profile.name, pr.profile.data, lock, inputs,
                       cli["pull_policy"], locked], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def resolve_image(pr: ProfileRun, cli: dict[str, Any], locked: bool) -> str:
    """The image a run of the profile starts from (base or setup image), made ready.

    Cached like `sbx run IMAGE`'s lookups (cli/run.py, _RunCache: valid while the
    image store is unchanged), keyed by _cache_key: a warm `sbx run PROFILE` then
    does not open the image store at all. The lock is checked on every run, cache
    or not, so its warnings and --locked's refusal never go stale."""
    from sandbox.cli.run import _RunCache

    class _ProfileCache(_RunCache):
        FILE = "profile_image_cache_file"

    pr.check_lock(locked)
    key = _cache_key(pr, cli, locked) if cli["pull_policy"] != "always" else ""
    if key:
        hit = _ProfileCache.get(key)
        if hit is not None:
            return str(hit["image"])
    before = _ProfileCache.stamp()
    image, base = pr.base_image(cli["pull_policy"], cli["tls_verify"], locked)
    image = pr.with_setup(image, base, cli)
    if key:
        _ProfileCache.put(key, before, {"image": image})
    return image


def run_profile(ref: str, command: Sequence[str], cli: dict[str, Any], *, detach: bool,
                locked: bool = False, shell: bool = False, profile: Any = None) -> None:
    """`sbx run PROFILE [--] [CMD...]` (and `sbx shell PROFILE`)."""
    from sandbox.cli.run import start_created
    from sandbox.profiles.model import to_run_options

    if cli["rootfs"] is not None:
        from sandbox.errors import UsageError

        raise UsageError(f"--rootfs can't be used with profile {ref}",
                         hint="a profile names its image; use sbx run --rootfs DIR CMD")
    ctx = click.get_current_context(silent=True)
    command = list(command)
    if command[:1] == ["--"]:
        command = command[1:]
    pr = ProfileRun(ref, profile=profile)
    ro = to_run_options(pr.profile, pr.cwd, os.environ, command or None)
    if shell:
        ro["args"] = ro["shell_args"]
    for line in notes(ro):
        warn(line)
    image = resolve_image(pr, cli, locked)
    opts = pr.run_opts(ro, cli, ctx, detach)
    start_created(opts, (image, *ro["args"]), detach)


def rebuild(ref: str, cli: dict[str, Any], *, bootstrap: bool) -> str:
    """`sbx profile rebuild`: build the setup layer again (and the bootstrap image);
    returns the name of the image a run now starts from."""
    pr = ProfileRun(ref)
    image, base = pr.base_image(cli["pull_policy"], cli["tls_verify"], False,
                                rebuild_bootstrap=bootstrap)
    if not pr.profile.setup:
        return image
    return pr.with_setup(image, base, cli, rebuild=True)
