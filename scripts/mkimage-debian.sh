#!/usr/bin/env bash
# Build a real Debian bookworm image with python3 as an OCI image layout:
#   scripts/mkimage-debian.sh [OUT_DIR]
#
# Layers (built by tests/image_rig.py from two mmdebstrap tars, reproducibly):
#   1  `mmdebstrap --variant=minbase bookworm`                     (~80 MB)
#   2  what `--include=python3` adds or changes on top of that, as
#      a real diff: new and changed files (dpkg's status, ld.so.cache, ...),
#      whole hard-link groups, whiteouts for anything it removed   (~100 MB)
#   3  a few config files (etc/sbx-image-release, etc/profile.d/sbx.sh,
#      usr/local/bin/sbx-hello) and a whiteout of etc/motd
# with gzip layers and the config Cmd ["python3"]. /dev entries and the host's
# etc/resolv.conf and etc/hostname (mmdebstrap copies them in) are left out.
#
# Why two mmdebstrap runs rather than one rootfs split by path: layer 2 is then
# what `RUN apt-get install python3` would give, files that overwrite layer 1's
# included, which is what a union filesystem has to get right. The two runs go in
# parallel; each fetches its packages from the mirror (about 20 s here).
#
# How mmdebstrap runs: --mode=unshare, as an unprivileged user with a subuid and
# subgid range (the design's "real Debian made with mmdebstrap --mode=unshare";
# no root needed). Run as root, the script runs mmdebstrap as $BUILD_USER
# (default sbxtest, which scripts/setup.sh makes with a range); as root with no
# such user it falls back to --mode=root. Run as another user, it runs mmdebstrap
# as that user (who then needs a range).
#
# Reproducible: SOURCE_DATE_EPOCH=1700000000, so the same mirror content gives
# the same digests. The result is cached in $SBX_TEST_CACHE/debian-python3/KEY
# (default /var/cache/sbx-test as root, else ~/.cache/sbx-test), KEY being a hash
# of this script and image_rig.py's LAYOUT_FORMAT_VERSION; it is rebuilt only
# when missing. With OUT_DIR (new or empty) the layout is copied there. Progress
# goes to stderr; stdout gets the build facts as JSON (build seconds, sizes,
# digests, whether it came from the cache).
#
# Needs: mmdebstrap, uidmap (newuidmap/newgidmap), gzip, python3, and network
# access to the Debian mirror ($MIRROR, default http://deb.debian.org/debian)
# for the first build.
set -euo pipefail

die() { printf 'mkimage-debian: %s\n' "$*" >&2; exit 1; }
say() { printf 'mkimage-debian: %s\n' "$*" >&2; }

[[ $# -le 1 ]] || die "usage: mkimage-debian.sh [OUT_DIR]"
out=${1:-}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SELF=$ROOT/scripts/mkimage-debian.sh
RIG=$ROOT/tests/image_rig.py
SUITE=bookworm
MIRROR=${MIRROR:-http://deb.debian.org/debian}
PYTHON=${PYTHON:-python3}
BUILD_USER=${BUILD_USER:-sbxtest}
export SOURCE_DATE_EPOCH=1700000000

command -v mmdebstrap >/dev/null || die "mmdebstrap is not installed: apt-get install mmdebstrap uidmap (scripts/setup.sh)"
[[ -f $RIG ]] || die "$RIG is missing"

if [[ $EUID -eq 0 ]]; then
    cache_root=${SBX_TEST_CACHE:-/var/cache/sbx-test}
else
    cache_root=${SBX_TEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sbx-test}
fi
cache_root=$cache_root/debian-python3
key=$( { cat "$SELF"; "$PYTHON" "$RIG" format-version; } | sha256sum | cut -c1-16)
cache=$cache_root/$key

umask 022
mkdir -p "$cache_root"
chmod 0755 "$cache_root" "$(dirname "$cache_root")" 2>/dev/null || true
exec 9>"$cache_root/.lock"
flock 9  # one build at a time; a second caller waits and then finds the cache

if [[ -f $cache/layout/index.json && -f $cache/build.json ]]; then
    say "cached: $cache"
    cached=true
else
    cached=false
    rm -rf "$cache"
    # Older keys: this script or the layout format changed since; drop them.
    find "$cache_root" -mindepth 1 -maxdepth 1 -type d -exec rm -rf {} +

    if [[ $EUID -ne 0 ]]; then
        mode=unshare run_as=()
        user=$(id -un)
    elif id -u "$BUILD_USER" >/dev/null 2>&1 && grep -q "^$BUILD_USER:" /etc/subuid \
        && grep -q "^$BUILD_USER:" /etc/subgid; then
        mode=unshare run_as=(runuser -u "$BUILD_USER" --)
        user=$BUILD_USER
    else
        mode=root run_as=()
        user=root
        say "no user $BUILD_USER with subuid/subgid ranges: using --mode=root"
    fi

    work=$(mktemp -d /tmp/sbx-mkimage-debian.XXXXXX)
    trap 'rm -rf "$work"' EXIT
    chmod 0755 "$work"
    [[ $user == root || $EUID -ne 0 ]] || chown "$user:" "$work"

    mmdebstrap_run() {  # NAME [mmdebstrap options...]
        local name=$1
        shift
        (cd "$work" && "${run_as[@]}" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="$work" \
            TMPDIR="$work" LANG=C.UTF-8 SOURCE_DATE_EPOCH="$SOURCE_DATE_EPOCH" \
            mmdebstrap --mode="$mode" --variant=minbase --format=tar "$@" \
            "$SUITE" "$work/$name.tar" "$MIRROR") >"$work/$name.log" 2>&1
    }

    say "building $SUITE minbase and minbase+python3 with mmdebstrap --mode=$mode as $user ..."
    t0=$(date +%s.%N)
    rc_base=0 rc_full=0
    mmdebstrap_run base & pid_base=$!
    mmdebstrap_run full --include=python3 & pid_full=$!
    wait "$pid_base" || rc_base=$?
    wait "$pid_full" || rc_full=$?
    for name in base full; do
        rc_var=rc_$name
        if ((${!rc_var})); then
            tail -n 30 "$work/$name.log" >&2
            die "mmdebstrap ($name) failed with exit ${!rc_var}; log above"
        fi
    done
    t1=$(date +%s.%N)

    "$PYTHON" - "$work/info.json" <<PY
import json, subprocess, sys
version = subprocess.run(["mmdebstrap", "--version"], capture_output=True, text=True).stdout.strip()
json.dump({
    "key": "$key", "suite": "$SUITE", "mirror": "$MIRROR", "mode": "$mode", "user": "$user",
    "mmdebstrap": version, "source_date_epoch": $SOURCE_DATE_EPOCH,
    "mmdebstrap_seconds": round($t1 - $t0, 1),
    "tar_bytes": {"base": $(stat -c %s "$work/base.tar"), "full": $(stat -c %s "$work/full.tar")},
}, open(sys.argv[1], "w"))
PY
    mkdir -p "$cache"
    "$PYTHON" "$RIG" debian-layout --base "$work/base.tar" --full "$work/full.tar" \
        --out "$cache/layout.tmp" --info "$work/info.json" >/dev/null
    t2=$(date +%s.%N)
    "$PYTHON" - "$work/info.json" "$t0" "$t2" <<'PY'
import datetime, json, sys
info = json.load(open(sys.argv[1]))
info["build_seconds"] = round(float(sys.argv[3]) - float(sys.argv[2]), 1)
info["built_at"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
json.dump(info, open(sys.argv[1], "w"), indent=2)
PY
    chmod -R a+rX "$cache"
    mv "$cache/layout.tmp" "$cache/layout"
    install -m 0644 "$work/info.json" "$cache/build.json"
    say "built $cache in $("$PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))["build_seconds"])' "$cache/build.json") s"
fi

copy_seconds=null
if [[ -n $out ]]; then
    if [[ -e $out ]] && [[ -n $(ls -A "$out") ]]; then
        die "$out exists and is not empty"
    fi
    t0=$(date +%s.%N)
    mkdir -p "$out"
    cp -a --reflink=auto "$cache/layout/." "$out/"
    copy_seconds=$("$PYTHON" -c "print(round($(date +%s.%N) - $t0, 2))")
    say "layout in $out"
fi

"$PYTHON" - "$cache/build.json" "$cached" "$copy_seconds" "$cache/layout" "$out" <<'PY'
import json, sys
info = json.load(open(sys.argv[1]))
info.update(cached=sys.argv[2] == "true", copy_seconds=json.loads(sys.argv[3]),
            cache_layout=sys.argv[4], layout=sys.argv[5] or sys.argv[4])
print(json.dumps(info, indent=2))
PY
