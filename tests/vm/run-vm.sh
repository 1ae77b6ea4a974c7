#!/usr/bin/env bash
# Boots a Debian cloud kernel under qemu TCG with a throw-away initramfs and runs a script in it.
#
# Usage: run-vm.sh KERNEL_VERSION GUEST_SCRIPT [FILE_OR_DIR...]
#   KERNEL_VERSION  a kernel in the cache, as printed by fetch-kernels.sh (e.g. 6.1.0-56-cloud-amd64)
#   GUEST_SCRIPT    run by busybox sh inside the guest (POSIX sh; bash exists but is not used), as root, cwd /root
#   FILE_OR_DIR     copied into the guest at the same absolute path, with the shared libraries
#                   ELF files need; compiled-in absolute paths keep working
#
# The guest console is streamed to stdout and to a log file. Exit status: the guest script's
# (reported by the guest's init on a "KTLS-VM-EXIT <rc> run=<nonce>" line), 124 when the VM
# timed out, 125 when the guest never reported (kernel panic, init died, qemu failed).
#
# In the guest: KTLS_VM=1, KTLS_EXPECT_OFFLOAD=1, KTLS_VM_KERNEL=<uname -r>, the tls module and the
# accelerated crypto modules loaded, lo up, openssl/curl/gnutls-cli/bash/busybox on PATH.
#
# Env:
#   KTLS_VM_TIMEOUT    seconds before the VM is killed (default 900)
#   KTLS_VM_LOG        console log file (default $KTLS_VM_CACHE/logs/<kernel>-<time>.log)
#   KTLS_VM_GUEST_ENV  newline-separated NAME=VALUE pairs exported to the guest script; GTEST_*
#                      variables of the caller are passed on as well
#   KTLS_VM_MEM, KTLS_VM_SMP   guest memory (MiB, default 2048) and vCPUs (default 2)
#   KTLS_VM_CACHE, KTLS_VM_MODULES, KTLS_VM_BASE_TOOLS   see build-initramfs.sh
#
# Never KVM: on these hosts /dev/kvm exists but guests hang in early boot; TCG with -cpu max still
# offers AES-NI/PCLMUL to the guest, so the accelerated crypto modules load.
set -euo pipefail
KTLS_VM_PROG=run-vm
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [[ $# -lt 2 || $1 == -h || $1 == --help ]]; then
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
fi
kver=$1
guest=$2
shift 2
timeout_s=${KTLS_VM_TIMEOUT:-900}
[[ $timeout_s =~ ^[0-9]+$ ]] || vm_die "KTLS_VM_TIMEOUT must be a number of seconds"
vm_require qemu-system-x86_64:qemu-system-x86 timeout:coreutils
kdir=$(vm_kernel_dir "$kver")
vmlinuz=$kdir/boot/vmlinuz-$kver
[[ -f $vmlinuz && -f $kdir/.complete ]] ||
  vm_die "kernel $kver not in $KTLS_VM_CACHE/kernels; run tests/vm/fetch-kernels.sh (cached: $(vm_cached_kernels | tr '\n' ' '))"
for f in "$@"; do [[ -e $f ]] || vm_die "$f does not exist"; done

mkdir -p "$KTLS_VM_CACHE/logs"
log=${KTLS_VM_LOG:-$KTLS_VM_CACHE/logs/$kver-$(date +%Y%m%d-%H%M%S)-$$.log}
mkdir -p "$(dirname "$log")"
: >"$log"
work=$(mktemp -d "${TMPDIR:-/tmp}/ktls-vm.XXXXXX")

# Every way out leaves a "KTLS-VM-RESULT" line in the log for run-suite.sh/selftest.sh; a failure
# before the guest could report (initramfs build, qemu missing) exits 125 like a guest that never
# reported. An interrupt kills the qemu we started (by its pid file) rather than orphaning it.
result_written=0
result() { # result RC BOOT TOTAL [NOTE]
  echo "KTLS-VM-RESULT kernel=$kver rc=$1 boot=$2 total=$3${4:+ note=$4}" >>"$log"
  result_written=1
}
# shellcheck disable=SC2317 # called from traps
kill_qemu() {
  [[ -s $work/qemu.pid ]] && kill "$(cat "$work/qemu.pid")" 2>/dev/null
  return 0
}
# shellcheck disable=SC2317 # called from traps
on_exit() {
  local rc=$?
  if ((result_written == 0)); then
    result 125 n/a n/a setup-failed
    vm_log "$kver: FAILED before the guest could run (exit $rc); log: $log"
    rc=125
  fi
  kill_qemu
  rm -rf "$work" || true
  exit "$rc"
}
trap on_exit EXIT
# shellcheck disable=SC2317 # called from traps
on_signal() {
  vm_log "$kver: interrupted; stopping the VM"
  kill_qemu
  # Let the console pipeline drain and finish before on_exit removes its files.
  [[ -n ${pipe_pid:-} ]] && wait "$pipe_pid" 2>/dev/null
  result 130 n/a n/a interrupted
  exit 130
}
trap on_signal INT TERM

elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
t_start=$EPOCHREALTIME
base=$("$KTLS_VM_DIR/build-initramfs.sh" base "$kver")

# Per-run data for the guest's init: the nonce for the exit marker and the environment.
nonce=$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')
mkdir -p "$work/extra"
printf '%s\n' "$nonce" >"$work/extra/nonce"
# %q may produce bash's $'...' quoting, which busybox sh understands too.
{
  while IFS= read -r kv; do
    [[ -z $kv ]] && continue
    [[ $kv =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || vm_die "KTLS_VM_GUEST_ENV: not NAME=VALUE: $kv"
    printf '%s=%q\n' "${kv%%=*}" "${kv#*=}"
  done <<<"${KTLS_VM_GUEST_ENV:-}"
  while IFS= read -r name; do printf '%s=%q\n' "$name" "${!name}"; done < <(compgen -e | grep '^GTEST_' || true)
} >"$work/extra/env"

KTLS_VM_BASE_MANIFEST=$base.manifest KTLS_VM_OVERLAY_EXTRA=$work/extra \
  "$KTLS_VM_DIR/build-initramfs.sh" overlay "$work/overlay.cpio.gz" "$guest" "$@"
cat "$base" "$work/overlay.cpio.gz" >"$work/initrd.cpio.gz"
t_built=$EPOCHREALTIME
vm_log "$kver: initramfs $(du -h "$base" | cut -f1) base + $(du -h "$work/overlay.cpio.gz" | cut -f1) overlay, built in $(elapsed "$t_start" "$t_built")s; log: $log"

# shellcheck disable=SC2054 # the commas are qemu's option syntax
qemu=(qemu-system-x86_64
  -accel tcg,thread=multi -cpu max -smp "${KTLS_VM_SMP:-2}" -m "${KTLS_VM_MEM:-2048}"
  -nographic -no-reboot -nic none -pidfile "$work/qemu.pid"
  -kernel "$vmlinuz" -initrd "$work/initrd.cpio.gz"
  -append "console=ttyS0 quiet panic=-1 ktls_epoch=$(date +%s)")

# Stream the console: strip the serial line's CRs and the firmware's terminal control sequences,
# copy it to stdout and the log, and note the host time at which init came up (the boot time we
# report). qemu's stdin is /dev/null so it never puts the caller's terminal into raw mode. The
# pipeline runs in the background so that the INT/TERM trap above can run while it is going.
{
  qrc=0 # (errexit is inherited here: catch the status rather than die on it)
  timeout -k 10 "$timeout_s" "${qemu[@]}" </dev/null 2>&1 || qrc=$?
  echo "$qrc" >"$work/qemu.rc"
} | sed -u -e 's/\r//g' -e 's/\x1b\[[0-9;?]*[A-Za-z]//g' -e 's/\x1bc/\n/g' -e 's/\x1b[78]//g' | {
  t_init=""
  while IFS= read -r line || [[ -n $line ]]; do
    printf '%s\n' "$line"
    printf '%s\n' "$line" >>"$log"
    if [[ -z $t_init && $line == *"ktls-vm: init started"* ]]; then
      t_init=$EPOCHREALTIME
      printf '%s\n' "$t_init" >"$work/t_init"
    fi
  done
} &
pipe_pid=$!
wait "$pipe_pid" || true
t_end=$EPOCHREALTIME
qemu_rc=$(cat "$work/qemu.rc" 2>/dev/null || echo unknown)

boot="n/a"
[[ -f $work/t_init ]] && boot="$(elapsed "$t_built" "$(cat "$work/t_init")")s"
total="$(elapsed "$t_start" "$t_end")s"

marker=$(grep -aE "^KTLS-VM-EXIT [0-9]+ run=$nonce\$" "$log" | tail -n1 || true)
if [[ -n $marker ]]; then
  rc=${marker#KTLS-VM-EXIT }
  rc=${rc%% *}
  vm_log "$kver: guest exit status $rc (boot to init $boot, total $total)"
  result "$rc" "$boot" "$total"
elif [[ $qemu_rc == 124 || $qemu_rc == 137 ]]; then
  rc=124
  vm_log "$kver: TIMEOUT: the VM ran longer than ${timeout_s}s and was killed (raise KTLS_VM_TIMEOUT?); log: $log"
  result "$rc" "$boot" "$total" timeout
else
  rc=125
  vm_log "$kver: FAILED: the guest never reported an exit status (qemu status $qemu_rc; kernel panic or init failure?); log: $log"
  result "$rc" "$boot" "$total" no-exit-marker
fi
exit "$rc"
