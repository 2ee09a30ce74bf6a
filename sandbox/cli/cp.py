"""`sbx cp`: copy files between a container and the host, as `docker cp`/`podman cp`.

    sbx cp [-a] [-L] CONTAINER:SRC DEST|-
    sbx cp [-a] [-L] SRC|- CONTAINER:DEST

Works on running containers (their namespaces are joined) and stopped ones (their
root is mounted in a namespace of its own, volumes included): sandbox/containers/
enter.py. One side writes a tar stream and the other reads it, each in its own
process, so nothing is held in memory or spooled (but a `-` archive on stdin, which
is checked whole before anything is written). docker's path rules and the archive
checks are sandbox/containers/archive.py.

Owners: files copied in belong to the container's root, or with `-a` keep their
owners as the container's id map shows them (a file of the user's is root's; ids the
map lacks become 65534, nobody); files copied out belong to the user who copies.
A path is split as docker's splitCpArg does: one starting with / or . is local,
else CONTAINER:PATH when it has a colon.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from sandbox.cli import handle_errors
from sandbox.errors import UsageError

NOBODY = 65534


def split(arg: str) -> tuple[str | None, str]:
    """(container or None, path); "-" is stdin or stdout."""
    if arg == "-" or arg.startswith(("/", ".")):
        return None, arg
    name, colon, path = arg.partition(":")
    if not colon:
        return None, arg
    if not name:
        raise UsageError(f"invalid container path {arg!r}", hint="CONTAINER:PATH")
    return name, path or "/"


def container_path(path: str) -> str:
    """Container paths are relative to its / (docker-cp(1)); a trailing / or /. is
    kept, as it means something to the path rules."""
    return path if path.startswith("/") else "/" + path


def _first_error(producer: BaseException | None, consumer: BaseException | None
                 ) -> BaseException | None:
    """The error to report: the writer's, unless it only saw the reader go away."""
    if producer is not None and getattr(producer, "kind", "") not in (
            "BrokenPipeError", "ConnectionResetError"):
        return producer
    return consumer or producer


def _run(fn: Any) -> BaseException | None:
    from sandbox.errors import SbxError

    try:
        fn()
    except SbxError as exc:
        return exc
    return None


@click.command()
@click.option("-a", "--archive", is_flag=True,
              help="Keep owners (mapped into the container) instead of root's.")
@click.option("-L", "--follow-link", "follow", is_flag=True,
              help="Follow a symbolic link in SRC.")
@click.argument("src")
@click.argument("dest")
@handle_errors
def cp(archive: bool, follow: bool, src: str, dest: str) -> None:
    """Copy files between a container and the host (- : a tar stream)."""
    from sandbox.containers.store import ContainerStore

    src_ctr, src_path = split(src)
    dest_ctr, dest_path = split(dest)
    if src_ctr and dest_ctr:
        raise UsageError("copying between containers is not supported",
                         hint="copy to the host first, then into the other container")
    if not src_ctr and not dest_ctr:
        raise UsageError("one of SRC and DEST must be a container path",
                         hint="sbx cp CONTAINER:PATH DEST, or sbx cp SRC CONTAINER:PATH")
    store = ContainerStore()
    if src_ctr:
        if src_path == "-":
            raise UsageError("a container path can't be -")
        _copy_out(store, store.lookup(src_ctr), container_path(src_path), dest_path, follow)
    else:
        if dest_path == "-":
            raise UsageError("a container path can't be -")
        _copy_in(store, store.lookup(dest_ctr or ""), src_path, container_path(dest_path),
                 archive, follow)


def _copy_out(store: Any, ctr: Any, src: str, dest: str, follow: bool) -> None:
    from sandbox.containers import archive as ar
    from sandbox.containers import enter

    source = ar.parse_source(src)
    if dest == "-":
        sys.stdout.flush()
        out_fd = sys.stdout.fileno()

        def produce_stdout() -> None:
            with os.fdopen(out_fd, "wb", closefd=False) as f:
                ar.write_tree(f, source, follow=follow)

        enter.call(store, ctr, produce_stdout)
        return
    r, w = os.pipe()

    def extract_host() -> int:
        with os.fdopen(r, "rb") as f:
            return ar.extract(f, dest)  # as the user: the files are the user's

    host = enter.Forked(extract_host, close=[w])
    os.close(r)

    def produce() -> None:
        with os.fdopen(w, "wb", closefd=False) as f:
            ar.write_tree(f, source, follow=follow)

    try:
        produced = _run(lambda: enter.call(store, ctr, produce))
    finally:
        os.close(w)
    extracted = _run(host.result)
    err = _first_error(produced, extracted)
    if err is not None:
        raise err


def _copy_in(store: Any, ctr: Any, src: str, dest: str, archive: bool,
             follow: bool) -> None:
    from sandbox.containers import archive as ar
    from sandbox.containers import enter

    keep = archive
    owner = (0, 0)
    if src == "-":
        import shutil
        import tempfile

        with tempfile.TemporaryFile(prefix="sbx-cp-") as spool:
            shutil.copyfileobj(sys.stdin.buffer, spool, 1 << 20)
            spool.seek(0)
            ar.validate(spool)  # every name, before anything is written
            fd = spool.fileno()

            def extract_spool() -> int:
                os.lseek(fd, 0, os.SEEK_SET)
                with os.fdopen(fd, "rb", closefd=False) as f:
                    return ar.extract(f, dest, contents_only_stream=True, owner=owner,
                                      keep_owners=keep)

            enter.call(store, ctr, extract_spool)
        return
    source = ar.parse_source(src)
    if not os.path.lexists(source.path):
        raise ar.CopyError(f"no such file or directory: {src}")
    ids = _to_container_ids(ctr)
    r, w = os.pipe()

    def produce_host() -> None:
        with os.fdopen(w, "wb") as f:
            ar.write_tree(f, source, follow=follow, ids=ids)

    host = enter.Forked(produce_host, close=[r])
    os.close(w)

    def extract() -> int:
        with os.fdopen(r, "rb", closefd=False) as f:
            return ar.extract(f, dest, owner=owner, keep_owners=keep)

    try:
        extracted = _run(lambda: enter.call(store, ctr, extract))
    finally:
        os.close(r)
    produced = _run(host.result)
    err = _first_error(produced, extracted)
    if err is not None:
        raise err


def _to_container_ids(ctr: Any) -> Any:
    """Host ids -> the ids the container's map shows them as (65534 when unmapped)."""
    from sandbox.runtime import idmap

    uid, gid, username, _home = idmap.current_user()
    maps = idmap.plan(uid, gid, username, ctr.config.get("userns") == "keep-id")

    def ids(u: int, g: int) -> tuple[int, int]:
        cu = idmap.to_container(maps.uid_maps, u)
        cg = idmap.to_container(maps.gid_maps, g)
        return (NOBODY if cu is None else cu, NOBODY if cg is None else cg)

    return ids
