"""The rig of the fs/ integration tests: a driver that runs as the unprivileged test
user inside a user and mount namespace, builds layers, mounts sbx-fs over them (or the
kernel's overlayfs, for comparison), runs a list of Python snippets and prints each
one's result as JSON, which the tests assert on.

This file is both the pytest-side runner (`run_driver`) and the driver itself (run as
a script): the test copies it into a directory the test user can read (the checkout
may not be) and runs

    unshare --user --map-root-user --map-auto --mount PYTHON fs_rig.py

as that user, the layout podman uses rootless: the user is root in the namespace and
its subordinate ids are 1..65535. No tests here; pytest collects none.

The driver reads a JSON spec on stdin:
    {"layers": {"l1": [ENTRY, ...], ...}, "ops": ["python snippet", ...], "sbx_fs": PATH}
ENTRY: {"path": "a/b", "type": "file"|"dir"|"symlink"|"fifo"|"whiteout"|"hardlink",
        "data": str, "mode": int, "target": str, "uid": int, "gid": int,
        "xattrs": {name: str}}
Each snippet is an expression (its value is the result) or statements (result None);
an OSError's result is {"errno": "ENOENT"}, any other exception {"error": repr}. The
snippets share one namespace with: os, stat, errno, `m` (the mountpoint), `u` and `w`
(upper and work directories), `L` (layer name -> path), mount(), umount(), kmount()
and small helpers (kind, read, write, tree, xattrs, in_child).
"""

from __future__ import annotations

import ast
import errno
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

DRIVER_TIMEOUT = 120


# -- the driver (runs as the test user, in the namespaces) -----------------------------

def _build(root: Path, entries: list[dict[str, Any]]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for e in entries:
        p = root / e["path"]
        p.parent.mkdir(parents=True, exist_ok=True)
        t = e.get("type", "file")
        if t == "file":
            p.write_bytes(e.get("data", "").encode())
        elif t == "dir":
            p.mkdir(exist_ok=True)
        elif t == "symlink":
            os.symlink(e["target"], p)
        elif t == "fifo":
            os.mkfifo(p)
        elif t == "whiteout":
            os.mknod(p, stat.S_IFCHR | 0o600, os.makedev(0, 0))
        elif t == "hardlink":
            os.link(root / e["target"], p)
        else:
            raise ValueError(f"unknown entry type {t}")
        for name, value in e.get("xattrs", {}).items():
            os.setxattr(p, name, value.encode(), follow_symlinks=False)
        if "uid" in e or "gid" in e:
            os.chown(p, e.get("uid", 0), e.get("gid", 0), follow_symlinks=False)
        if "mode" in e and t != "symlink":
            os.chmod(p, e["mode"])
        if "mtime" in e:
            os.utime(p, (e["mtime"], e["mtime"]), follow_symlinks=False)


def _jsonable(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode("utf-8", "backslashreplace")
    if isinstance(v, dict):
        return {str(_jsonable(k)): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set, frozenset)):
        items = [_jsonable(x) for x in v]
        return sorted(items, key=repr) if isinstance(v, (set, frozenset)) else items
    if isinstance(v, os.stat_result):
        return {"mode": v.st_mode, "ino": v.st_ino, "nlink": v.st_nlink, "uid": v.st_uid,
                "gid": v.st_gid, "size": v.st_size, "rdev": v.st_rdev,
                "mtime_ns": v.st_mtime_ns, "blocks": v.st_blocks}
    if v is None or isinstance(v, (int, float, str, bool)):
        return v
    return repr(v)


def _run_op(op: str, ns: dict[str, Any]) -> Any:
    """Run a snippet; the value of its last statement if that is an expression."""
    tree = ast.parse(op.strip(), "<op>", "exec")
    last = tree.body[-1] if tree.body else None
    if isinstance(last, ast.Expr):
        tree.body.pop()
        exec(compile(tree, "<op>", "exec"), ns)
        return eval(compile(ast.Expression(last.value), "<op>", "eval"), ns)
    exec(compile(tree, "<op>", "exec"), ns)
    return None


def _driver() -> None:
    spec = json.load(sys.stdin)
    base = Path.cwd()
    layers = {name: str(base / name) for name in spec.get("layers", {})}
    for name, entries in spec.get("layers", {}).items():
        _build(base / name, entries)
    for d in ("u", "w", "m"):
        (base / d).mkdir(exist_ok=True)
    _build(base / "u", spec.get("upper", []))
    sbx_fs = spec["sbx_fs"]
    m, u, w = str(base / "m"), str(base / "u"), str(base / "w")
    mounted: list[str] = []

    def mount(lower: list[str] | None = None, upper: bool = True, opts: str = "",
              at: str | None = None) -> str:
        at = at or m
        lows = ":".join(layers.get(x, x) for x in (lower or list(layers)))
        o = f"lowerdir={lows}"
        if upper:
            o += f",upperdir={u},workdir={w}"
        if opts:
            o += "," + opts
        p = subprocess.run([sbx_fs, "-o", o, at], capture_output=True, text=True, timeout=30)
        if p.returncode != 0:
            raise RuntimeError(f"sbx-fs failed ({p.returncode}): {p.stderr.strip()}")
        mounted.append(at)
        return p.stderr

    def kmount(lower: list[str] | None = None, upper: bool = True, at: str | None = None
               ) -> None:
        """The kernel's overlayfs, as an unprivileged user mounts it."""
        at = at or m
        lows = ":".join(layers[x] for x in (lower or list(layers)))
        o = f"lowerdir={lows},userxattr"
        if upper:
            o += f",upperdir={u},workdir={w}"
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o", o, at], check=True,
                       capture_output=True)
        mounted.append(at)

    def umount(at: str | None = None) -> None:
        at = at or m
        subprocess.run(["umount", at], check=True, capture_output=True)
        mounted.remove(at)
        time.sleep(0.05)

    def kind(p: str) -> str:
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            return "missing"
        mode = st.st_mode
        if stat.S_ISCHR(mode):
            return "whiteout" if st.st_rdev == 0 else "chr"
        for name, test in (("dir", stat.S_ISDIR), ("file", stat.S_ISREG),
                           ("symlink", stat.S_ISLNK), ("fifo", stat.S_ISFIFO),
                           ("sock", stat.S_ISSOCK), ("blk", stat.S_ISBLK)):
            if test(mode):
                return name
        return "?"

    def read(p: str) -> str:
        with open(p, "rb") as f:
            return f.read().decode("utf-8", "backslashreplace")

    def write(p: str, data: str, mode: str = "w") -> None:
        with open(p, mode) as f:
            f.write(data)

    def tree(p: str) -> list[str]:
        out = []
        for dirpath, dirnames, filenames in os.walk(p):
            rel = os.path.relpath(dirpath, p)
            for n in dirnames + filenames:
                out.append(os.path.normpath(os.path.join(rel, n)))
        return sorted(out)

    def xattrs(p: str) -> dict[str, str]:
        return {n: os.getxattr(p, n, follow_symlinks=False).decode("utf-8", "replace")
                for n in os.listxattr(p, follow_symlinks=False)}

    def in_child(fn: Any) -> Any:
        """Run fn() in a forked child (to chroot, or change ids) and return its result."""
        r, wfd = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            try:
                res: Any = {"ok": _jsonable(fn())}
            except OSError as exc:
                res = {"errno": errno.errorcode.get(exc.errno or 0, str(exc.errno))}
            except BaseException as exc:
                res = {"error": repr(exc)}
            os.write(wfd, json.dumps(res).encode())
            os._exit(0)
        os.close(wfd)
        data = b""
        while chunk := os.read(r, 65536):
            data += chunk
        os.close(r)
        os.waitpid(pid, 0)
        res = json.loads(data)
        if "errno" in res:
            return res
        if "error" in res:
            raise RuntimeError(res["error"])
        return res["ok"]

    ns: dict[str, Any] = {
        "os": os, "stat": stat, "errno": errno, "json": json, "subprocess": subprocess,
        "time": time, "m": m, "u": u, "w": w, "L": layers, "base": str(base), "sbx_fs": sbx_fs,
        "mount": mount, "kmount": kmount, "umount": umount, "kind": kind, "read": read,
        "write": write, "tree": tree, "xattrs": xattrs, "in_child": in_child,
    }
    results: list[Any] = []
    try:
        for op in spec["ops"]:
            try:
                results.append(_jsonable(_run_op(op, ns)))
            except OSError as exc:
                results.append({"errno": errno.errorcode.get(exc.errno or 0, str(exc.errno))})
            except Exception as exc:
                results.append({"error": f"{type(exc).__name__}: {exc}"})
    finally:
        for at in reversed(mounted):
            subprocess.run(["umount", "-l", at], capture_output=True)
    json.dump(results, sys.stdout)


# -- the runner (pytest side, as root) ------------------------------------------------

def sbx_fs_script() -> Path:
    return Path(sys.executable).parent / "sbx-fs"


def run_driver(user: Any, workdir: Path, ops: list[str], layers: dict[str, list[Any]] | None = None,
               upper: list[Any] | None = None, *, map_auto: bool = True,
               timeout: float = DRIVER_TIMEOUT, sbx_fs: str | None = None) -> list[Any]:
    """Run the driver as `user` (tests/helpers.User) in a fresh directory under
    `workdir`; returns one result per op. Fails the test with the driver's stderr if
    it crashes. `sbx_fs`: the command mount() runs (default: the one beside this
    Python)."""
    run_dir = workdir / f"run{len(list(workdir.iterdir()))}"
    run_dir.mkdir()
    os.chown(run_dir, user.uid, user.gid)
    script = run_dir / "driver.py"
    shutil.copyfile(__file__, script)
    os.chmod(script, 0o644)
    spec = {"layers": layers or {}, "upper": upper or [], "ops": ops,
            "sbx_fs": sbx_fs or str(sbx_fs_script())}
    argv = ["unshare", "--user", "--map-root-user", "--mount"]
    if map_auto:
        argv.insert(3, "--map-auto")
    argv += [sys.executable, str(script)]
    p = subprocess.run(argv, input=json.dumps(spec), capture_output=True, text=True,
                       timeout=timeout, cwd=run_dir, env=user.env(), user=user.uid,
                       group=user.gid, extra_groups=[])
    if p.returncode != 0:
        raise AssertionError(f"driver failed ({p.returncode}):\n{p.stderr}")
    try:
        return json.loads(p.stdout)
    except json.JSONDecodeError:
        raise AssertionError(f"driver printed no JSON:\n{p.stdout}\n{p.stderr}") from None


def err(name: str) -> dict[str, str]:
    return {"errno": name}


if __name__ == "__main__":
    _driver()
