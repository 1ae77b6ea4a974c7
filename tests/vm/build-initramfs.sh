#!/usr/bin/env bash
# Builds the two halves of the VM's initramfs (see lib.sh for why there are two).
#
# Usage:
#   build-initramfs.sh base KERNEL_VERSION
#       Prints the path of the cached BASE cpio.gz for that kernel, building it when missing or
#       stale. Contents: static busybox with its applet links, the kernel's modules (decompressed,
#       depmod'ed), openssl/curl/gnutls-cli/bash with the dynamic loader and their libraries at the
#       host's paths, a minimal /etc.
#   build-initramfs.sh overlay OUT GUEST_SCRIPT [FILE_OR_DIR...]
#       Writes the per-run OVERLAY cpio.gz to OUT: /init, the guest script as /ktls-vm/guest.sh,
#       and each FILE_OR_DIR at its host absolute path with the shared libraries it needs (those
#       already in the base are left out). Guest environment: see run-vm.sh.
#
# Env:
#   KTLS_VM_CACHE        cache root (default ~/.cache/ktls-sidecar/vm)
#   KTLS_VM_MODULES      "default" (modules for kTLS and crypto, plus what they depend on) or
#                        "all" (the whole modules tree: ~90 MB more for 6.1, slower boot) or a
#                        space-separated list of directories under lib/modules/<ver>/kernel/.
#   KTLS_VM_BASE_TOOLS   host programs to put in the base (default: openssl curl gnutls-cli bash
#                        python3; ones missing on the host are skipped with a warning). python3
#                        comes with its standard library, pruned (see install_python).
set -euo pipefail
KTLS_VM_PROG=build-initramfs
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

KTLS_VM_MODULES=${KTLS_VM_MODULES:-default}
KTLS_VM_BASE_TOOLS=${KTLS_VM_BASE_TOOLS:-openssl curl gnutls-cli bash python3}
# What kTLS needs: tls.ko, the AEAD templates the kernel requests on demand (gcm, ctr, ghash,
# chacha20poly1305) and the x86 accelerated implementations; depmod adds their dependencies.
DEFAULT_MODULE_DIRS="net/tls crypto arch/x86/crypto lib/crypto"
# Host configuration the base tools read at startup. openssl looks for /usr/lib/ssl/openssl.cnf
# (a symlink to /etc/ssl/openssl.cnf); no CA certificates: tests bring their own.
BASE_CONFIG_FILES="/usr/lib/ssl /etc/ssl/openssl.cnf"

# Parts of python3's standard library no test imports (test suites, GUI, packaging and dev tools,
# and the extension modules that would pull in more host libraries: sqlite3, curses, dbm,
# readline): left out of the base. Interpreter + library add about 7 MB (compressed) to the base;
# the integration tests run the Python ctypes example (client/examples/python/serve_https.py).
PYTHON_PRUNE="test idlelib tkinter turtledemo ensurepip lib2to3 pydoc_data distutils unittest
  venv config-3.* sqlite3 curses dbm lib-dynload/_sqlite3.* lib-dynload/_curses*
  lib-dynload/_dbm.* lib-dynload/_gdbm.* lib-dynload/readline.* lib-dynload/_test*
  lib-dynload/xxlimited*"

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
}

# --- base --------------------------------------------------------------------------------------

# Host files the base copies (tools, their libraries, config), one per line: their size and
# mtime go into the cache key so that a host upgrade (say, a new libssl3) rebuilds the base.
base_host_inputs() {
  local t p
  printf '%s\n' /bin/busybox
  for t in $KTLS_VM_BASE_TOOLS; do
    p=$(base_tool_path "$t") || continue
    printf '%s\n' "$p"
    vm_ldd_deps "$p"
    [[ $t == python3 ]] && python_stdlib "$p" | sed 's,$,/os.py,'
  done
  for p in $BASE_CONFIG_FILES; do [[ -e $p ]] && printf '%s\n' "$p"; done
  return 0
}

base_cache_key() {
  local kver=$1
  {
    cat "$KTLS_VM_DIR/lib.sh" "$KTLS_VM_DIR/build-initramfs.sh"
    cat "$(vm_kernel_dir "$kver")/.complete"
    printf 'modules=%s tools=%s\n' "$KTLS_VM_MODULES" "$KTLS_VM_BASE_TOOLS"
    base_host_inputs | sort -u | xargs -r stat -L -c '%n %s %Y'
  } | sha256sum | cut -c1-16
}

# Where a base tool comes from. python3 is Debian's /usr/bin/python3 when present: a python3 found
# first on PATH may be a pyenv or virtualenv shim (a script that would not run in the guest).
base_tool_path() {
  if [[ $1 == python3 && -x /usr/bin/python3 ]]; then
    printf '%s\n' /usr/bin/python3
    return 0
  fi
  command -v "$1" 2>/dev/null
}

python_stdlib() { "$1" -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])'; }

# Stages python3's standard library (the interpreter itself is staged as a tool), minus
# PYTHON_PRUNE and bytecode caches, with the libraries its extension modules need (libffi for
# ctypes ...). Pruning comes first so that extensions nobody imports cannot demand host libraries.
install_python() {
  local root=$1 py=$2 stdlib real d f lib
  stdlib=$(python_stdlib "$py") || vm_die "$py cannot report its standard library path"
  real=$(realpath -e "$stdlib")
  vm_stage "$root" "$stdlib"
  for d in $PYTHON_PRUNE; do
    # shellcheck disable=SC2086 # config-3.* is a glob
    (cd "$root$real" && rm -rf $d)
  done
  find "$root$real" -name __pycache__ -prune -exec rm -rf {} +
  # sitecustomize.py is a symlink into /etc/pythonX.Y on Debian.
  [[ -d /etc/$(basename "$real") ]] && vm_stage "$root" "/etc/$(basename "$real")"
  while IFS= read -r -d '' f; do
    vm_is_elf "$f" || continue
    while IFS= read -r lib; do vm_stage "$root" "$lib"; done < <(vm_ldd_deps "${f#"$root"}")
  done < <(find "$root$real" -type f -name '*.so' -print0)
  vm_log "python3: standard library $(du -sh "$root$real" | cut -f1) after pruning"
}

# Copies the selected modules of KVER into ROOT/lib/modules/KVER, decompressed, and runs depmod.
#
# Why decompress on the host: 6.12's modules are .ko.xz. The kernel itself could take them
# (CONFIG_MODULE_DECOMPRESS) but only through finit_module(MODULE_INIT_COMPRESSED_FILE), which
# busybox's modprobe does not use, and busybox has no zstd at all for kernels that use .ko.zst.
# Plain .ko files work with every loader, and the selected set is small.
install_modules() {
  local root=$1 kver=$2 src moddir depmod rel m
  src=$(vm_kernel_dir "$kver")/lib/modules/$kver
  depmod=$(vm_depmod)
  # modules.dep of the full tree (compressed names) tells us what the selected modules need.
  [[ -f $src/modules.dep ]] || "$depmod" -b "$(vm_kernel_dir "$kver")" "$kver"
  vm_stage_dir "$root" /lib
  moddir=$root$(realpath -e /lib)/modules/$kver
  mkdir -p "$moddir"
  cp -p "$src"/modules.builtin "$src"/modules.builtin.modinfo "$src"/modules.order "$moddir/"

  local -a wanted=()
  if [[ $KTLS_VM_MODULES == all ]]; then
    mapfile -t wanted < <(cd "$src" && find kernel -name '*.ko*' | sort)
  else
    local dirs=$KTLS_VM_MODULES
    [[ $dirs == default ]] && dirs=$DEFAULT_MODULE_DIRS
    local -A sel=()
    for rel in $dirs; do
      [[ -d $src/kernel/$rel ]] || {
        vm_log "warning: $kver has no kernel/$rel"
        continue
      }
      while IFS= read -r m; do sel[$m]=1; done < <(cd "$src" && find "kernel/$rel" -name '*.ko*')
    done
    # Dependency closure from modules.dep ("kernel/a.ko.xz: kernel/b.ko.xz kernel/c.ko.xz").
    while IFS= read -r m; do sel[$m]=1; done < <(
      awk -v list="$(printf '%s\n' "${!sel[@]}")" '
        BEGIN { n = split(list, l, "\n"); for (i = 1; i <= n; i++) want[l[i]] = 1 }
        { sub(":", "", $1); if ($1 in want) for (i = 2; i <= NF; i++) print $i }' "$src/modules.dep")
    mapfile -t wanted < <(printf '%s\n' "${!sel[@]}" | sort)
  fi

  for m in "${wanted[@]}"; do
    mkdir -p "$moddir/$(dirname "$m")"
    case $m in
      *.ko) cp -p "$src/$m" "$moddir/$m" ;;
      *.ko.xz) xz -dc "$src/$m" >"$moddir/${m%.xz}" ;;
      *.ko.zst) zstd -qdc "$src/$m" >"$moddir/${m%.zst}" ;;
      *.ko.gz) gzip -dc "$src/$m" >"$moddir/${m%.gz}" ;;
      *) vm_die "unknown module compression: $m" ;;
    esac
  done
  # The host's depmod writes modules.dep/.alias/.symbols, which busybox modprobe reads; the kernel
  # asks for "crypto-gcm(aes)" etc., resolved through modules.alias.
  "$depmod" -b "$root" "$kver"
  vm_log "$kver: ${#wanted[@]} modules ($KTLS_VM_MODULES selection)"
}

# Busybox applets as symlinks at busybox's default locations, mapped through the host's
# merged-/usr links so that they land next to (and never on top of) the host tools we copy.
install_busybox() {
  local root=$1 applet dir real
  vm_stage "$root" /bin/busybox
  while IFS= read -r applet; do
    [[ $applet == */* ]] || continue # "linuxrc" at the top level: not wanted
    dir=/$(dirname "$applet")
    if [[ -d $dir ]]; then
      vm_stage_dir "$root" "$dir"
      real=$(realpath -e "$dir")
    else
      real=$dir
      mkdir -p "$root$real"
    fi
    [[ -e $root$real/$(basename "$applet") ]] || ln -s /bin/busybox "$root$real/$(basename "$applet")"
  done < <(/bin/busybox --list-full)
}

install_etc() {
  local root=$1
  mkdir -p "$root/etc/ssl/certs" "$root/root" "$root/tmp" "$root/proc" "$root/sys" "$root/dev" \
    "$root/run" "$root/var/tmp"
  chmod 1777 "$root/tmp" "$root/var/tmp"
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' \
    >"$root/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
  printf '127.0.0.1 localhost ktls-vm\n::1 localhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
  printf 'passwd: files\ngroup: files\nhosts: files\n' >"$root/etc/nsswitch.conf"
  echo ktls-vm >"$root/etc/hostname"
  # The kernel opens /dev/console for init before any devtmpfs is mounted; without this node the
  # guest's early output is lost (init re-opens the console after mounting devtmpfs anyway, so a
  # non-root build that cannot mknod still works).
  mknod -m 600 "$root/dev/console" c 5 1 2>/dev/null ||
    vm_log "note: cannot mknod /dev/console (not root); init reopens the console itself"
}

build_base() {
  local kver=$1 key out dir root t p
  [[ -f $(vm_kernel_dir "$kver")/.complete ]] ||
    vm_die "kernel $kver is not in the cache; run tests/vm/fetch-kernels.sh (cached: $(vm_cached_kernels | tr '\n' ' '))"
  vm_require cpio:cpio gzip:gzip xz:xz-utils zstd:zstd ldd:libc-bin flock:util-linux
  if ! [[ -x /bin/busybox ]] || ! /bin/busybox --list-full >/dev/null 2>&1; then
    vm_die "/bin/busybox missing; install Debian package 'busybox-static'"
  fi
  /bin/busybox --list | grep -qx modprobe || vm_die "/bin/busybox has no modprobe applet (need busybox-static)"
  ldd /bin/busybox >/dev/null 2>&1 && vm_die "/bin/busybox is dynamically linked; install 'busybox-static'"

  dir=$KTLS_VM_CACHE/initramfs
  mkdir -p "$dir"
  key=$(base_cache_key "$kver")
  local modsel=$KTLS_VM_MODULES
  [[ $modsel == default || $modsel == all ]] || modsel=custom
  out=$dir/base-$kver-$modsel-$key.cpio.gz
  # Serialise builders of the same kernel's base (two suites started at once).
  exec 9>"$dir/.lock-$kver"
  flock 9
  if [[ -f $out && -f $out.manifest ]]; then
    printf '%s\n' "$out"
    return 0
  fi
  vm_log "$kver: building base initramfs (cache key $key)"
  root=$(mktemp -d "$dir/.base-$kver.XXXXXX")
  trap 'rm -rf "$root"' EXIT

  install_modules "$root" "$kver"
  local -a tools=()
  for t in $KTLS_VM_BASE_TOOLS; do
    if p=$(base_tool_path "$t"); then tools+=("$p"); else vm_log "warning: $t not on the host; not in the base"; fi
  done
  ((${#tools[@]})) && vm_stage_with_libs "$root" "${tools[@]}"
  for p in "${tools[@]}"; do [[ $(basename "$p") == python3* ]] && install_python "$root" "$p"; done
  for p in $BASE_CONFIG_FILES; do [[ -e $p ]] && vm_stage "$root" "$p"; done
  install_busybox "$root"
  install_etc "$root"

  # The overlay builder leaves out regular files the base already has (same path, size, mtime).
  (cd "$root" && find . -type f -printf '/%P\t%s\t%T@\n' | LC_ALL=C sort) >"$out.manifest.tmp"
  vm_mkcpio "$root" "$out" 6
  mv -f "$out.manifest.tmp" "$out.manifest"
  # Stale bases of this kernel and module selection (older keys) are only disk space now.
  find "$dir" -maxdepth 1 -name "base-$kver-$modsel-*.cpio.gz*" ! -name "base-$kver-$modsel-$key.*" -delete
  rm -rf "$root"
  trap - EXIT
  vm_log "$kver: base initramfs $(du -h "$out" | cut -f1), $(wc -l <"$out.manifest") files"
  printf '%s\n' "$out"
}

# --- overlay -----------------------------------------------------------------------------------

build_overlay() {
  local out=$1 guest=$2 root manifest f
  shift 2
  [[ -f $guest ]] || vm_die "guest script $guest not found"
  manifest=${KTLS_VM_BASE_MANIFEST:-}
  root=$(mktemp -d "${TMPDIR:-/tmp}/ktls-vm-overlay.XXXXXX")
  trap 'rm -rf "$root"' EXIT

  ((${#@})) && vm_stage_with_libs "$root" "$@"
  if [[ -n $manifest && -f $manifest ]]; then
    # Drop libraries (and anything else) the base already carries: same path, size and mtime
    # (both copies were made with cp -p from the same host file).
    (cd "$root" && find . -type f -printf '/%P\t%s\t%T@\n') |
      awk -F'\t' 'NR == FNR { have[$0] = 1; next } ($0 in have) { print $1 }' "$manifest" - |
      while IFS= read -r f; do rm -f "$root$f"; done
  fi
  mkdir -p "$root/ktls-vm"
  install -m 755 "$KTLS_VM_DIR/guest-init.sh" "$root/init"
  install -m 755 "$guest" "$root/ktls-vm/guest.sh"
  # Everything run-vm.sh wants the guest to know (nonce, env) arrives as files under /ktls-vm.
  if [[ -n ${KTLS_VM_OVERLAY_EXTRA:-} ]]; then cp -a "$KTLS_VM_OVERLAY_EXTRA/." "$root/ktls-vm/"; fi
  # gzip -1: the overlay is rebuilt every run, and the kernel unpacks it in well under a second.
  vm_mkcpio "$root" "$out" 1
  rm -rf "$root"
  trap - EXIT
}

case ${1:-} in
  base)
    [[ $# == 2 ]] || usage
    build_base "$2"
    ;;
  overlay)
    [[ $# -ge 3 ]] || usage
    shift
    build_overlay "$@"
    ;;
  *) usage ;;
esac
