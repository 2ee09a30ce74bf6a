"""Real OCI images made offline for the image and registry tests.

Everything here is built by hand and reproducibly (fixed mtimes, sorted entries,
empty owner names, gzip without a name or time stamp, JSON with sorted keys), so
a digest is the same on every run and every machine with the same inputs:

- `build_oci_layout(dest, layers, config_extra=...)` writes an OCI image layout
  (oci-layout, index.json, blobs/sha256/...) from layers given as dicts of
  path -> entry, or as uncompressed tar files; `build_multiarch_layout` writes
  one whose index.json points at an image index of several platforms;
  `read_layout` reads a single-image layout back.
- `busybox_layers()` is a three-layer busybox image (whiteouts, an opaque
  directory, a setuid file, files of uid 1000, a hard link); BUSYBOX_CONFIG is
  its config.
- `push_layout` pushes a layout to a registry with skopeo and returns the
  manifest digest skopeo reports.
- `debian_layers_from_tars` splits two mmdebstrap tars (minbase, and minbase
  plus python3) into base and diff layers; scripts/mkimage-debian.sh runs this
  file as a script to do it and caches the result.

Layer entries (the values of a layer dict; keys are paths relative to /):

    b"..."                     a regular file, mode 0644, root's
    None                       a directory, mode 0755, root's
    file(data, mode, uid, gid) a regular file (mode may hold setuid bits)
    directory(mode, uid, gid)  a directory
    symlink(target)            a symbolic link
    hardlink(target)           a hard link to a path written in the same layer
                               (hard links are written after all other entries)
    whiteout("data/a")         the key "data/.wh.a", with the value b""
    opaque("etc/dir")          the key "etc/dir/.wh..wh..opq", with the value b""

Session fixtures (with `pytest_plugins = ["registry_rig", "image_rig"]`):
`busybox_layout`, `busybox_layout_zstd`, `busybox_multiarch_layout`,
`debian_layout` and `pushed_images`. Layouts are written under the conftest's
`session_tmp` (/tmp/sbx-tests-*, mode 0755, files 0644), so the unprivileged
test user can read them too.

Test modules also import helpers from here before pytest loads it as a plugin,
so it opts out of assertion rewriting (it has no asserts): PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import platform
import posixpath
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    import pytest
except ModuleNotFoundError:  # scripts/mkimage-debian.sh may run this file with a bare python3
    pytest = None  # type: ignore[assignment]

REPO = Path(__file__).resolve().parent.parent
MKIMAGE_DEBIAN = REPO / "scripts" / "mkimage-debian.sh"

MTIME = 1_700_000_000  # 2023-11-14 22:13:20 UTC, also the Debian build's SOURCE_DATE_EPOCH
CREATED = "2023-11-14T22:13:20Z"
# Bump when the bytes that build_oci_layout or debian_layers_from_tars write change:
# scripts/mkimage-debian.sh keys its cache on its own text and this.
LAYOUT_FORMAT_VERSION = "1"

OCI_LAYOUT = {"imageLayoutVersion": "1.0.0"}
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_MEDIA_TYPES = {
    "none": "application/vnd.oci.image.layer.v1.tar",
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
}
REF_NAME = "org.opencontainers.image.ref.name"

Entry = bytes | None | tuple[Any, ...]
Layer = Mapping[str, Entry] | Path


# --- entries ------------------------------------------------------------------------
def file(data: bytes, mode: int = 0o644, uid: int = 0, gid: int = 0) -> tuple[Any, ...]:
    return ("file", data, mode, uid, gid)


def directory(mode: int = 0o755, uid: int = 0, gid: int = 0) -> tuple[Any, ...]:
    return ("dir", mode, uid, gid)


def symlink(target: str, uid: int = 0, gid: int = 0) -> tuple[Any, ...]:
    return ("symlink", target, uid, gid)


def hardlink(target: str) -> tuple[Any, ...]:
    return ("hardlink", target)


def whiteout(path: str) -> str:
    """The entry name that deletes `path` from the layers below."""
    parent, name = posixpath.split(path.strip("/"))
    return posixpath.join(parent, ".wh." + name)


def opaque(path: str) -> str:
    """The entry name that hides everything the layers below hold in directory `path`."""
    return path.strip("/") + "/.wh..wh..opq"


def _clean_name(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    name = name.strip("/")
    if name in ("", "."):
        raise ValueError("a layer entry needs a path below /")
    return name


def _tarinfo(name: str, spec: Entry) -> tuple[tarfile.TarInfo, bytes | None]:
    ti = tarfile.TarInfo(_clean_name(name))
    ti.mtime = MTIME
    ti.uname = ti.gname = ""
    data: bytes | None = None
    if isinstance(spec, bytes):
        spec = file(spec)
    elif spec is None:
        spec = directory()
    kind, *rest = spec
    if kind == "file":
        data, ti.mode, ti.uid, ti.gid = rest
        ti.type = tarfile.REGTYPE
        ti.size = len(data)
    elif kind == "dir":
        ti.mode, ti.uid, ti.gid = rest
        ti.type = tarfile.DIRTYPE
    elif kind == "symlink":
        ti.linkname, ti.uid, ti.gid = rest
        ti.type = tarfile.SYMTYPE
        ti.mode = 0o777
    elif kind == "hardlink":
        (target,) = rest
        ti.linkname = _clean_name(target)
        ti.type = tarfile.LNKTYPE
        ti.mode = 0o644
    else:
        raise ValueError(f"{name}: unknown entry kind {kind!r}")
    return ti, data


def _sort_key(name: str) -> tuple[str, ...]:
    # By path components, so that a directory comes before what it holds.
    return tuple(_clean_name(name).split("/"))


def layer_tar(entries: Mapping[str, Entry]) -> bytes:
    """An uncompressed, reproducible layer tar: entries sorted by path (parents
    first), hard links last so that their targets come before them."""
    infos = [_tarinfo(name, spec) for name, spec in entries.items()]
    infos.sort(key=lambda item: (item[0].type == tarfile.LNKTYPE, _sort_key(item[0].name)))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for ti, data in infos:
            tar.addfile(ti, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


# --- layouts ------------------------------------------------------------------------
def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def host_arch() -> str:
    """The host's architecture as OCI spells it (GOARCH)."""
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64", "i686": "386", "armv7l": "arm"}.get(
        machine, machine
    )


@dataclass
class ImageLayout:
    """One image in an OCI layout directory (or one platform of a multi-arch one)."""

    path: Path
    manifest_digest: str
    config_digest: str
    layer_digests: list[str]
    diff_ids: list[str]
    layer_media_type: str
    manifest_size: int = 0
    platform: str = "linux/amd64"  # os/arch[/variant]
    info: dict[str, Any] = field(default_factory=dict)  # build facts (the Debian image's)

    @property
    def ref(self) -> str:
        """The layout as skopeo names it."""
        return f"oci:{self.path}"

    def blob(self, digest: str) -> Path:
        algorithm, _, hexdigest = digest.partition(":")
        return self.path / "blobs" / algorithm / hexdigest

    def manifest(self) -> dict[str, Any]:
        return json.loads(self.blob(self.manifest_digest).read_bytes())

    def config(self) -> dict[str, Any]:
        return json.loads(self.blob(self.config_digest).read_bytes())

    def compressed_size(self) -> int:
        return sum(self.blob(d).stat().st_size for d in self.layer_digests)


@dataclass
class MultiArchLayout:
    """An OCI layout whose index.json names one image index of several platforms."""

    path: Path
    index_digest: str
    images: dict[str, ImageLayout]  # by platform: "linux/amd64", "linux/arm64/v8"

    @property
    def ref(self) -> str:
        return f"oci:{self.path}"


class _Blobs:
    """blobs/sha256 of a layout being written."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dir = root / "blobs" / "sha256"
        self.dir.mkdir(parents=True, exist_ok=True)
        for d in (root, root / "blobs", self.dir):
            d.chmod(0o755)

    def put_bytes(self, data: bytes) -> tuple[str, int]:
        digest = sha256_digest(data)
        path = self.dir / digest.split(":")[1]
        if not path.exists():
            tmp = self.dir / f".tmp-{os.getpid()}-{digest[7:19]}"
            tmp.write_bytes(data)
            tmp.chmod(0o644)
            tmp.rename(path)
        return digest, len(data)

    def put_file(self, src: Path) -> tuple[str, int]:
        """Move src into the store under its digest."""
        digest = _file_digest(src)
        size = src.stat().st_size
        path = self.dir / digest.split(":")[1]
        if path.exists():
            src.unlink()
        else:
            src.chmod(0o644)
            src.rename(path)
        return digest, size


def _compress(src: Path, dest: Path, compression: str) -> None:
    if compression == "none":
        shutil.copyfile(src, dest)
        return
    # gzip -n: no name and no time stamp in the header, so the bytes are reproducible.
    argv = {"gzip": ["gzip", "-n", "-6", "-c"], "zstd": ["zstd", "-q", "-3", "-c"]}.get(compression)
    if argv is None:
        raise ValueError(f"compression must be gzip, zstd or none, not {compression!r}")
    if shutil.which(argv[0]) is None:
        raise RuntimeError(f"{argv[0]} is not installed: run scripts/setup.sh")
    with open(src, "rb") as fin, open(dest, "wb") as fout:
        subprocess.run(argv, stdin=fin, stdout=fout, check=True, timeout=900)


@dataclass
class _Layer:
    digest: str
    size: int
    diff_id: str


def _write_layers(
    blobs: _Blobs, layers: Sequence[Layer], compression: str
) -> tuple[list[_Layer], str]:
    media_type = LAYER_MEDIA_TYPES.get(compression)
    if media_type is None:
        raise ValueError(f"compression must be gzip, zstd or none, not {compression!r}")
    work = Path(tempfile.mkdtemp(prefix=".work-", dir=blobs.root))
    try:
        tars: list[Path] = []
        for i, layer in enumerate(layers):
            if isinstance(layer, Path):
                tars.append(layer)
            else:
                tar = work / f"layer{i}.tar"
                tar.write_bytes(layer_tar(layer))
                tars.append(tar)

        def one(i: int) -> _Layer:
            diff_id = _file_digest(tars[i])
            out = work / f"layer{i}.blob"
            _compress(tars[i], out, compression)
            digest, size = blobs.put_file(out)
            return _Layer(digest, size, diff_id)

        with ThreadPoolExecutor(max_workers=max(1, min(len(tars), os.cpu_count() or 1))) as ex:
            written = list(ex.map(one, range(len(tars))))
    finally:
        shutil.rmtree(work)
    return written, media_type


def _platform_name(os_: str, arch: str, variant: str | None) -> str:
    return f"{os_}/{arch}" + (f"/{variant}" if variant else "")


def _write_image(
    blobs: _Blobs,
    written: list[_Layer],
    media_type: str,
    *,
    config_extra: Mapping[str, Any] | None,
    arch: str,
    variant: str | None,
    history: Sequence[str] | None,
    created: str,
    annotations: Mapping[str, str] | None,
) -> tuple[ImageLayout, dict[str, Any]]:
    """Write the config and manifest of one image; returns it and its descriptor."""
    config: dict[str, Any] = {
        "created": created,
        "architecture": arch,
        "os": "linux",
        "config": dict(config_extra or {}),
        "rootfs": {"type": "layers", "diff_ids": [w.diff_id for w in written]},
        "history": [
            {"created": created, "created_by": by}
            for by in (history or [f"sbx image_rig: layer {i + 1}" for i in range(len(written))])
        ],
    }
    if variant:
        config["variant"] = variant
    config_digest, config_size = blobs.put_bytes(canonical_json(config))
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": media_type, "digest": w.digest, "size": w.size} for w in written],
    }
    if annotations:
        manifest["annotations"] = dict(annotations)
    manifest_digest, manifest_size = blobs.put_bytes(canonical_json(manifest))
    plat: dict[str, Any] = {"architecture": arch, "os": "linux"}
    if variant:
        plat["variant"] = variant
    descriptor = {
        "mediaType": OCI_MANIFEST,
        "digest": manifest_digest,
        "size": manifest_size,
        "platform": plat,
    }
    image = ImageLayout(
        path=blobs.root,
        manifest_digest=manifest_digest,
        config_digest=config_digest,
        layer_digests=[w.digest for w in written],
        diff_ids=[w.diff_id for w in written],
        layer_media_type=media_type,
        manifest_size=manifest_size,
        platform=_platform_name("linux", arch, variant),
    )
    return image, descriptor


def _write_index_json(root: Path, descriptor: dict[str, Any], ref_name: str | None) -> None:
    descriptor = dict(descriptor)
    if ref_name:
        descriptor["annotations"] = {REF_NAME: ref_name}
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [descriptor]}
    for name, obj in (("oci-layout", OCI_LAYOUT), ("index.json", index)):
        (root / name).write_bytes(canonical_json(obj))
        (root / name).chmod(0o644)


def _fresh_dir(dest: Path) -> Path:
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest} exists and is not empty")
    dest.mkdir(parents=True, exist_ok=True)
    return dest


def build_oci_layout(
    dest: Path,
    layers: Sequence[Layer],
    *,
    config_extra: Mapping[str, Any] | None = None,
    arch: str = "amd64",
    variant: str | None = None,
    compression: str = "gzip",
    history: Sequence[str] | None = None,
    created: str = CREATED,
    annotations: Mapping[str, str] | None = None,
    ref_name: str | None = "latest",
) -> ImageLayout:
    """Write an OCI image layout of one image at dest (new or empty).

    `layers` are dicts of path -> entry (see the module's docstring) or paths of
    uncompressed tar files. `config_extra` is the config's "config" object (Cmd,
    Env, ...). Compression runs the gzip or zstd command (in parallel over layers)."""
    root = _fresh_dir(dest)
    blobs = _Blobs(root)
    written, media_type = _write_layers(blobs, layers, compression)
    image, descriptor = _write_image(
        blobs,
        written,
        media_type,
        config_extra=config_extra,
        arch=arch,
        variant=variant,
        history=history,
        created=created,
        annotations=annotations,
    )
    _write_index_json(root, descriptor, ref_name)
    return image


FAKE_VARIANTS = {"arm64": "v8", "arm": "v7"}


def build_multiarch_layout(
    dest: Path,
    layers: Sequence[Layer],
    *,
    config_extra: Mapping[str, Any] | None = None,
    arches: Sequence[str] = ("amd64", "arm64"),
    compression: str = "gzip",
    history: Sequence[str] | None = None,
    ref_name: str | None = "latest",
) -> MultiArchLayout:
    """One OCI layout with an image index of the same layers for several
    architectures (all but the host's are fakes: only their config says so).
    index.json names the index, so `skopeo copy --all oci:DEST ...` pushes it whole."""
    root = _fresh_dir(dest)
    blobs = _Blobs(root)
    written, media_type = _write_layers(blobs, layers, compression)
    images: dict[str, ImageLayout] = {}
    descriptors = []
    for arch in arches:
        image, descriptor = _write_image(
            blobs,
            written,
            media_type,
            config_extra=config_extra,
            arch=arch,
            variant=FAKE_VARIANTS.get(arch),
            history=history,
            created=CREATED,
            annotations=None,
        )
        images[image.platform] = image
        descriptors.append(descriptor)
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors}
    index_digest, index_size = blobs.put_bytes(canonical_json(index))
    _write_index_json(
        root, {"mediaType": OCI_INDEX, "digest": index_digest, "size": index_size}, ref_name
    )
    return MultiArchLayout(path=root, index_digest=index_digest, images=images)


def read_layout(path: Path) -> ImageLayout:
    """The one image of an OCI layout that build_oci_layout (or anyone) wrote."""
    path = Path(path)
    index = json.loads((path / "index.json").read_bytes())
    (descriptor,) = index["manifests"]
    if descriptor["mediaType"] != OCI_MANIFEST:
        raise ValueError(f"{path}: index.json names a {descriptor['mediaType']}, not a manifest")
    blob_dir = path / "blobs" / "sha256"
    manifest = json.loads((blob_dir / descriptor["digest"].split(":")[1]).read_bytes())
    config = json.loads((blob_dir / manifest["config"]["digest"].split(":")[1]).read_bytes())
    info_file = path.parent / "build.json"
    return ImageLayout(
        path=path,
        manifest_digest=descriptor["digest"],
        config_digest=manifest["config"]["digest"],
        layer_digests=[layer["digest"] for layer in manifest["layers"]],
        diff_ids=list(config["rootfs"]["diff_ids"]),
        layer_media_type=manifest["layers"][0]["mediaType"] if manifest["layers"] else "",
        manifest_size=descriptor["size"],
        platform=_platform_name(config["os"], config["architecture"], config.get("variant")),
        info=json.loads(info_file.read_text()) if info_file.is_file() else {},
    )


# --- the busybox image ---------------------------------------------------------------
BUSYBOX = "/bin/busybox"
PASSWD = b"""\
root:x:0:0:root:/root:/bin/sh
tester:x:1000:1000:tester:/home/tester:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
"""
GROUP = b"""\
root:x:0:
tester:x:1000:
nogroup:x:65534:
"""
DATA = {"data/a": b"a: deleted by layer 3\n", "data/b": b"b\n", "data/c": b"c\n"}
SUID_FILE = "bin/suidtest"
SUID_DATA = b"#!/bin/sh\necho setuid test file\n"
OPAQUE_DIR = "etc/opaque-dir"
HARDLINK = ("data/d-hardlink", "data/d")  # (the link, its target), both in layer 3
DATA_D = b"d: hard-linked as data/d-hardlink\n"
IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BUSYBOX_CONFIG: dict[str, Any] = {
    "Cmd": ["sh"],
    "Env": [f"PATH={IMAGE_PATH}", "FROM_IMAGE=busybox"],
    "WorkingDir": "/",
    "User": "",
    "Labels": {"org.opencontainers.image.title": "sbx-test-busybox", "sbx.test": "busybox"},
    "StopSignal": "SIGTERM",
    "Volumes": {"/vol": {}},
}
BUSYBOX_HISTORY = [
    "busybox rootfs (bin/busybox, applet links, etc/passwd, etc/group)",
    "data/{a,b,c}, home/tester (1000:1000), setuid bin/suidtest, etc/opaque-dir/{x,y}",
    "rm data/a; etc/opaque-dir opaque with z only; data/d and a hard link to it",
]
# What an unpacked busybox image holds (and does not), for the tests' checks.
BUSYBOX_EXPECTED_FILES = {
    "data/b": DATA["data/b"],
    "data/c": DATA["data/c"],
    "data/d": DATA_D,
    "data/d-hardlink": DATA_D,
    f"{OPAQUE_DIR}/z": b"z\n",
    SUID_FILE: SUID_DATA,
    "etc/passwd": PASSWD,
    "etc/group": GROUP,
    "home/tester/.profile": b"export PS1='tester$ '\n",
}
BUSYBOX_ABSENT = ["data/a", f"{OPAQUE_DIR}/x", f"{OPAQUE_DIR}/y"]


def busybox_applets(busybox: str = BUSYBOX) -> list[str]:
    out = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True)
    return sorted(a for a in out.stdout.split() if a and a != "busybox")


def busybox_layers(busybox: str = BUSYBOX) -> list[dict[str, Entry]]:
    """The three layers of the busybox test image (see BUSYBOX_HISTORY)."""
    base: dict[str, Entry] = {
        d: None for d in ("bin", "sbin", "etc", "proc", "sys", "dev", "run", "home", "usr")
    }
    base.update(
        {
            "usr/bin": None,
            "var": None,
            "vol": None,
            "root": directory(0o700),
            "tmp": directory(0o1777),
            "var/tmp": directory(0o1777),
            "bin/busybox": file(Path(busybox).read_bytes(), 0o755),
            "etc/passwd": PASSWD,
            "etc/group": GROUP,
        }
    )
    for applet in busybox_applets(busybox):
        base[f"bin/{applet}"] = symlink("busybox")
    second: dict[str, Entry] = {
        "data": None,
        **DATA,
        "home/tester": directory(0o755, 1000, 1000),
        "home/tester/.profile": file(
            BUSYBOX_EXPECTED_FILES["home/tester/.profile"], 0o644, 1000, 1000
        ),
        SUID_FILE: file(SUID_DATA, 0o4755),
        OPAQUE_DIR: None,
        f"{OPAQUE_DIR}/x": b"x\n",
        f"{OPAQUE_DIR}/y": b"y\n",
    }
    third: dict[str, Entry] = {
        "data": None,
        whiteout("data/a"): b"",
        OPAQUE_DIR: None,
        opaque(OPAQUE_DIR): b"",
        f"{OPAQUE_DIR}/z": b"z\n",
        "data/d": DATA_D,
        HARDLINK[0]: hardlink(HARDLINK[1]),
    }
    return [base, second, third]


def build_busybox_layout(
    dest: Path, *, compression: str = "gzip", arch: str | None = None, busybox: str = BUSYBOX
) -> ImageLayout:
    return build_oci_layout(
        dest,
        busybox_layers(busybox),
        config_extra=BUSYBOX_CONFIG,
        arch=arch or host_arch(),
        compression=compression,
        history=BUSYBOX_HISTORY,
    )


def build_busybox_multiarch(dest: Path, *, busybox: str = BUSYBOX) -> MultiArchLayout:
    """The busybox image for the host's architecture and a fake for the other
    of amd64/arm64 (same layers, its config says arm64/v8 or amd64)."""
    real = host_arch()
    fake = "arm64" if real != "arm64" else "amd64"
    return build_multiarch_layout(
        dest,
        busybox_layers(busybox),
        config_extra=BUSYBOX_CONFIG,
        arches=(real, fake),
        history=BUSYBOX_HISTORY,
    )


# --- pushing --------------------------------------------------------------------------
def push_layout(
    layout: ImageLayout | MultiArchLayout | Path,
    registry_hostport: str,
    ref: str,
    *,
    fmt: str = "oci",
    compression: str | None = None,
    timeout: float = 600,
) -> str:
    """Push a layout to HOST:PORT/REF (plain HTTP or unverified TLS) with skopeo;
    returns the manifest (or index) digest skopeo reports. fmt "v2s2" converts
    to Docker schema 2; compression "zstd" or "gzip" recompresses the layers.
    A MultiArchLayout is pushed whole (`--all`)."""
    path = layout if isinstance(layout, Path) else layout.path
    argv = ["skopeo", "copy", "--quiet", "--insecure-policy", "--dest-tls-verify=false"]
    if isinstance(layout, MultiArchLayout):
        argv.append("--all")
    if fmt == "v2s2":
        argv += ["--format", "v2s2"]
    elif fmt != "oci":
        raise ValueError(f"fmt must be oci or v2s2, not {fmt!r}")
    if compression:
        argv += ["--dest-compress", "--dest-compress-format", compression]
    with tempfile.TemporaryDirectory(prefix="sbx-push-") as tmp:
        digestfile = Path(tmp) / "digest"
        argv += [
            "--digestfile",
            str(digestfile),
            f"oci:{path}",
            f"docker://{registry_hostport}/{ref}",
        ]
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if p.returncode != 0:
            raise RuntimeError(f"skopeo copy failed ({p.returncode}): {' '.join(argv)}\n{p.stderr}")
        return digestfile.read_text().strip()


@dataclass
class PushedImage:
    host: str  # 127.0.0.1:PORT
    repository: str  # sbx/busybox
    tag: str
    digest: str  # of the manifest (or the index, for a multi-arch image)
    layout: ImageLayout | MultiArchLayout
    media_type: str = OCI_MANIFEST
    platform_digests: dict[str, str] = field(default_factory=dict)  # multi-arch: platform -> digest

    @property
    def ref(self) -> str:
        return f"{self.host}/{self.repository}:{self.tag}"

    @property
    def by_digest(self) -> str:
        return f"{self.host}/{self.repository}@{self.digest}"


@dataclass
class PushedImages:
    host: str
    busybox: PushedImage  # sbx/busybox:1, OCI manifest, gzip layers
    busybox_v2s2: PushedImage  # sbx/busybox-v2s2:1, Docker schema 2, gzip layers
    busybox_zstd: PushedImage  # sbx/busybox-zstd:1, OCI manifest, zstd layers
    multi: PushedImage  # sbx/multi:1, OCI image index: host arch (real) + a fake

    def all(self) -> list[PushedImage]:
        return [self.busybox, self.busybox_v2s2, self.busybox_zstd, self.multi]


def push_test_images(
    host: str, gzip_layout: ImageLayout, zstd_layout: ImageLayout, multi: MultiArchLayout
) -> PushedImages:
    def pushed(layout: Any, repo: str, media_type: str, **kw: Any) -> PushedImage:
        digest = push_layout(layout, host, f"{repo}:1", **kw)
        return PushedImage(host, repo, "1", digest, layout, media_type)

    v2s2 = "application/vnd.docker.distribution.manifest.v2+json"
    images = PushedImages(
        host=host,
        busybox=pushed(gzip_layout, "sbx/busybox", OCI_MANIFEST),
        busybox_v2s2=pushed(gzip_layout, "sbx/busybox-v2s2", v2s2, fmt="v2s2"),
        busybox_zstd=pushed(zstd_layout, "sbx/busybox-zstd", OCI_MANIFEST),
        multi=pushed(multi, "sbx/multi", OCI_INDEX),
    )
    images.multi.platform_digests = {p: i.manifest_digest for p, i in multi.images.items()}
    return images


# --- the Debian image ---------------------------------------------------------------------
# mmdebstrap copies the host's resolv.conf and hostname in: not reproducible, and a
# runtime provides both. Device nodes: runtimes make /dev; image layers carry none.
DEBIAN_DROP = frozenset({"etc/resolv.conf", "etc/hostname"})
DEBIAN_CONFIG: dict[str, Any] = {
    "Cmd": ["python3"],
    "Env": [f"PATH={IMAGE_PATH}", "LANG=C.UTF-8", "FROM_IMAGE=debian-python3"],
    "WorkingDir": "/",
    "Labels": {
        "org.opencontainers.image.title": "sbx-test-debian-python3",
        "org.opencontainers.image.version": "bookworm",
        "sbx.test": "debian",
    },
}
DEBIAN_HISTORY = [
    "mmdebstrap --mode=unshare --variant=minbase bookworm",
    "mmdebstrap ... --include=python3 bookworm, as a diff against the layer below",
    "etc/sbx-image-release, etc/profile.d/sbx.sh, usr/local/bin/sbx-hello; rm etc/motd",
]
SBX_HELLO = b"""\
#!/usr/bin/python3
import platform
import sys

print("hello from", platform.python_implementation(), sys.version.split()[0])
"""
DEBIAN_CONFIG_LAYER: dict[str, Entry] = {
    "etc": None,
    "etc/sbx-image-release": b"NAME=sbx-test-debian-python3\nSUITE=bookworm\n",
    "etc/profile.d": None,
    "etc/profile.d/sbx.sh": b"export SBX_TEST_IMAGE=debian-python3\n",
    whiteout("etc/motd"): b"",
    "usr/local/bin/sbx-hello": file(SBX_HELLO, 0o755),
}
_PAX_KEEP_OUT = {
    "path",
    "linkpath",
    "size",
    "uid",
    "gid",
    "uname",
    "gname",
    "mtime",
    "atime",
    "ctime",
}


def _norm(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name.strip("/")


def _debian_keep(name: str, member: tarfile.TarInfo) -> bool:
    if name in ("", ".") or name in DEBIAN_DROP:
        return False
    if member.ischr() or member.isblk() or member.isfifo():
        return False
    return not name.startswith("dev/")


def _prepare(member: tarfile.TarInfo, name: str) -> tarfile.TarInfo:
    member.name = name
    if member.islnk():
        member.linkname = _norm(member.linkname)
    if member.type == tarfile.AREGTYPE:
        member.type = tarfile.REGTYPE
    member.uname = member.gname = ""
    member.pax_headers = {k: v for k, v in member.pax_headers.items() if k not in _PAX_KEEP_OUT}
    return member


def _read(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes | None:
    if not member.isreg():
        return None
    f = tar.extractfile(member)
    return f.read() if f else b""


def _signature(member: tarfile.TarInfo, data: bytes | None) -> tuple[Any, ...]:
    kind = tarfile.REGTYPE if member.type == tarfile.AREGTYPE else member.type
    linkname = _norm(member.linkname) if member.islnk() else member.linkname
    xattrs = sorted((k, v) for k, v in member.pax_headers.items() if k not in _PAX_KEEP_OUT)
    content = hashlib.sha256(data).hexdigest() if data is not None else None
    return (kind, member.mode, member.uid, member.gid, int(member.mtime), member.size,
            linkname, content, tuple(xattrs))  # fmt: skip


def _members(tar: tarfile.TarFile) -> Iterator[tuple[str, tarfile.TarInfo]]:
    for member in tar:
        name = _norm(member.name)
        if _debian_keep(name, member):
            yield name, member


def debian_layers_from_tars(base_tar: Path, full_tar: Path, work: Path) -> list[Path]:
    """Layer tars from two mmdebstrap tars: the base rootfs itself, then what the
    full one adds or changes (whole hard-link groups) plus whiteouts for what it
    lacks; a third layer of config files is a dict, DEBIAN_CONFIG_LAYER."""
    layer1, layer2 = work / "layer1.tar", work / "layer2.tar"
    base: dict[str, tuple[Any, ...]] = {}
    with (
        tarfile.open(base_tar, "r|") as src,
        tarfile.open(layer1, "w", format=tarfile.PAX_FORMAT) as out,
    ):
        for name, member in _members(src):
            data = _read(src, member)
            base[name] = _signature(member, data)
            out.addfile(_prepare(member, name), io.BytesIO(data) if data is not None else None)

    with tarfile.open(full_tar, "r:") as src:
        members = list(_members(src))
        present = {name for name, _ in members}
        changed = set()
        types = {}
        for name, member in members:
            types[name] = member.type
            if base.get(name) != _signature(member, _read(src, member)):
                changed.add(name)
        groups: dict[str, list[str]] = {}
        for name, member in members:
            if member.islnk():
                groups.setdefault(_norm(member.linkname), []).append(name)
        for target, links in groups.items():
            if target in changed or changed.intersection(links):
                changed.update([target, *links])
        removed = {name for name in base if name not in present}

        def covered(name: str) -> bool:
            # A path below a removed directory, or below one that is no longer one.
            parent = posixpath.dirname(name)
            while parent:
                if parent in removed or (parent in changed and types[parent] != tarfile.DIRTYPE):
                    return True
                parent = posixpath.dirname(parent)
            return False

        with tarfile.open(layer2, "w", format=tarfile.PAX_FORMAT) as out:
            for name, member in members:
                if name in changed:
                    data = _read(src, member)
                    out.addfile(
                        _prepare(member, name), io.BytesIO(data) if data is not None else None
                    )
            for name in sorted(removed, key=_sort_key):
                if not covered(name):
                    ti, _ = _tarinfo(whiteout(name), b"")
                    out.addfile(ti, io.BytesIO(b""))
    return [layer1, layer2]


def build_debian_layout(
    base_tar: Path, full_tar: Path, dest: Path, info: dict[str, Any]
) -> ImageLayout:
    t0 = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="sbx-debian-layers-", dir=Path(dest).parent))
    try:
        tars = debian_layers_from_tars(base_tar, full_tar, work)
        config_tar = work / "layer3.tar"
        config_tar.write_bytes(layer_tar(DEBIAN_CONFIG_LAYER))
        tars.append(config_tar)
        sizes = [t.stat().st_size for t in tars]
        image = build_oci_layout(
            dest,
            tars,
            config_extra=DEBIAN_CONFIG,
            arch=host_arch(),
            compression="gzip",
            history=DEBIAN_HISTORY,
        )
    finally:
        shutil.rmtree(work)
    info.update(
        layout_seconds=round(time.monotonic() - t0, 1),
        layer_tar_bytes=sizes,
        uncompressed_bytes=sum(sizes),
        compressed_bytes=image.compressed_size(),
        manifest_digest=image.manifest_digest,
        layer_digests=image.layer_digests,
    )
    image.info = info
    return image


def _main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="image_rig.py", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("format-version", help="print LAYOUT_FORMAT_VERSION (a cache key part)")
    deb = sub.add_parser("debian-layout", help="an OCI layout from two mmdebstrap tars")
    deb.add_argument("--base", type=Path, required=True, help="the minbase tar")
    deb.add_argument("--full", type=Path, required=True, help="the minbase+python3 tar")
    deb.add_argument("--out", type=Path, required=True, help="the layout directory to make")
    deb.add_argument("--info", type=Path, help="a JSON file of build facts to complete")
    bb = sub.add_parser("busybox-layout", help="the busybox test image as an OCI layout")
    bb.add_argument("out", type=Path)
    bb.add_argument("--compression", default="gzip", choices=sorted(LAYER_MEDIA_TYPES))
    bb.add_argument("--multiarch", action="store_true")
    args = parser.parse_args(argv)
    if args.cmd == "format-version":
        print(LAYOUT_FORMAT_VERSION)
    elif args.cmd == "debian-layout":
        info = json.loads(args.info.read_text()) if args.info and args.info.exists() else {}
        image = build_debian_layout(args.base, args.full, args.out, info)
        if args.info:
            args.info.write_text(json.dumps(image.info, indent=2) + "\n")
        print(json.dumps(image.info, indent=2))
    elif args.multiarch:
        print(build_busybox_multiarch(args.out).index_digest)
    else:
        print(build_busybox_layout(args.out, compression=args.compression).manifest_digest)
    return 0


# --- pytest fixtures ----------------------------------------------------------------------
def _tool_reason(*tools: str) -> str | None:
    for tool in tools:
        if shutil.which(tool) is None and not os.access(tool, os.X_OK):
            return f"{tool} not installed: run scripts/setup.sh"
    return None


def _busybox_reason() -> str | None:
    if not os.access(BUSYBOX, os.X_OK):
        return f"{BUSYBOX} missing: install busybox-static (run scripts/setup.sh)"
    return None


def run_mkimage_debian(out: Path, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(MKIMAGE_DEBIAN), str(out)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd="/",
    )


def _skip_if(reason: str | None) -> None:
    if reason:
        pytest.skip(reason)


if pytest is not None:
    pytest_plugins = ["registry_rig"]

    @pytest.fixture(scope="session")
    def image_dir(session_tmp: Path) -> Path:
        """session_tmp/images (0755): where the session's layouts are written."""
        path = session_tmp / "images"
        path.mkdir(mode=0o755, exist_ok=True)
        path.chmod(0o755)
        return path

    @pytest.fixture(scope="session")
    def busybox_layout(image_dir: Path) -> ImageLayout:
        """The three-layer busybox image, gzip layers, host architecture."""
        _skip_if(_busybox_reason() or _tool_reason("gzip"))
        return build_busybox_layout(image_dir / "busybox")

    @pytest.fixture(scope="session")
    def busybox_layout_zstd(image_dir: Path) -> ImageLayout:
        """The same image with zstd layers (application/vnd.oci.image.layer.v1.tar+zstd)."""
        _skip_if(_busybox_reason() or _tool_reason("zstd"))
        return build_busybox_layout(image_dir / "busybox-zstd", compression="zstd")

    @pytest.fixture(scope="session")
    def busybox_multiarch_layout(image_dir: Path) -> MultiArchLayout:
        """An image index: the busybox image for the host's arch and a fake other one."""
        _skip_if(_busybox_reason() or _tool_reason("gzip"))
        return build_busybox_multiarch(image_dir / "busybox-multi")

    @pytest.fixture(scope="session")
    def debian_layout(image_dir: Path) -> ImageLayout:
        """Debian bookworm with python3 in 3 layers (scripts/mkimage-debian.sh; its
        first build takes about a minute and needs the Debian mirror, then it is
        cached under /var/cache/sbx-test/debian-python3)."""
        _skip_if(_tool_reason("mmdebstrap"))
        out = image_dir / "debian"
        p = None
        if not (out / "index.json").exists():
            p = run_mkimage_debian(out)
            if p.returncode != 0:
                pytest.fail(
                    f"scripts/mkimage-debian.sh failed (exit {p.returncode}):\n"
                    f"{(p.stdout + p.stderr)[-4000:]}",
                    pytrace=False,
                )
        image = read_layout(out)
        if p is not None and p.stdout.strip():
            image.info = json.loads(p.stdout)
        return image

    @pytest.fixture(scope="session")
    def pushed_images(
        registry: Any,
        busybox_layout: ImageLayout,
        busybox_layout_zstd: ImageLayout,
        busybox_multiarch_layout: MultiArchLayout,
    ) -> PushedImages:
        """The busybox images pushed to the session's plain-HTTP `registry` as
        sbx/busybox:1 (OCI, gzip), sbx/busybox-v2s2:1 (Docker schema 2),
        sbx/busybox-zstd:1 and sbx/multi:1 (an OCI index)."""
        _skip_if(_tool_reason("skopeo"))
        return push_test_images(
            registry.host, busybox_layout, busybox_layout_zstd, busybox_multiarch_layout
        )


def iter_layer_names(layout: ImageLayout, index: int) -> Iterable[str]:
    """The entry names of one layer (decompressed with the matching command)."""
    blob = layout.blob(layout.layer_digests[index])
    argv = {"gzip": ["gzip", "-dc"], "zstd": ["zstd", "-dcq"]}.get(
        layout.layer_media_type.rsplit("+", 1)[-1]
    )
    with open(blob, "rb") as f:
        if argv is None:
            with tarfile.open(fileobj=f, mode="r|") as tar:
                return [m.name for m in tar]
        p = subprocess.run(argv, stdin=f, capture_output=True, check=True)
    with tarfile.open(fileobj=io.BytesIO(p.stdout), mode="r|") as tar:
        return [m.name for m in tar]


if __name__ == "__main__":
    sys.exit(_main())
