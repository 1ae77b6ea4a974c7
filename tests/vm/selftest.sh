#!/usr/bin/env bash
# Self-test of the VM recipe: boots each cached Debian cloud kernel and proves, with stock
# openssl only, that kTLS works in the guest (selftest-guest.sh: TLS 1.3 and 1.2, AES-GCM and
# ChaCha20-Poly1305, kTLS sendfile, /proc/net/tls_stat deltas, a no-kTLS control). Needs nothing
# from ktls-sidecar's build, so it also tells "the VM is broken" apart from "our code is broken".
#
# Usage: selftest.sh [KERNEL_VERSION...]      (default: the kernels fetch-kernels.sh provides)
# Env:   KTLS_VM_TIMEOUT (default here 300 s per VM), KTLS_VM_LOG_DIR (default
#        $KTLS_VM_CACHE/logs/selftest-<time>), and everything run-vm.sh reads.
# Exit:  0 when every kernel passed.
set -euo pipefail
KTLS_VM_PROG=selftest
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [[ ${1:-} == -h || ${1:-} == --help ]]; then
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
fi
if (($#)); then
  kernels=("$@")
else
  mapfile -t kernels < <("$KTLS_VM_DIR/fetch-kernels.sh")
fi
((${#kernels[@]})) || vm_die "no kernels to test"
export KTLS_VM_TIMEOUT=${KTLS_VM_TIMEOUT:-300}
logdir=${KTLS_VM_LOG_DIR:-$KTLS_VM_CACHE/logs/selftest-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$logdir"

declare -a summary=()
failed=0
for kver in "${kernels[@]}"; do
  log=$logdir/$kver.log
  vm_log "=== $kver"
  set +e
  KTLS_VM_LOG=$log vm_run_child "$KTLS_VM_DIR/run-vm.sh" "$kver" "$KTLS_VM_DIR/selftest-guest.sh"
  rc=$?
  set -e
  result=$(grep -a '^KTLS-VM-RESULT ' "$log" | tail -n1 || true)
  boot=$(sed -n 's/.* boot=\([^ ]*\).*/\1/p' <<<"$result")
  total=$(sed -n 's/.* total=\([^ ]*\).*/\1/p' <<<"$result")
  counts=$(grep -a '^selftest: [0-9]* passed' "$log" | tail -n1 | sed 's/^selftest: //' || true)
  if ((rc == 0)); then
    verdict=PASS
  else
    verdict="FAIL (rc $rc)"
    failed=1
  fi
  summary+=("selftest $kver: $verdict; ${counts:-no result}; boot to init ${boot:-?}, total ${total:-?}")
  grep -a '^selftest: FAIL' "$log" | sed 's/^/    /' >>"$logdir/failures.txt" || true
done

echo
printf '%s\n' "${summary[@]}"
[[ -s $logdir/failures.txt ]] && {
  echo "failed cases:"
  cat "$logdir/failures.txt"
}
echo "logs: $logdir"
exit "$failed"
