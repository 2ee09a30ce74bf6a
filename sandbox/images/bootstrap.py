"""Base images built from distribution packages with mmdebstrap, for profiles that
say `image = { bootstrap = "debian:bookworm", packages = [...] }`.

No image registry is involved: `mmdebstrap --mode=unshare` (run as the user; it makes
its own user namespace with the subordinate ranges, newuidmap(1)) installs the
packages from the archive into a tar, which becomes a one-layer image named
`localhost/sbx-bootstrap:<key>`, where key is profiles.model.bootstrap_key (suite,
package set, mirror, variant). A second run with the same inputs finds the image and
builds nothing; `sbx profile rebuild --bootstrap` builds it again.

Reproducible: SOURCE_DATE_EPOCH (the caller's, else a fixed one) sets every mtime
mmdebstrap writes and the image's created time, so the same archive content gives
the same layer digest (mmdebstrap(1), "reproducible"). What mmdebstrap copies from
the host for its own use (etc/resolv.conf, etc/hostname) is removed, and /dev is
left empty (`--skip=output/dev`): the runtime mounts its own, and an unprivileged
extraction can't make device nodes anyway.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from sandbox.errors import SbxError
from sandbox.registry import media

if TYPE_CHECKING:
    from sandbox.images.pull import Unpacker
    from sandbox.images.store import ImageRecord, Store

DEFAULT_EPOCH = 1700000000  # 2023-11-14: any fixed value keeps builds reproducible
SUITES = {"debian": ("bookworm", "trixie", "bullseye", "sid", "testing", "stable"),
          "ubuntu": ("noble", "jammy", "focal")}
IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class BootstrapError(SbxError):
    """mmdebstrap is missing or failed."""


def image_name(key: str) -> str:
    """localhost/sbx-bootstrap:<hex of key>"""
    return "localhost/sbx-bootstrap:" + key.partition(":")[2]


def _suite(spec: str) -> tuple[str, str]:
    distro, _, suite = spec.partition(":")
    if distro not in SUITES or not suite:
        raise BootstrapError(f"can't bootstrap {spec!r}",
                             hint="use DISTRIBUTION:SUITE with debian or ubuntu, "
                                  "e.g. debian:bookworm")
    return distro, suite


def mmdebstrap_args(image: Mapping[str, Any], out: str) -> list[str]:
    """The mmdebstrap command line for a bootstrap table, writing a tar to `out`."""
    distro, suite = _suite(str(image["bootstrap"]))
    args = ["mmdebstrap", "--mode=unshare", "--format=tar", "--quiet",
            "--skip=output/dev",
            "--customize-hook=rm -f \"$1/etc/resolv.conf\" \"$1/etc/hostname\"",
            "--customize-hook=rm -rf \"$1/var/cache/apt/archives\"/*.deb"]
    if image.get("variant"):
        args.append(f"--variant={image['variant']}")
    packages = sorted(set(image.get("packages") or []))
    if packages:
        args.append("--include=" + ",".join(packages))
    if distro == "ubuntu":
        args.append("--components=main,universe")
    args += [suite, out]
    if image.get("mirror"):
        args.append(str(image["mirror"]))
    return args


def build(store: Store, image: Mapping[str, Any], key: str, unpacker: Unpacker,
          log: Callable[[str], None] = lambda _m: None,
          env: Mapping[str, str] | None = None) -> ImageRecord:
    """Run mmdebstrap for `image` (a bootstrap table) and store the result as
    image_name(key)."""
    from sandbox.images.commit import store_image

    env = dict(env if env is not None else os.environ)
    epoch = int(env.get("SOURCE_DATE_EPOCH") or DEFAULT_EPOCH)
    env["SOURCE_DATE_EPOCH"] = str(epoch)
    with store.staged_file("bootstrap-") as (_fd, tmp):
        out = f"{tmp}.tar"
        args = mmdebstrap_args(image, out)
        log(f"bootstrapping {image['bootstrap']} with mmdebstrap "
            f"({len(image.get('packages') or [])} packages); this takes a minute")
        try:
            result = subprocess.run(args, env=env, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                    text=True)
        except FileNotFoundError:
            raise BootstrapError("mmdebstrap is not installed",
                                 hint="apt-get install mmdebstrap uidmap") from None
        try:
            if result.returncode != 0:
                tail = "\n".join(result.stderr.strip().splitlines()[-8:])
                raise BootstrapError(f"mmdebstrap failed (exit {result.returncode}) for "
                                     f"{image['bootstrap']}:\n{tail}",
                                     hint="check the package names and that the archive "
                                          "is reachable; `sbx system check` for subuids")
            os.replace(out, tmp)
        finally:
            if os.path.exists(out):
                os.unlink(out)
        size = os.path.getsize(tmp)
        digest = store.adopt(tmp)  # hashed once, there
    created = _epoch_time(epoch)
    arch = media.host_platform().architecture
    doc = {
        "architecture": arch,
        "os": "linux",
        "created": created,
        "config": {"Env": [f"PATH={IMAGE_PATH}"], "Cmd": ["/bin/bash"],
                   "Labels": {"sbx.bootstrap": str(image["bootstrap"]),
                              "sbx.bootstrap.key": key}},
        "rootfs": {"type": "layers", "diff_ids": [digest]},
        "history": [{"created": created,
                     "created_by": " ".join(mmdebstrap_args(image, "OUT.tar")[:-1])}],
    }
    layers = [{"mediaType": media.OCI_LAYER_TAR, "digest": digest, "size": size}]
    return store_image(store, doc, layers, unpacker, [image_name(key)])


def _epoch_time(epoch: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
