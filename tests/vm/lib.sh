# Shared helpers for the kTLS VM suite (sourced, not executed).
#
# Why a VM at all: the build/CI hosts run a kernel without CONFIG_TLS, so real kTLS can only be
# exercised in a guest. We boot Debian's cloud kernels under qemu TCG (KVM guests hang on these
# hosts) from an initramfs made of two concatenated gzip'd cpio archives:
#   BASE    (cached per kernel + host toolset): busybox, the kernel's modules, openssl/curl and
#           their shared libraries, /init.
#   OVERLAY (built per run, small): the binaries under test with their libraries, at the same
#           absolute paths as on the host (so compiled-in paths such as KTLS_AGENT_BIN work), and
#           the guest script.
# Everything downloaded or generated lives in $KTLS_VM_CACHE, never in the repository.

# shellcheck shell=bash

# shellcheck disable=SC2034 # used by the scripts that source this file
KTLS_VM_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
KTLS_VM_CACHE=${KTLS_VM_CACHE:-$HOME/.cache/ktls-sidecar/vm}
# The metapackages track the newest ABI of each Debian kernel series; fetch-kernels.sh resolves
# them to versioned packages. Override with a space-separated list to test other series.
KTLS_VM_KERNEL_PACKAGES=${KTLS_VM_KERNEL_PACKAGES:-linux-image-cloud-amd64 linux-image-6.12-cloud-amd64}

vm_log() { printf '%s: %s\n' "${KTLS_VM_PROG:-vm}" "$*" >&2; }
vm_die() {
  vm_log "error: $*"
  exit 1
}

# Fails with a hint naming the Debian package when a host tool is missing.
vm_require() {
  local tool pkg
  for tool in "$@"; do
    pkg=${tool#*:}
    tool=${tool%%:*}
    command -v "$tool" >/dev/null 2>&1 ||
      vm_die "'$tool' not found; install Debian package '$pkg' (run .ci/install-deps.sh test)"
  done
}

vm_kernel_dir() { printf '%s/kernels/%s\n' "$KTLS_VM_CACHE" "$1"; }

# Host kernel tools live in /sbin, which is not on every user's PATH.
vm_depmod() {
  local d
  for d in "$(command -v depmod 2>/dev/null)" /usr/sbin/depmod /sbin/depmod; do
    [[ -n $d && -x $d ]] && {
      printf '%s\n' "$d"
      return 0
    }
  done
  vm_die "depmod not found; install Debian package 'kmod'"
}

# Kernel versions whose vmlinuz + modules are in the cache, one per line (sorted).
vm_cached_kernels() {
  local d
  for d in "$KTLS_VM_CACHE"/kernels/*/; do
    [[ -f $d/.complete ]] && basename "$d"
  done | sort -V
}

vm_is_elf() { [[ -f $1 && $(head -c4 "$1" 2>/dev/null | od -An -c | tr -d ' ') == '177ELF' ]]; }

# Prints the shared objects (and the ELF interpreter) an executable or library needs, as the
# host's dynamic loader resolves them. Static binaries print nothing. A library that the loader
# cannot find is an error: the guest would fail in a much less obvious way.
vm_ldd_deps() {
  local f=$1 out
  vm_is_elf "$f" || return 0
  # ldd exits 1 for static executables ("not a dynamic executable" / "statically linked").
  if ! out=$(LC_ALL=C ldd "$f" 2>&1); then
    [[ $out == *"not a dynamic executable"* || $out == *"statically linked"* ]] && return 0
    vm_die "ldd $f failed: $out"
  fi
  if grep -q 'not found' <<<"$out"; then
    vm_die "$f: shared libraries missing on the host:"$'\n'"$(grep 'not found' <<<"$out")"
  fi
  # Lines: "libfoo.so.1 => /path (0x...)", "/lib64/ld-linux-x86-64.so.2 (0x...)",
  # "linux-vdso.so.1 (0x...)" (kernel-provided, no file).
  awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$out"
}

# vm_stage ROOT PATH: copies host PATH into ROOT at the same absolute path. Every symlink met on
# the way (a merged-/usr /lib -> usr/lib, libz.so.1 -> libz.so.1.2.13, /lib64/ld-linux... ->
# /lib/x86_64-linux-gnu/...) is recreated in ROOT and its target staged too, so every spelling
# of the path that works on the host works in the guest. All writes go to ROOT + the canonical
# host path, so we never follow a symlink inside ROOT (an absolute one would point at the host).
# Directories are copied recursively.
vm_stage() {
  local root=$1 path=$2 real prefix="" comp link linkdir target
  [[ $path == /* ]] || path=$(pwd)/$path
  real=$(realpath -e "$path") || vm_die "cannot stage $path: it does not exist"
  if [[ -d $real ]]; then
    mkdir -p "$root$real"
    cp -a "$real/." "$root$real/"
  elif [[ ! -e $root$real ]]; then
    mkdir -p "$root$(dirname "$real")"
    cp -p "$real" "$root$real"
  fi
  local -a comps
  IFS=/ read -ra comps <<<"${path#/}"
  for comp in "${comps[@]}"; do
    [[ -z $comp ]] && continue
    prefix+="/$comp"
    [[ -L $prefix ]] || continue
    linkdir=$(realpath -e "$(dirname "$prefix")")
    [[ -L $root$linkdir/$comp ]] && continue # already staged (also stops symlink loops)
    link=$(readlink "$prefix")
    mkdir -p "$root$linkdir"
    ln -s "$link" "$root$linkdir/$comp"
    if [[ $link == /* ]]; then target=$link; else target=$linkdir/$link; fi
    # Stage the target directory's symlink structure (not its contents) or the target file.
    if [[ -d $target ]]; then vm_stage_dir "$root" "$target"; else vm_stage "$root" "$target"; fi
  done
}

# vm_stage_dir ROOT DIR: creates DIR in ROOT (empty, same symlink structure), without contents.
vm_stage_dir() {
  local root=$1 dir=$2 real prefix="" comp link linkdir target
  real=$(realpath -e "$dir") || vm_die "cannot stage $dir: it does not exist"
  mkdir -p "$root$real"
  local -a comps
  IFS=/ read -ra comps <<<"${dir#/}"
  for comp in "${comps[@]}"; do
    [[ -z $comp ]] && continue
    prefix+="/$comp"
    [[ -L $prefix ]] || continue
    linkdir=$(realpath -e "$(dirname "$prefix")")
    [[ -L $root$linkdir/$comp ]] && continue
    link=$(readlink "$prefix")
    mkdir -p "$root$linkdir"
    ln -s "$link" "$root$linkdir/$comp"
    if [[ $link == /* ]]; then target=$link; else target=$linkdir/$link; fi
    vm_stage_dir "$root" "$target"
  done
}

# vm_stage_with_libs ROOT PATH...: stages each path and, for every ELF file among them (also
# inside directories), the shared libraries it needs.
vm_stage_with_libs() {
  local root=$1 p f
  shift
  local -A seen=()
  for p in "$@"; do
    vm_stage "$root" "$p"
    while IFS= read -r -d '' f; do
      vm_is_elf "$f" || continue
      while IFS= read -r lib; do
        [[ -n ${seen[$lib]:-} ]] && continue
        seen[$lib]=1
        vm_stage "$root" "$lib"
      done < <(vm_ldd_deps "$f")
    done < <(find -L "$p" -type f -print0)
  done
}

# vm_run_child CMD...: runs CMD and returns its status, passing INT/TERM on to it as TERM.
# (Bash runs traps only between foreground commands, so a foreground run-vm.sh would not hear
# about a cancelled CI job until its VM finished; run-vm.sh's own TERM trap stops qemu.)
vm_run_child() {
  "$@" &
  local child=$! rc=0
  # shellcheck disable=SC2064 # expand $child now
  trap "kill -TERM $child 2>/dev/null; wait $child; exit 130" INT TERM
  wait "$child" || rc=$?
  trap - INT TERM
  return "$rc"
}

# vm_mkcpio DIR OUT [GZIP_LEVEL]: packs DIR as a newc cpio, gzip'd, owned by root (the guest
# runs as root; host uids mean nothing there).
vm_mkcpio() {
  local dir=$1 out=$2 level=${3:-6}
  (cd "$dir" && find . -mindepth 1 -print0 | LC_ALL=C sort -z |
    cpio --quiet --null -o -H newc -R 0:0) | gzip "-$level" -n >"$out.tmp"
  mv -f "$out.tmp" "$out"
}
