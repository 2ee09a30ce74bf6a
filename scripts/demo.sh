#!/usr/bin/env bash
# The quick-start demo: install everything (scripts/setup.sh), then, as an
# unprivileged user, build a busybox rootfs and run a container from it.
# The user is the one who ran sudo, or the test user sbxtest when run as root.
set -euo pipefail

if [[ $EUID -ne 0 ]]; then
    exec sudo -- bash "$0" "$@"
fi

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

"$ROOT/scripts/setup.sh"

user=sbxtest
if [[ -n ${SUDO_USER:-} && $SUDO_USER != root ]]; then
    user=$SUDO_USER
fi
home=$(getent passwd "$user" | cut -d: -f6)
[[ -n $home && -d $home ]] || { echo "demo: $user has no home directory" >&2; exit 1; }
rootfs=$home/.cache/sbx-demo/rootfs

# A clean environment, as after a login: nothing of root's (XDG_RUNTIME_DIR
# above all) leaks into the user's sbx.
as_user() {
    (cd "$home" && runuser -u "$user" -- env -i \
        HOME="$home" USER="$user" LOGNAME="$user" TERM="${TERM:-dumb}" LANG=C.UTF-8 \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        "$@")
}

if [[ ! -x $rootfs/bin/busybox ]]; then
    # Fed on stdin: the user may not be able to read this checkout (say, under /root).
    as_user bash -s -- "$rootfs" <"$ROOT/scripts/mkrootfs-busybox.sh"
fi

if ! grep -q "^$user:" /etc/subuid; then
    echo "demo: $user has no range in /etc/subuid; sbx maps only their own id"
fi
echo "demo: as $user: sbx run --rm --rootfs $rootfs -- sh -c '...'"
as_user sbx run --rm --rootfs "$rootfs" -- \
    sh -c 'echo "hello from $(hostname)"; id; cat /proc/self/uid_map'
