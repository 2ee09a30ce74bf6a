#!/usr/bin/env bash
# Build a minimal root filesystem from Debian's static busybox (busybox-static):
#   scripts/mkrootfs-busybox.sh DIR
# DIR gets bin/busybox, one symlink per applet in bin/, the usual directories and
# an etc/passwd and etc/group with a user "tester" (1000) in several groups.
#
# Any user can run it; the files are owned by whoever runs it, which is what a
# rootless container wants (they become root's inside it). The script reads
# nothing but /bin/busybox, so it can also be fed on stdin
# (`bash -s -- DIR < mkrootfs-busybox.sh`) by a user who cannot read the checkout.
set -euo pipefail

BUSYBOX=${BUSYBOX:-/bin/busybox}

die() { printf 'mkrootfs-busybox: %s\n' "$*" >&2; exit 1; }

[[ $# -eq 1 ]] || die "usage: mkrootfs-busybox.sh DIR"
dir=$1

[[ -x $BUSYBOX ]] || die "$BUSYBOX is missing: install Debian's busybox-static (apt-get install busybox-static)"
# A dynamic busybox would need the host's libc inside the rootfs. ldd (libc-bin,
# always installed) says "not a dynamic executable" for a static one.
if ldd "$BUSYBOX" >/dev/null 2>&1; then
    die "$BUSYBOX is dynamically linked: install busybox-static instead of busybox"
fi

umask 022
mkdir -p "$dir"
cd "$dir"

mkdir -p bin sbin etc proc sys dev tmp root home/tester run var/tmp usr/bin
chmod 1777 tmp var/tmp
chmod 0700 root
# Built without a user namespace, home/tester cannot be chowned to 1000 here;
# world-writable lets `-u tester` use its home all the same.
chmod 0777 home/tester

cp -f "$BUSYBOX" bin/busybox
chmod 0755 bin/busybox
count=0
while read -r applet; do
    [[ -n $applet && $applet != busybox ]] || continue
    ln -sfn busybox "bin/$applet"
    count=$((count + 1))
done < <(bin/busybox --list)

cat >etc/passwd <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
tester:x:1000:1000:tester:/home/tester:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD

cat >etc/group <<'GROUP'
root:x:0:
daemon:x:1:
tty:x:5:
wheel:x:10:tester
audio:x:29:tester
tester:x:1000:
extra:x:2000:tester
nogroup:x:65534:
GROUP

chmod 0644 etc/passwd etc/group
printf 'mkrootfs-busybox: %s: busybox and %d applets\n' "$dir" "$count"
