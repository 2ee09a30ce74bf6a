#!/usr/bin/env bash
# Fetch Debian's kernel for the cgroup v2 test VM (tests/vm_rig.py) into a cache:
#   scripts/mkvm.sh [CACHE_DIR]          (default /var/cache/sbx-test/vm)
# CACHE_DIR gets vmlinuz, version, and modules/ with the few modules the VM loads
# (virtio, 9p, overlay, fuse and what they depend on). The kernel is never
# installed: apt-get download + dpkg-deb -x into a temporary folder, so /boot, the
# bootloader and /lib/modules of this machine stay as they are.
#
# x86_64 only (the VM is qemu-system-x86_64); elsewhere it says so and does nothing.
# Idempotent: a cache that holds a kernel is kept (delete the folder to refresh).
# Needs root (apt) and Debian's apt lists; runs `apt-get update` once if the
# download fails on stale lists.
set -euo pipefail

say() { printf 'mkvm: %s\n' "$*"; }

cache=${1:-/var/cache/sbx-test/vm}
if [[ $(uname -m) != x86_64 ]]; then
    say "machine is $(uname -m), the test VM is x86_64 only: no kernel fetched"
    exit 0
fi
if [[ -f $cache/vmlinuz && -f $cache/version && -d $cache/modules ]]; then
    say "kernel $(cat "$cache/version") already in $cache"
    exit 0
fi

# The metapackage names the current ABI's image package, e.g. linux-image-6.1.0-56-amd64.
image_pkg() {
    apt-cache depends linux-image-amd64 2>/dev/null |
        awk '$1 == "Depends:" && $2 ~ /^linux-image-/ {print $2; exit}'
}

tmp=$(mktemp -d /tmp/sbx-mkvm.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
log=$tmp/log
pkg=$(image_pkg)
if [[ -z $pkg ]] || ! (cd "$tmp" && apt-get download "$pkg" >"$log" 2>&1); then
    apt-get update >"$log" 2>&1 || { cat "$log" >&2; say "apt-get update failed"; exit 1; }
    pkg=$(image_pkg)
    [[ -n $pkg ]] || { say "apt-cache knows no linux-image-amd64"; exit 1; }
    (cd "$tmp" && apt-get download "$pkg" >"$log" 2>&1) ||
        { cat "$log" >&2; say "apt-get download $pkg failed"; exit 1; }
fi
deb=$(echo "$tmp"/*.deb)
dpkg-deb -x "$deb" "$tmp/x"

vmlinuz=$(echo "$tmp"/x/boot/vmlinuz-*)
[[ -f $vmlinuz ]] || { say "no boot/vmlinuz-* in $deb"; exit 1; }
version=${vmlinuz##*/vmlinuz-}
kdir=
for d in "$tmp/x/lib/modules/$version/kernel" "$tmp/x/usr/lib/modules/$version/kernel"; do
    [[ -d $d ]] && kdir=$d
done
[[ -n $kdir ]] || { say "no lib/modules/$version in $deb"; exit 1; }

# Build the cache aside and rename it into place, so that a half-made one never counts.
new=$cache.new.$$
rm -rf "$new"
mkdir -p "$new/modules"
for sub in drivers/virtio drivers/block/virtio_blk.ko net/9p fs/9p fs/netfs fs/fscache \
    fs/overlayfs fs/fuse; do
    [[ -e $kdir/$sub ]] || continue
    mkdir -p "$new/modules/$(dirname "$sub")"
    cp -a "$kdir/$sub" "$new/modules/$sub"
done
cp "$vmlinuz" "$new/vmlinuz"
[[ -f $tmp/x/boot/config-$version ]] && cp "$tmp/x/boot/config-$version" "$new/config"
echo "$version" >"$new/version"
chmod -R a+rX "$new"
rm -rf "$cache"
mkdir -p "$(dirname "$cache")"
mv "$new" "$cache"
say "kernel $version ($pkg) in $cache ($(du -sh "$cache" | cut -f1))"
