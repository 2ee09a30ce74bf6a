#!/usr/bin/env bash
# Build pyfuse3 from its pinned sdist with sbx's carried patches and install it into a
# venv:
#   scripts/build-pyfuse3.sh VENV               patched, into VENV (setup.sh)
#   scripts/build-pyfuse3.sh --stock DIR VENV   unpatched, with VENV's pip, into DIR
#                                               (pip --target), for the test that
#                                               runs fs/ on a stock pyfuse3
# The patches (third_party/pyfuse3/*.patch; README.md there says why) add the
# fallocate(2) handler that pyfuse3 3.5.0 lacks, readdir entries without a lookup
# (readdir_reply(..., lookup=False)) and directories opened without OPENDIR
# (Operations.no_opendir); fs/ uses each when it is there.
#
# The sdist is fetched with VENV's pip (whatever index it is configured with), its
# sha256 checked against the pin below, patched, and built with Cython (pinned too:
# the handlers are compiled from the .pyx, so the C file that ships in the sdist is
# removed first). Needs gcc, pkg-config, libfuse3-dev and patch (setup.sh installs
# them) and a package index; not root.
#
# Idempotent: a stamp records the sdist, the patches and Cython a build was made
# from, and a rerun with the same ones whose result still imports as expected does
# nothing.
set -euo pipefail

PYFUSE3_VERSION=3.5.0
PYFUSE3_SHA256=88399a9494b88603230bba300f4ba9ad63fece5ed514ca3633d555a0c6a42b24
CYTHON_VERSION=3.3.1

say() { printf 'pyfuse3: %s\n' "$*"; }

usage="usage: build-pyfuse3.sh [--stock DIR] VENV"
STOCK=
if [[ ${1:-} == --stock ]]; then
    STOCK=${2:?$usage}
    shift 2
fi
VENV=${1:?$usage}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PATCHES=()
[[ -n $STOCK ]] || PATCHES=("$ROOT"/third_party/pyfuse3/*.patch)
PIP=("$VENV/bin/pip" --disable-pip-version-check)

# What the pyfuse3 there must be built from, and a check that it is.
want="pyfuse3 $PYFUSE3_VERSION sha256:$PYFUSE3_SHA256 cython $CYTHON_VERSION"
for p in "${PATCHES[@]}"; do
    want+=" $(basename "$p") sha256:$(sha256sum "$p" | cut -d' ' -f1)"
done
if [[ -n $STOCK ]]; then
    stamp=$STOCK/.sbx-pyfuse3-stamp
else
    stamp=$VENV/.sbx-pyfuse3-stamp
fi
built() {  # the pyfuse3 in place imports, and has the patches' additions or none
    PYTHONPATH=${STOCK:-} "$VENV/bin/python" - "$PYFUSE3_VERSION" "${STOCK:+stock}" \
        <<'EOF' 2>/dev/null
import inspect
import sys

import pyfuse3

# 0001: the Python default (Operations.fallocate) and the compiled handler that
# calls it; 0002: readdir_reply's lookup argument; 0003: Operations.no_opendir.
added = [hasattr(pyfuse3.Operations, "fallocate"), hasattr(pyfuse3, "fuse_fallocate_async"),
         "lookup" in inspect.signature(pyfuse3.readdir_reply).parameters,
         hasattr(pyfuse3.Operations, "no_opendir")]
want = not any(added) if sys.argv[2:] == ["stock"] else all(added)
sys.exit(0 if pyfuse3.__version__ == sys.argv[1] and want else 1)
EOF
}
what="$PYFUSE3_VERSION with ${#PATCHES[@]} patch(es)"
if [[ -f $stamp && $(cat "$stamp") == "$want" ]] && built; then
    say "$what already in ${STOCK:-$VENV}"
    exit 0
fi

tmp=$(mktemp -d /tmp/sbx-pyfuse3.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

say "fetching the pyfuse3 $PYFUSE3_VERSION sdist"
# --require-hashes: pip refuses any other file; the sha256sum below says it again in
# plain sight.
echo "pyfuse3==$PYFUSE3_VERSION --hash=sha256:$PYFUSE3_SHA256" >"$tmp/req.txt"
"${PIP[@]}" download --quiet --no-deps --no-binary pyfuse3 --require-hashes \
    -r "$tmp/req.txt" -d "$tmp/dl"
sdist=$tmp/dl/pyfuse3-$PYFUSE3_VERSION.tar.gz
echo "$PYFUSE3_SHA256  $sdist" | sha256sum --check --quiet

tar -C "$tmp" --no-same-owner -xzf "$sdist"
src=$tmp/pyfuse3-$PYFUSE3_VERSION
for p in "${PATCHES[@]}"; do
    say "applying $(basename "$p")"
    patch -d "$src" -p1 --forward --batch --fuzz=0 --quiet <"$p"
done
rm -f "$src/src/pyfuse3/__init__.c"  # generated from the unpatched .pyx

echo "Cython==$CYTHON_VERSION" >"$tmp/build-constraints.txt"
say "building (Cython $CYTHON_VERSION)"
"${PIP[@]}" wheel --quiet --no-deps --build-constraint "$tmp/build-constraints.txt" \
    -w "$tmp/wheel" "$src"
# Built: only now is the pyfuse3 there replaced.
rm -f "$stamp"
if [[ -n $STOCK ]]; then
    rm -rf "$STOCK"
    "${PIP[@]}" install --quiet --no-deps --target "$STOCK" "$tmp"/wheel/pyfuse3-*.whl
    chmod -R a+rX "$STOCK"  # the tests run it as the unprivileged test user
else
    # Uninstalled first, as the new one has the same version; trio stays as it is
    # where it is there.
    "${PIP[@]}" uninstall --quiet --yes pyfuse3 >/dev/null 2>&1 || true
    "${PIP[@]}" install --quiet "$tmp"/wheel/pyfuse3-*.whl
fi
if ! built; then
    say "the pyfuse3 installed in ${STOCK:-$VENV} is not what was built" >&2
    exit 1
fi
echo "$want" >"$stamp"
say "$what installed in ${STOCK:-$VENV}"
