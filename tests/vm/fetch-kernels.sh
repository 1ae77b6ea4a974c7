#!/usr/bin/env bash
# Downloads the Debian cloud kernels the VM suite boots and unpacks them into the cache:
#   $KTLS_VM_CACHE/kernels/<kernel version>/boot/vmlinuz-<ver>
#   $KTLS_VM_CACHE/kernels/<kernel version>/lib/modules/<ver>/
# Nothing is installed on the host: `apt-get download` + `dpkg -x` only. Idempotent: a kernel whose
# directory is complete is not fetched again.
#
# Usage: fetch-kernels.sh            prints the kernel versions, one per line, on stdout
# Env:   KTLS_VM_CACHE               cache root (default ~/.cache/ktls-sidecar/vm)
#        KTLS_VM_KERNEL_PACKAGES     metapackages to resolve (default: the 6.1 and 6.12 cloud kernels)
set -euo pipefail
KTLS_VM_PROG=fetch-kernels
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
vm_require apt-cache:apt apt-get:apt dpkg:dpkg

# Prints the versioned image package a metapackage depends on (e.g. linux-image-6.1.0-56-cloud-amd64).
resolve_metapackage() {
  apt-cache depends "$1" 2>/dev/null |
    awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }'
}

# Querying apt-cache first keeps us off the network when the package lists are already there.
declare -a versioned=()
updated=0
for meta in $KTLS_VM_KERNEL_PACKAGES; do
  pkg=$(resolve_metapackage "$meta")
  if [[ -z $pkg && $updated == 0 ]]; then
    vm_log "apt-cache does not know $meta; running apt-get update"
    SUDO=""
    [[ $(id -u) -ne 0 ]] && SUDO=sudo
    $SUDO apt-get update -qq >&2 || vm_die "apt-get update failed"
    updated=1
    pkg=$(resolve_metapackage "$meta")
  fi
  [[ -n $pkg ]] || vm_die "cannot resolve $meta to a versioned kernel package (is bookworm-security in the apt sources?)"
  versioned+=("$pkg")
done

mkdir -p "$KTLS_VM_CACHE/kernels"
for pkg in "${versioned[@]}"; do
  kver=${pkg#linux-image-}
  kdir=$(vm_kernel_dir "$kver")
  if [[ -f $kdir/.complete ]]; then
    vm_log "$kver: cached ($(cat "$kdir/.complete"))"
    printf '%s\n' "$kver"
    continue
  fi
  tmp=$(mktemp -d "$KTLS_VM_CACHE/kernels/.fetch.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  # apt-get download as root drops privileges to _apt, which must be able to write here.
  chmod 755 "$tmp"
  vm_log "$kver: downloading $pkg"
  (cd "$tmp" && apt-get download -q "$pkg" >&2 2> >(grep -v 'unsandboxed as root' >&2)) ||
    vm_die "apt-get download $pkg failed"
  deb=$(find "$tmp" -maxdepth 1 -name "${pkg}_*.deb" | head -n1)
  [[ -n $deb ]] || vm_die "apt-get download $pkg produced no .deb"
  dpkg -x "$deb" "$tmp/root"
  # Debian ships vmlinuz in /boot and modules in /lib/modules (or /usr/lib/modules after the
  # merged-/usr move); normalise to one layout.
  [[ -f $tmp/root/boot/vmlinuz-$kver ]] || vm_die "$deb has no boot/vmlinuz-$kver"
  moddir=$tmp/root/lib/modules/$kver
  [[ -d $moddir ]] || moddir=$tmp/root/usr/lib/modules/$kver
  [[ -d $moddir ]] || vm_die "$deb has no lib/modules/$kver"
  [[ -n $(find "$moddir" -path '*/net/tls/tls.ko*' -print -quit) ]] ||
    vm_die "$kver has no net/tls/tls.ko module: this kernel cannot do kTLS"
  mkdir -p "$tmp/out/boot" "$tmp/out/lib/modules"
  mv "$tmp/root/boot/vmlinuz-$kver" "$tmp/out/boot/"
  [[ -f $tmp/root/boot/config-$kver ]] && mv "$tmp/root/boot/config-$kver" "$tmp/out/boot/"
  mv "$moddir" "$tmp/out/lib/modules/"
  dpkg-deb -f "$deb" Package Version | tr '\n' ' ' >"$tmp/out/.complete"
  rm -rf "$kdir"
  mv "$tmp/out" "$kdir"
  rm -rf "$tmp"
  trap - EXIT
  vm_log "$kver: unpacked into $kdir"
  printf '%s\n' "$kver"
done
