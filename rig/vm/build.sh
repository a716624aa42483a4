#!/usr/bin/env bash
# rig/vm/build.sh BIN_DIR CACHE_DIR: the boot files of a VM endpoint, from Debian's
# packages (linux-image-amd64, busybox-static, nftables, coreutils) and our build
# (parry-agent). Prints the directory that holds them:
#
#   vmlinuz     the Debian kernel, as installed in /boot
#   initrd.img  an uncompressed newc cpio: busybox, our init (rig/vm/rootfs), the
#               kernel modules the agent needs in load order, parry-agent (stripped)
#               and nft with the shared libraries they link, /bin/sleep
#   inputs      what the files were made from (path and SHA-256 of each input)
#
# Cached by content: the directory is CACHE_DIR/<SHA-256 of every input>, so a second
# build with the same inputs only hashes them (about a second). The cache keeps the
# three newest builds (about 33 MB each): every rebuilt parry-agent makes a new one.
# Nothing is downloaded.
# Per-VM files (configuration, enrollment token, IOC files) are not in here: the rig
# appends them as a second cpio archive (the kernel unpacks both, in order).
set -euo pipefail

bin_dir=${1:?usage: build.sh BIN_DIR CACHE_DIR}
cache=${2:?usage: build.sh BIN_DIR CACHE_DIR}
here=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)

die() { printf 'vm build: error: %s\n' "$*" >&2; exit 1; }

kernel=$(find /boot -maxdepth 1 -name 'vmlinuz-*-amd64' | sort -V | tail -n 1)
[ -n "$kernel" ] || die "no Debian kernel in /boot (apt-get install linux-image-amd64)"
kver=${kernel#/boot/vmlinuz-}
[ -d "/lib/modules/$kver" ] || die "no modules for $kver in /lib/modules"
busybox=$(command -v busybox) || die "busybox is not installed (busybox-static)"
linkage=$(ldd "$busybox" 2>&1 || true) # ldd fails on a static program, and says so
grep -q 'not a dynamic' <<<"$linkage" ||
  die "$busybox is not static (apt-get install busybox-static)"
agent=$bin_dir/parry-agent
[ -x "$agent" ] || die "$agent not found: build it first"
nft=$(command -v nft) || die "nft is not installed (nftables)"
command -v cpio >/dev/null || die "cpio is not installed"

# The modules isolation and the VM's devices need, each with what it depends on, in
# the order modprobe would load them (virtio-pci first: the other virtio drivers sit
# on it). fanotify and IPv6 are built into Debian's kernel.
modules=(virtio_pci virtio_net virtio_blk virtio_rng ext4 nf_tables nft_ct)
mod_paths=()
for m in "${modules[@]}"; do
  deps=$(modprobe -S "$kver" --show-depends "$m") ||
    die "modprobe knows no module $m for $kver"
  while read -r verb path _; do
    [ "$verb" = insmod ] || continue
    case " ${mod_paths[*]:-} " in *" $path "*) ;; *) mod_paths+=("$path") ;; esac
  done <<<"$deps"
done
[ "${#mod_paths[@]}" -gt 0 ] || die "modprobe found none of: ${modules[*]}"

# Every ELF file that goes in, and the shared libraries they load (as ldd resolves them
# on this machine: the VM runs the same Debian).
elves=("$agent" "$nft" /bin/sleep)
libs=()
for e in "${elves[@]}"; do
  while read -r lib; do
    case " ${libs[*]:-} " in *" $lib "*) ;; *) libs+=("$lib") ;; esac
  done < <(ldd "$e" | awk '/=> \// {print $3} /^\t\/lib/ {print $1}')
done

inputs=$(
  for f in "$kernel" "$busybox" "$nft" /bin/sleep "$agent" "${mod_paths[@]}" "${libs[@]}" \
    "$here/build.sh" $(find "$here/rootfs" -type f | sort); do
    printf '%s  %s\n' "$(sha256sum <"$f" | cut -d' ' -f1)" "$f"
  done
)
key=$(printf '%s\n' "$inputs" | sha256sum | cut -d' ' -f1)
out=$cache/$key
if [ -f "$out/initrd.img" ] && [ -f "$out/vmlinuz" ]; then
  touch "$out" # the newest use: kept longest
  echo "$out"
  exit 0
fi

mkdir -p "$cache"
stage=$(mktemp -d "$cache/.stage.XXXXXX")
trap 'rm -rf "$stage"' EXIT
root=$stage/root
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc/parry,lib/modules,proc,sys,dev,tmp,run} \
  "$root"/{var/lib/parry,srv/files,srv/www,root}
cp "$busybox" "$root/bin/busybox"
ln -s busybox "$root/bin/sh"
ln -s bin/busybox "$root/init" # the kernel runs /init: busybox's init (etc/inittab)
cp -a "$here/rootfs/." "$root/"
: >"$root/lib/modules/order"
for p in "${mod_paths[@]}"; do
  cp "$p" "$root/lib/modules/"
  basename "$p" >>"$root/lib/modules/order"
done
strip -o "$root/usr/bin/parry-agent" "$agent"
cp "$nft" "$root/usr/sbin/nft"
cp /bin/sleep "$root/usr/bin/sleep"
for l in "${libs[@]}"; do
  mkdir -p "$root$(dirname "$l")"
  cp -L "$l" "$root$l"
done
echo "parry rig VM endpoint" >"$root/srv/www/index.html"
(cd "$root" && find . -print0 | sort -z | cpio --null --create --format=newc --quiet \
  --owner=0:0) >"$stage/initrd.img"
cp "$kernel" "$stage/vmlinuz"
printf '%s\n' "$inputs" >"$stage/inputs"
rm -rf "$root"
mkdir -p "$out"
mv "$stage/initrd.img" "$stage/vmlinuz" "$stage/inputs" "$out/"
# The bound: all but the three most recently made or used builds go, and what a killed
# build left staged an hour ago.
find "$cache" -mindepth 1 -maxdepth 1 -type d ! -name '.stage.*' -printf '%T@\t%p\0' |
  sort -zrn | tail -zn +4 | cut -zf2- | xargs -0r rm -rf
find "$cache" -mindepth 1 -maxdepth 1 -type d -name '.stage.*' -mmin +60 -print0 |
  xargs -0r rm -rf
echo "$out"
