#!/usr/bin/env bash
# Prepare a Debian 12 machine for sbx: packages, the venv at /opt/sbx/venv,
# /usr/local/bin/sbx, /dev/fuse and the two test users. Idempotent: a rerun
# on a prepared machine only reinstalls sbx itself from this checkout (and
# pyfuse3, when third_party/pyfuse3's patches changed: scripts/build-pyfuse3.sh).
#
# Why /opt/sbx/venv and Debian's /usr/bin/python3: the integration tests run sbx
# as the unprivileged user sbxtest, who cannot read root's home (where CI may
# clone the project and where pyenv lives), so the interpreter, the venv and the
# installed package must all live outside it and be world-readable.
set -euo pipefail

if [[ $EUID -ne 0 ]]; then
    exec sudo -- bash "$0" "$@"
fi

umask 022
export DEBIAN_FRONTEND=noninteractive
export PIP_DISABLE_PIP_VERSION_CHECK=1

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# SBX_VENV: a second venv for a second checkout (a git worktree under work), so two
# people testing at once do not reinstall each other's code; only the default one
# is linked as /usr/local/bin/sbx.
VENV=${SBX_VENV:-/opt/sbx/venv}
TEST_USER=sbxtest
NOSUB_USER=sbxnosub
SUB_RANGE=200000:65536

PACKAGES=(
    uidmap bubblewrap busybox-static fuse3 libfuse3-dev pkg-config
    python3-venv python3-dev gcc patch
    podman runc slirp4netns passt fuse-overlayfs catatonit
    hyperfine skopeo docker-registry openssl apache2-utils zstd
    mmdebstrap umoci gpg arch-test
    iproute2 procps util-linux
    qemu-system-x86
)

say() { printf 'setup: %s\n' "$*"; }

# Run a noisy command with its output kept aside; show it only if it fails.
quiet() {
    local log rc=0
    log=$(mktemp /tmp/sbx-setup-log.XXXXXX)
    "$@" >"$log" 2>&1 || rc=$?
    if ((rc)); then
        cat "$log" >&2
        say "failed ($rc): $*" >&2
    fi
    rm -f "$log"
    return "$rc"
}

# --- packages ---------------------------------------------------------------
missing=()
for pkg in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
    [[ $status == installed ]] || missing+=("$pkg")
done
if ((${#missing[@]})); then
    say "installing ${#missing[@]} package(s): ${missing[*]}"
    quiet apt-get update
    quiet apt-get install -y --no-install-recommends "${PACKAGES[@]}"
else
    say "packages: all ${#PACKAGES[@]} already installed"
fi

# --- test VM kernel -----------------------------------------------------------
# Debian's kernel for the cgroup v2 VM test (tests/vm_rig.py), fetched into
# /var/cache/sbx-test/vm and never installed; x86_64 only, a no-op elsewhere.
bash "$ROOT/scripts/mkvm.sh" | sed 's/^/setup: /'

# --- venv -------------------------------------------------------------------
if [[ ! -x $VENV/bin/python ]]; then
    say "creating $VENV with /usr/bin/python3 ($(/usr/bin/python3 --version 2>&1))"
    mkdir -p "$(dirname "$VENV")"
    /usr/bin/python3 -m venv "$VENV"
    # Debian's ensurepip brings setuptools 66; wheel is needed to build without
    # build isolation (which would fetch setuptools again on every run).
    quiet "$VENV/bin/pip" install --upgrade pip 'setuptools>=61' wheel
fi

# pyfuse3 built from its pinned sdist with the patches of third_party/pyfuse3 (the
# fallocate handler fs/ uses), before sbx: pip then finds `pyfuse3>=3.4` satisfied
# and keeps it. A no-op when the venv already has it (a stamp and an import check).
bash "$ROOT/scripts/build-pyfuse3.sh" "$VENV" | sed 's/^/setup: /'

# Build from a copy of the sources: an in-tree setuptools build would leave
# build/ and *.egg-info in the checkout.
src=$(mktemp -d /tmp/sbx-setup-src.XXXXXX)
trap 'rm -rf "$src"' EXIT
tar -C "$ROOT" -cf - \
    --exclude=./.git --exclude=./build --exclude=./dist --exclude='*.egg-info' \
    --exclude=__pycache__ --exclude=.pytest_cache --exclude=.ruff_cache \
    --exclude=./tests --exclude=./.venv . | tar -C "$src" -xf -

# Dependencies are resolved again only when pyproject.toml changed, with build
# isolation (a dependency built from source, pyfuse3 say, brings its own build
# requirements); the everyday reinstall of sbx alone skips it, to stay fast.
stamp=$VENV/.sbx-deps-stamp
want=$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
    say "installing sbx with its test extra into $VENV"
    quiet "$VENV/bin/pip" install "$src[test]"
    echo "$want" >"$stamp"
else
    quiet "$VENV/bin/pip" install --no-build-isolation --force-reinstall --no-deps "$src"
    say "reinstalled sbx from $ROOT into $VENV (dependencies unchanged)"
fi

if [[ $VENV == /opt/sbx/venv ]]; then
    ln -sfn "$VENV/bin/sbx" /usr/local/bin/sbx
    say "/usr/local/bin/sbx -> $VENV/bin/sbx"
fi

# --- /dev/fuse --------------------------------------------------------------
# Debian's udev rule makes it 0666; machines without udev leave it 0600, and
# then only root can mount a FUSE filesystem.
if [[ -c /dev/fuse && $(stat -c %a /dev/fuse) != 666 ]]; then
    chmod 0666 /dev/fuse
    say "chmod 0666 /dev/fuse"
fi

# --- users ------------------------------------------------------------------
touch /etc/subuid /etc/subgid
chmod 0644 /etc/subuid /etc/subgid

add_user() {  # NAME [useradd options...]
    local name=$1
    shift
    if ! id -u "$name" >/dev/null 2>&1; then
        # SUB_*_COUNT=0: shadow 4.13's useradd would otherwise pick a range
        # itself; the ranges are written below, explicitly.
        useradd -K SUB_UID_COUNT=0 -K SUB_GID_COUNT=0 "$@" "$name"
        say "created user $name (uid $(id -u "$name"))"
    fi
}

add_user "$TEST_USER" -m -s /bin/bash
add_user "$NOSUB_USER" -m -s /bin/bash

for file in /etc/subuid /etc/subgid; do
    if ! grep -q "^$TEST_USER:" "$file"; then
        echo "$TEST_USER:$SUB_RANGE" >>"$file"
        say "$file: added $TEST_USER:$SUB_RANGE"
    fi
    if grep -q "^$NOSUB_USER:" "$file"; then
        sed -i "/^$NOSUB_USER:/d" "$file"
        say "$file: removed the range of $NOSUB_USER"
    fi
done
say "users: $TEST_USER ($(grep "^$TEST_USER:" /etc/subuid | cut -d: -f2-3 | head -1)), $NOSUB_USER (no ranges)"
