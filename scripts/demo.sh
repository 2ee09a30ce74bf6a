#!/usr/bin/env bash
# The quick-start demo: install everything (scripts/setup.sh), then, as an
# unprivileged user, enter the bundled offline profile in a project folder and
# run a command in it.
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

# A clean environment, as after a login: nothing of root's (XDG_RUNTIME_DIR
# above all) leaks into the user's sbx.
as_user() {
    (cd "$home" && runuser -u "$user" -- env -i \
        HOME="$home" USER="$user" LOGNAME="$user" TERM="${TERM:-dumb}" LANG=C.UTF-8 \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        "$@")
}

if ! grep -q "^$user:" /etc/subuid; then
    echo "demo: $user has no range in /etc/subuid: the offline profile needs one (mmdebstrap --mode=unshare)" >&2
    exit 1
fi

# A project folder of the user's, entered with the bundled `debian-offline` profile:
# its image is built from Debian packages with mmdebstrap (no image registry; about a
# minute the first time, then cached), the folder is mounted where it is, and the
# command runs as the user, so what it writes stays theirs.
project=$home/sbx-demo
as_user mkdir -p "$project"
echo "demo: as $user, in $project: sbx run debian-offline -- sh -c '...'"
(cd "$project" && runuser -u "$user" -- env -i \
    HOME="$home" USER="$user" LOGNAME="$user" TERM="${TERM:-dumb}" LANG=C.UTF-8 \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    sbx run debian-offline -- sh -c \
    'echo "hello from $(. /etc/os-release; echo $PRETTY_NAME), $(python3 --version)"
     echo "inside: $(id -un) (uid $(id -u)) in $PWD"
     echo "written inside" > hello-from-sbx.txt')
ls -l "$project/hello-from-sbx.txt"
