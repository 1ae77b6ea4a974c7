#!/bin/sh
# Guest half of run-suite.sh (busybox sh, run by the VM's init with KTLS_VM=1 and
# KTLS_EXPECT_OFFLOAD=1 exported, the tls and crypto modules loaded, lo up).
#
# Steps, each between "KTLS-SUITE-BEGIN <step>" and "KTLS-SUITE-END <step> rc=<rc>" lines that
# run-suite.sh parses (together with gtest's own summary lines inside them):
#   probe        ktls-agent --probe_only: the agent's view of this kernel (module, ULP, ciphers)
#   integration  ktls_integration_tests: the real agent + demo app; must see kTLS offload
#   unit         ktls_unit_tests: unit/component tests, now on a kernel that has kTLS
# A binary that is absent is reported as "KTLS-SUITE-MISSING <step> <path>".
# Then /proc/net/tls_stat and how much it moved. Exit status: 0 only if every step passed.
#
# Env (from run-suite.sh): KTLS_BUILD_DIR (required; the host's build directory, the binaries are
# at the same paths here), KTLS_VM_STEP_TIMEOUT (seconds per step, default 600).
set -u
build=${KTLS_BUILD_DIR:?KTLS_BUILD_DIR not set}
step_timeout=${KTLS_VM_STEP_TIMEOUT:-600}
status=0

stat_get() { awk -v k="$1" '$1 == k { print $2 }' /proc/net/tls_stat 2>/dev/null; }

# run_step NAME BINARY [ARGS...]
run_step() {
  name=$1 bin=$2
  shift 2
  if [ ! -x "$bin" ]; then
    echo "KTLS-SUITE-MISSING $name $bin"
    return 0
  fi
  echo "KTLS-SUITE-BEGIN $name"
  # ctest runs gtest binaries from their build directory; do the same.
  (cd "$(dirname "$bin")" && timeout "$step_timeout" "$bin" "$@")
  rc=$?
  [ $rc -eq 143 ] && echo "ktls-vm: $name killed after ${step_timeout}s (KTLS_VM_STEP_TIMEOUT)"
  echo "KTLS-SUITE-END $name rc=$rc"
  [ $rc -eq 0 ] || status=1
}

# gtest 1.12 supports --gtest_brief=1: print only failures and the summary, which keeps the
# serial console (slow under TCG) short. No colour codes in the log.
gtest_flags="--gtest_brief=1 --gtest_color=no"

tx0=$(stat_get TlsTxSw) rx0=$(stat_get TlsRxSw)
# The probe must find every version x cipher x direction working on these kernels.
run_step probe "$build/agent/ktls-agent" --probe_only --probe_require_all
# shellcheck disable=SC2086 # gtest_flags is a list of words
run_step integration "$build/tests/ktls_integration_tests" $gtest_flags
# shellcheck disable=SC2086
run_step unit "$build/tests/ktls_unit_tests" $gtest_flags

echo "--- /proc/net/tls_stat after the suite"
cat /proc/net/tls_stat
echo "ktls-vm: tls_stat delta TlsTxSw +$(($(stat_get TlsTxSw) - tx0)) TlsRxSw +$(($(stat_get TlsRxSw) - rx0))"
exit $status
